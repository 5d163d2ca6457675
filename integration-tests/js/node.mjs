// Runs scenario.js with the SDK's Node build (`main`: index.cjs, cookies kept by fetch-cookie). The test
// network comes from the environment (integration-tests/tests/js_sdk.rs sets it); exits 1 at the first
// failed step, with the step's error.
import * as sdk from "@synonymdev/pubky";

import { eventsFromStream, scenario } from "./scenario.js";

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
