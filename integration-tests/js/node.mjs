// Runs scenario.js with the SDK's Node build (`main`: index.cjs, cookies kept by fetch-cookie). The test
// network comes from the environment (integration-tests/tests/js_sdk.rs sets it); exits 1 at the first
// failed step, with the step's error.
import { eventsFromStream, scenario } from "./scenario.js";

// The SDK wraps `globalThis.fetch` with its cookie jar when it loads. A recorder put under it first keeps
// the last value the server set for each cookie name, so the scenario can send a session's cookie by hand
// (Node may set any Cookie header; a browser may not), through the fetch without the jar.
const rawFetch = globalThis.fetch;
const cookies = new Map();
globalThis.fetch = async (input, init) => {
  const response = await rawFetch(input, init);
  for (const line of response.headers.getSetCookie()) {
    const pair = line.split(";")[0];
    const equals = pair.indexOf("=");
    if (equals > 0) cookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
  }
  return response;
};
const sdk = await import("@synonymdev/pubky");

const env = {
  pkarrRelay: required("PUBKY_PKARR_RELAY"),
  httpRelay: required("PUBKY_HTTP_RELAY"),
  homeserver: required("PUBKY_HOMESERVER"),
  serverUrl: required("PUBKY_HOMESERVER_URL"),
  tokenHomeserver: process.env.PUBKY_TOKEN_HOMESERVER,
  signupToken: process.env.PUBKY_SIGNUP_TOKENS?.split(",")[0],
  crossSite: false,
};

const io = {
  log: (line) => console.log(line),
  cookie: (name) => cookies.get(name),
  rawFetch,
  liveEvents: async (url) => {
    const response = await fetch(url);
    if (response.status !== 200) throw new Error(`GET ${url}: ${response.status} ${await response.text()}`);
    return eventsFromStream(response.body);
  },
};

const started = Date.now();
try {
  const passed = await scenario(sdk, env, io);
  console.log(`node: ${passed.length} steps passed in ${Date.now() - started} ms`);
  process.exit(0);
} catch (error) {
  console.log(`node: ${error.message}`);
  process.exit(1);
}

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}
