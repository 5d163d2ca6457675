// Runs scenario.js in headless Chromium (Debian's, through puppeteer-core: no browser download) on a
// test page served from loopback, in two fresh cookie jars of one browser:
//   same-site   page http://localhost:P1, server http://localhost:P2 (ports do not make another site),
//   cross-site  page http://127.0.0.1:P1 (another site) with third-party cookies blocked (this
//               Chromium's default, set explicitly): only the server's partitioned localhost cookie works.
// Two controls run in each case: an unpartitioned cookie set by http://localhost:P1 (the probe) comes back
// only to the same-site page, and a page of a third site (http://127.0.0.2:P3) in the same browser cannot
// write with the session cookie. Screenshots go to $SCREENSHOT_DIR/js-sdk-<label>-<case>.png. A failed or
// hung case prints the page's console, every request it made and those still pending; exits 1 if any case
// failed.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import puppeteer from "puppeteer-core";

const here = dirname(fileURLToPath(import.meta.url));
const sdkDir = join(here, "node_modules", "@synonymdev", "pubky");
const label = process.env.PUBKY_LABEL || "test";
const screenshots = required("SCREENSHOT_DIR");
const tokens = (process.env.PUBKY_SIGNUP_TOKENS || "").split(",").filter(Boolean);
const network = {
  pkarrRelay: required("PUBKY_PKARR_RELAY"),
  httpRelay: required("PUBKY_HTTP_RELAY"),
  homeserver: required("PUBKY_HOMESERVER"),
  serverUrl: required("PUBKY_HOMESERVER_URL"),
  tokenHomeserver: process.env.PUBKY_TOKEN_HOMESERVER,
};

const CASE_TIMEOUT_MS = 75_000;

const files = {
  "/": ["text/html; charset=utf-8", join(here, "page.html")],
  "/scenario.js": ["text/javascript", join(here, "scenario.js")],
  "/pubky.js": ["text/javascript", join(sdkDir, "index.js")],
  "/blank": ["text/html; charset=utf-8", Buffer.from("<!doctype html><title>a third site</title>")],
};
// The probe: a cookie without `Partitioned` (otherwise as the server sets its session cookie on localhost),
// and an echo of the cookies that came back; both answer credentialed requests of any origin.
const probe = {
  "/probe/set": () => [{ "set-cookie": "probe=1; Path=/; SameSite=None; Secure" }, "set"],
  "/probe/echo": (request) => [{}, request.headers.cookie || ""],
};
const serve = (request, response) => {
  const path = new URL(request.url, "http://page").pathname;
  if (probe[path]) {
    const [headers, body] = probe[path](request);
    response.writeHead(200, {
      ...headers,
      "access-control-allow-origin": request.headers.origin || "*",
      "access-control-allow-credentials": "true",
      "cache-control": "no-store",
    });
    response.end(body);
    return;
  }
  const file = files[path];
  if (!file) {
    response.writeHead(404).end("not found");
    return;
  }
  response.writeHead(200, { "content-type": file[0], "cache-control": "no-store" });
  response.end(typeof file[1] === "string" ? readFileSync(file[1]) : file[1]);
};
const pages = createServer(serve);
await new Promise((resolve) => pages.listen(0, "127.0.0.1", resolve));
const port = pages.address().port;
// A third site: another loopback address is another site for a browser.
const thirdSite = createServer(serve);
await new Promise((resolve) => thirdSite.listen(0, "127.0.0.2", resolve));
const thirdSiteOrigin = `http://127.0.0.2:${thirdSite.address().port}`;

const profile = mkdtempSync(join(tmpdir(), "homestead-chromium-"));
const started = Date.now();
const browser = await puppeteer.launch({
  executablePath: required("TEST_CHROMIUM_BIN"),
  headless: true,
  userDataDir: profile,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,900",
  ],
});
console.log(`browser: ${await browser.version()} started in ${Date.now() - started} ms`);

const cases = [
  { name: "same-site", origin: `http://localhost:${port}`, crossSite: false, token: tokens[0] },
  { name: "cross-site", origin: `http://127.0.0.1:${port}`, crossSite: true, token: tokens[1] },
];
let failures = 0;
try {
  for (const each of cases) {
    failures += (await run(each)) ? 0 : 1;
  }
} finally {
  await browser.close();
  pages.close();
  thirdSite.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`browser: ${cases.length - failures} of ${cases.length} cases passed in ${Date.now() - started} ms`);
process.exit(failures ? 1 : 0);

/** Runs the scenario on one page in a fresh cookie jar; whether it passed. */
async function run(each) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const consoleLines = [];
  const requests = [];
  const pending = new Set();
  page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));
  page.on("request", (request) => pending.add(request));
  page.on("requestfinished", (request) => {
    pending.delete(request);
    requests.push(`${request.method()} ${request.url()} -> ${request.response()?.status()}`);
  });
  page.on("requestfailed", (request) => {
    pending.delete(request);
    requests.push(`${request.method()} ${request.url()} -> failed: ${request.failure()?.errorText}`);
  });
  if (each.crossSite) await blockThirdPartyCookies(page);
  // A page of a third site in the same browser, sending the PUT with whatever cookies the browser allows.
  await page.exposeFunction("__fromOtherSite", async (url, user) => {
    const other = await context.newPage();
    try {
      await blockThirdPartyCookies(other);
      await other.goto(`${thirdSiteOrigin}/blank`);
      return await other.evaluate(
        async (url, user) =>
          (await fetch(url, { method: "PUT", body: "x", credentials: "include", headers: { "pubky-host": user } }))
            .status,
        url,
        user,
      );
    } finally {
      await other.close();
    }
  });
  const env = {
    ...network,
    probeUrl: `http://localhost:${port}`,
    signupToken: each.token,
    tokenHomeserver: each.token ? network.tokenHomeserver : undefined,
    crossSite: each.crossSite,
  };
  const started = Date.now();
  let result;
  try {
    await page.setViewport({ width: 1000, height: 900 });
    await page.goto(`${each.origin}/#${encodeURIComponent(JSON.stringify(env))}`);
    // Two cases must fit in the test's 180 s for a node script, with room to print what a hung one did.
    await page.waitForFunction(() => window.__result, { timeout: CASE_TIMEOUT_MS, polling: 100 });
    result = await page.evaluate(() => window.__result);
  } catch (error) {
    result = { ok: false, error: `the page did not finish: ${error.message}` };
  }
  const shot = join(screenshots, `js-sdk-${label}-${each.name}.png`);
  await page.screenshot({ path: shot, fullPage: true }).catch((error) => consoleLines.push(`screenshot: ${error}`));
  const elapsed = Date.now() - started;
  if (result.ok) {
    console.log(`browser ${each.name} (${each.origin}): ${result.passed.length} steps passed in ${elapsed} ms`);
    for (const line of result.passed) console.log(`  ${line}`);
  } else {
    console.log(`browser ${each.name} (${each.origin}) FAILED after ${elapsed} ms: ${result.error}`);
    console.log(`--- console of the page:\n${consoleLines.join("\n")}`);
    console.log(`--- requests of the page:\n${requests.join("\n")}`);
    console.log(`--- requests still pending:\n${[...pending].map((r) => `${r.method()} ${r.url()}`).join("\n")}`);
  }
  console.log(`  screenshot: ${shot}`);
  await context.close();
  return result.ok;
}

/** Third-party cookies blocked (this Chromium's default, set explicitly so the test does not depend on it). */
async function blockThirdPartyCookies(page) {
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  await cdp.send("Network.setCookieControls", {
    enableThirdPartyCookieRestriction: true,
    disableThirdPartyCookieMetadata: true,
    disableThirdPartyCookieHeuristics: true,
  });
}

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}
