// unbroken-client/core (dist/core.js): the core Client offers only the core's caps;
// each plugin adds its own; an app that imports only Client bundles none of them.
// (client.core.test.mjs runs every Client behaviour test on the core.)
import assert from "node:assert/strict";
import { test } from "node:test";
import { build } from "esbuild";
import * as core from "../dist/core.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const WELCOME = { t: "welcome", session: "s", heartbeat_ms: 400, epoch: "e", caps: ["batch", "refresh", "streams", "unavailable"] };

async function hello(options) {
  const fake = fakeSockets({ onFrame: (ws, f) => f.t === "hello" && ws.push(WELCOME) });
  const seen = [];
  const client = new core.Client("ws://a/ws", { WebSocket: fake.WS, storage: null, lifecycle: false, protocols: ["v1"], onEvent: (e) => seen.push(e.kind), ...options });
  await client.connect();
  return { client, ws: fake.sockets[0], seen, until: fake.until };
}

test("the core Client offers the core's caps; each plugin adds its own", async () => {
  const bare = await hello({ token: () => "t" });
  assert.deepEqual(bare.ws.sent[0].caps, ["batch", "unavailable"]);
  await bare.client.close();
  const all = await hello({ token: () => "t", plugins: [core.TokenRefresh, core.StreamListing, core.Zlib] });
  assert.deepEqual(all.ws.sent[0].caps, ["batch", "refresh", "streams", "unavailable"], "(zlib: v2 only)");
  await all.client.close();
});

test("the core without TokenRefresh: auth_expiring is an event, no refresh is sent; streams() needs its plugin", async () => {
  const { client, ws, seen, until } = await hello({ token: () => "t" });
  ws.push({ t: "auth_expiring", in_ms: 5000 });
  ws.push({ t: "hb" }); // (a frame after it, answered by a ping: the connection still reads)
  await until(() => ws.sent.some((f) => f.t === "ping"));
  assert.ok(seen.includes("auth_expiring"));
  assert.equal(ws.closed, null, "the connection goes on (4010 at the expiry: a reconnect with a fresh token)");
  assert.ok(!ws.sent.some((f) => f.t === "refresh"));
  await assert.rejects(core.streams(client), (e) => e instanceof core.ConfigError && /StreamListing/.test(e.message));
  await client.close();
});

test("an app that imports only Client from the core bundles no plugin", async () => {
  const r = await build({
    stdin: { contents: 'import { Client } from "./dist/core.js"; const s = await new Client("wss://x").start("a"); for await (const e of s); console.log((await s.wait()).text);', resolveDir: new URL("..", import.meta.url).pathname, loader: "js" },
    bundle: true, format: "esm", platform: "neutral", minify: true, write: false, logLevel: "error",
    external: ["./unbroken-v1.js", "./unbroken-blake2b.js"],
  });
  const text = r.outputFiles[0].text;
  for (const s of ["refresh failed", "streams' capability", "DecompressionStream", "StreamListing"]) assert.ok(!text.includes(s), `${s} is in the core app`);
  // (and the core itself is there: the chain, reconnects, the lifecycle)
  for (const s of ["visibilitychange", "pagehide", "unbroken-blake2b.js"]) assert.ok(text.includes(s), s);
});
