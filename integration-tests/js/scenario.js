// What a web app does with the official JS SDK against a homeserver, step by step, each step checked. The
// same module runs in Node (node.mjs) and in a browser page (page.html); the runner passes the SDK module,
// the addresses of the test network (`env`) and a way to follow a live event stream (`io.liveEvents`).
//
// env: { pkarrRelay, httpRelay, homeserver, serverUrl, tokenHomeserver?, signupToken?, crossSite }
//   crossSite: whether the page is on another site than the server (what it may read differs).
// io: { log, liveEvents } and, where the runner can:
//   cookie(name), rawFetch   Node: the last value the server set for a cookie, and a fetch without the jar
//   cookieProbe()            browser: whether an unpartitioned cookie of the server's site comes back
//   fromOtherSite(url, user) browser: the status of a credentialed PUT from a page of a third site

const APP_DIR = "/pub/js.example/";
const APP_CAPS = "/pub/js.example.app/:rw";

/** Runs the scenario; resolves with the list of passed steps, rejects at the first failed one. */
export async function scenario(sdk, env, io) {
  const passed = [];
  const step = async (name, body) => {
    const started = Date.now();
    try {
      await body();
    } catch (error) {
      const why = error && error.stack ? `${error.name}: ${error.message}\n${error.stack}` : String(error);
      throw new Error(`step "${name}" failed: ${why}`);
    }
    const line = `ok - ${name} (${Date.now() - started} ms)`;
    passed.push(line);
    io.log(line);
  };

  const newFacade = () =>
    sdk.Pubky.withClient(new sdk.Client({ pkarr: { relays: [env.pkarrRelay], requestTimeout: 3000 } }));
  const pubky = newFacade();
  const homeserver = sdk.PublicKey.from(env.homeserver);
  const keypair = sdk.Keypair.random();
  const user = keypair.publicKey.z32();
  const signer = pubky.signer(keypair);
  let session;

  await step("sign-up", async () => {
    session = await signer.signup(homeserver, null);
    equal(session.info.publicKey.z32(), user, "session user");
    equal(JSON.stringify(session.info.capabilities), JSON.stringify(["/:rw"]), "root capabilities");
  });

  const live = await io.liveEvents(`${env.serverUrl}/events-stream?user=${user}&live=true`);
  const files = {
    json: `${APP_DIR}data.json`,
    text: `${APP_DIR}notes/hello.txt`,
    bytes: `${APP_DIR}blob.bin`,
  };
  // Keys in sorted order: the SDK stores JSON through serde_json, which sorts them.
  const value = { hello: "world", list: [1, 2, 3], n: 1 };
  const text = "Grüße aus dem Browser ✓";
  const bytes = new Uint8Array(256).map((_, i) => 255 - i);

  await step("JSON file: write and read back", async () => {
    await session.storage.putJson(files.json, value);
    equal(JSON.stringify(await session.storage.getJson(files.json)), JSON.stringify(value), "JSON");
  });
  await step("text file: write and read back", async () => {
    await session.storage.putText(files.text, text);
    equal(await session.storage.getText(files.text), text, "text");
  });
  await step("binary file: write and read back", async () => {
    await session.storage.putBytes(files.bytes, bytes);
    equal(hex(await session.storage.getBytes(files.bytes)), hex(bytes), "bytes");
  });
  let etag;
  await step("stats: size, ETag and Last-Modified", async () => {
    const stats = await session.storage.stats(files.bytes);
    equal(stats.contentLength, bytes.length, "contentLength");
    truthy(typeof stats.etag === "string" && stats.etag.length > 2, `an ETag, got ${JSON.stringify(stats)}`);
    truthy(Math.abs(stats.lastModifiedMs - Date.now()) < 120_000, `lastModifiedMs ${stats.lastModifiedMs}`);
    etag = stats.etag;
    equal(await session.storage.exists(files.json), true, "exists");
    equal(await session.storage.exists(`${APP_DIR}missing`), false, "a missing file");
    equal(await session.storage.stats(`${APP_DIR}missing`), undefined, "stats of a missing file");
  });
  await step("listings: deep, shallow, limit and cursor", async () => {
    const base = `pubky://${user}${APP_DIR}`;
    const deep = await session.storage.list(APP_DIR);
    equal(JSON.stringify(deep), JSON.stringify([`${base}blob.bin`, `${base}data.json`, `${base}notes/hello.txt`]), "deep");
    const shallow = await session.storage.list(APP_DIR, null, false, null, true);
    equal(JSON.stringify(shallow), JSON.stringify([`${base}blob.bin`, `${base}data.json`, `${base}notes/`]), "shallow");
    const first = await session.storage.list(APP_DIR, null, false, 1);
    equal(JSON.stringify(first), JSON.stringify([`${base}blob.bin`]), "limit 1");
    const next = await session.storage.list(APP_DIR, first[0], false, 1);
    equal(JSON.stringify(next), JSON.stringify([`${base}data.json`]), "after the cursor");
    const reversed = await session.storage.list(APP_DIR, null, true, 1);
    equal(JSON.stringify(reversed), JSON.stringify([`${base}notes/hello.txt`]), "reverse");
  });
  await step("public reads by anyone", async () => {
    const reader = newFacade().publicStorage;
    const at = (path) => `pubky${user}${path}`;
    equal(JSON.stringify(await reader.getJson(at(files.json))), JSON.stringify(value), "JSON");
    equal(await reader.getText(at(files.text)), text, "text");
    equal(hex(await reader.getBytes(at(files.bytes))), hex(bytes), "bytes");
    equal((await reader.stats(at(files.bytes))).etag, etag, "the same ETag");
    equal((await reader.list(at(APP_DIR), null, false, null, true)).length, 3, "listing");
    await refused(reader.getText(at(`${APP_DIR}missing`)), 404);
  });
  await step("events: the feed and the live stream", async () => {
    const feed = await (await fetch(`${env.serverUrl}/events/?limit=1000`)).text();
    for (const path of Object.values(files)) {
      truthy(feed.includes(`PUT pubky://${user}${path}\n`), `${path} in the feed:\n${feed}`);
    }
    for (const path of Object.values(files)) {
      await live.waitFor((event) => event.type === "PUT" && event.data.startsWith(`pubky://${user}${path}\n`));
    }
    await session.storage.delete(files.bytes);
    await live.waitFor((event) => event.type === "DEL" && event.data.startsWith(`pubky://${user}${files.bytes}\n`));
    live.close();
  });
  await step("private data: only for the owner's page", async () => {
    const secret = "/priv/js.example/secret.txt";
    await session.storage.putText(secret, "mine");
    if (env.crossSite) {
      // A cookie sent for another site's page does not count for private reads (README, "Private data").
      await refused(session.storage.getText(secret), 401);
    } else {
      equal(await session.storage.getText(secret), "mine", "private text");
    }
    // Without the cookie: the listener by its IP address, for which neither Node's jar nor a browser holds
    // one.
    const anonymous = await fetch(`${env.serverUrl.replace("//localhost:", "//127.0.0.1:")}${secret}`, {
      headers: { "pubky-host": user },
    });
    equal(anonymous.status, 401, "an anonymous private read");
  });
  await step("session restore from its export", async () => {
    const exported = session.export();
    const restored = await newFacade().restoreSession(exported);
    equal(restored.info.publicKey.z32(), user, "restored user");
    await restored.storage.putText(`${APP_DIR}restored.txt`, "again");
    equal(await restored.storage.getText(`${APP_DIR}restored.txt`), "again", "written after restore");
  });
  await step("sign-in of a returning user", async () => {
    const again = await signer.signin();
    equal(again.info.publicKey.z32(), user, "signed-in user");
    await again.storage.putText(`${APP_DIR}signin.txt`, "signed in");
    equal(await again.storage.getText(`${APP_DIR}signin.txt`), "signed in", "written after sign-in");
  });
  if (io.cookieProbe) {
    await step("control: the browser's rule for unpartitioned cookies of the server's site", async () => {
      // Third-party cookies are blocked for a page on another site: a cookie without `Partitioned` is not
      // sent back there, so the session cookie works there only because it is partitioned.
      equal(await io.cookieProbe(), !env.crossSite, "an unpartitioned cookie was sent back");
    });
  }
  if (io.fromOtherSite) {
    await step("the session cookie stays with the site that signed in", async () => {
      const url = `${env.serverUrl}${APP_DIR}partition.txt`;
      const here = await fetch(url, {
        method: "PUT",
        body: "here",
        credentials: "include",
        headers: { "pubky-host": user },
      });
      equal(here.status, 201, "a credentialed PUT from this page");
      equal(await io.fromOtherSite(url, user), 401, "the same PUT from a page of a third site");
    });
  }
  let appSession;
  await step("a third-party app's scoped sign-in through the HTTP relay", async () => {
    const app = newFacade();
    const flow = app.startAuthFlow(APP_CAPS, sdk.AuthFlowKind.signin(), env.httpRelay);
    truthy(flow.authorizationUrl.startsWith("pubkyauth://"), flow.authorizationUrl);
    const [session] = await Promise.all([flow.awaitApproval(), signer.approveAuthRequest(flow.authorizationUrl)]);
    appSession = session;
    equal(appSession.info.publicKey.z32(), user, "app session user");
    equal(JSON.stringify(appSession.info.capabilities), JSON.stringify([APP_CAPS]), "scoped capabilities");
    await appSession.storage.putText("/pub/js.example.app/state.txt", "app");
    equal(await appSession.storage.getText("/pub/js.example.app/state.txt"), "app", "inside the scope");
    await refused(appSession.storage.putText(`${APP_DIR}app.txt`, "no"), 403);
  });
  await step("sign-out", async () => {
    const exported = appSession.export();
    const appState = "/pub/js.example.app/state.txt";
    // Node: the app session's cookie as the server set it, sent by hand before and after the sign-out.
    const secret = io.cookie?.(user);
    if (io.cookie) truthy(secret, "the server set a session cookie named after the user");
    const byHand = async () =>
      (
        await io.rawFetch(`${env.serverUrl}${appState}`, {
          method: "PUT",
          body: "by hand",
          headers: { cookie: `${user}=${secret}`, "pubky-host": user },
        })
      ).status;
    if (secret) equal(await byHand(), 201, "the app session's cookie sent by hand");
    await appSession.signout();
    await refused(appSession.storage.putText(appState, "gone"), 401);
    await refused(session.storage.putText(`${APP_DIR}after.txt`, "gone"), 401);
    // The server forgot the session, not only the client's jar: the same cookie sent by hand is refused.
    if (secret) equal(await byHand(), 401, "the signed-out cookie sent by hand");
    // A restore from the export asks the server for the session, which no longer knows it.
    let revived;
    try {
      revived = await newFacade().restoreSession(exported);
    } catch (error) {
      equal(error.name, "AuthenticationError", `the restore's refusal (${error.message})`);
    }
    if (revived) await refused(revived.storage.putText(appState, "revived"), 401);
  });
  await step("a stranger's write is refused", async () => {
    const stranger = pubky.signer(sdk.Keypair.random());
    const theirs = await stranger.signup(homeserver, null);
    await theirs.storage.putText("/pub/js.example/mine.txt", "theirs");
    const response = await pubky.client.fetch(`https://_pubky.${user}${APP_DIR}intruder.txt`, {
      method: "PUT",
      body: "intruder",
      credentials: "include",
    });
    equal(response.status, 401, "a stranger's PUT");
    if (io.cookie) {
      // Node: the stranger's own session secret, sent under the owner's cookie name.
      const forged = await io.rawFetch(`${env.serverUrl}${APP_DIR}intruder.txt`, {
        method: "PUT",
        body: "intruder",
        headers: { cookie: `${user}=${io.cookie(theirs.info.publicKey.z32())}`, "pubky-host": user },
      });
      equal(forged.status, 401, "a stranger's session under the owner's cookie name");
    }
    equal(await newFacade().publicStorage.exists(`pubky${user}${APP_DIR}intruder.txt`), false, "nothing written");
  });
  if (env.tokenHomeserver) {
    await step("token-mode sign-up", async () => {
      const server = sdk.PublicKey.from(env.tokenHomeserver);
      await refused(pubky.signer(sdk.Keypair.random()).signup(server, null), 400);
      await refused(pubky.signer(sdk.Keypair.random()).signup(server, "AAAA-BBBB-CCCC"), 401);
      const invited = await pubky.signer(sdk.Keypair.random()).signup(server, env.signupToken);
      await invited.storage.putText(`${APP_DIR}invited.txt`, "invited");
      equal(await invited.storage.getText(`${APP_DIR}invited.txt`), "invited", "written after a token sign-up");
      await refused(pubky.signer(sdk.Keypair.random()).signup(server, env.signupToken), 401);
    });
  }
  return passed;
}

/** Follows a Server-Sent Events body (Node: no EventSource) and collects its events. */
export function eventsFromStream(body) {
  const events = [];
  const collector = collect(events);
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ done: true }));
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const type = frame.match(/^event: (.*)$/m)?.[1];
        const data = [...frame.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join("\n");
        if (type) collector.push({ type, data });
      }
    }
  })();
  return { ...collector, close: () => reader.cancel().catch(() => {}) };
}

/** Events pushed by a source, and a wait for one that matches. */
export function collect(events) {
  return {
    push(event) {
      events.push(event);
    },
    async waitFor(matches, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (events.some(matches)) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(events)}`);
    },
  };
}

function equal(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

function truthy(condition, what) {
  if (!condition) throw new Error(what);
}

/** Awaits `promise` and expects it to fail with HTTP `status`. */
async function refused(promise, status) {
  let error;
  try {
    await promise;
  } catch (caught) {
    error = caught;
  }
  if (!error) throw new Error(`expected a refusal with ${status}, but the call succeeded`);
  const code = error.data?.statusCode ?? Number(String(error.message).match(/\b([45]\d\d)\b/)?.[1]);
  if (code !== status) {
    throw new Error(`expected a refusal with ${status}, got ${error.name}: ${error.message} (${JSON.stringify(error.data)})`);
  }
}

function hex(array) {
  return Array.from(array, (b) => b.toString(16).padStart(2, "0")).join("");
}
