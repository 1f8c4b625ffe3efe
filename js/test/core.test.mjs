// unbroken-client/core (dist/core.js): the core Client offers only the core's caps;
// each plugin adds its own; an app that imports only Client bundles none of them.
// (client.core.test.mjs runs every Client behaviour test on the core.)
import assert from "node:assert/strict";
import { test } from "node:test";
import { build } from "esbuild";
import * as core from "../dist/core.js";
import * as full from "../dist/unbroken.js";
import { decodeClientV2, encodeV2 } from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const WELCOME = { t: "welcome", session: "s", heartbeat_ms: 400, epoch: "e", caps: ["batch", "refresh", "streams", "unavailable"] };

const ITEM = { stream: "s1", agent: "report", epoch: "e", head: 7, h: "ba7abf59f2e5310cd9f0b87de4f48e99", status: "running" };

/** A connected client of `entry` (the core's, or the full `unbroken-client`'s) over a
 * scripted server that welcomes and answers `list` with ITEM. */
async function hello(options, entry = core) {
  const fake = fakeSockets({
    onFrame: (ws, f) => {
      if (f.t === "hello") ws.push(WELCOME);
      else if (f.t === "list") ws.push({ t: "streams", n: f.n, items: [ITEM] });
    },
  });
  const seen = [];
  const client = new entry.Client("ws://a/ws", { WebSocket: fake.WS, storage: null, lifecycle: false, protocols: ["v1"], onEvent: (e) => seen.push(e.kind), ...options });
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
  for (const s of ["refresh failed", "streams' capability", "DecompressionStream", "needs the StreamListing plugin"]) assert.ok(!text.includes(s), `${s} is in the core app`);
  // (and the core itself is there: the chain, reconnects, the lifecycle)
  for (const s of ["visibilitychange", "pagehide", "unbroken-blake2b.js"]) assert.ok(text.includes(s), s);
});

test("either entry's streams() works on either entry's client with the StreamListing plugin", { timeout: 5000 }, async () => {
  const want = [ITEM.stream, ITEM.agent, ITEM.epoch, ITEM.head, ITEM.status, ITEM.h];
  const fields = ([i]) => [i.stream, i.agent, i.epoch, i.head, i.status, i.cursor.digest];
  const a = await hello({}, full); // (the full Client: its own StreamListing)
  assert.deepEqual(fields(await core.streams(a.client)), want, "the core's streams() on a full client");
  assert.deepEqual(fields(await a.client.streams()), want);
  await a.client.close();
  const b = await hello({ plugins: [full.StreamListing] }); // (the core's Client, the full entry's plugin)
  assert.deepEqual(fields(await core.streams(b.client)), want);
  assert.deepEqual(fields(await full.streams(b.client)), want);
  await b.client.close();
});

test("a plugin the full Client has given again (either entry's) is installed once", { timeout: 5000 }, async () => {
  const fake = fakeSockets({ protocol: "unbroken.v2", decode: decodeClientV2, encode: encodeV2, onFrame: (ws, f) => f.t === "hello" && ws.push(WELCOME) });
  const client = new full.Client("ws://a/ws", { WebSocket: fake.WS, storage: null, lifecycle: false, token: () => "t", plugins: [full.TokenRefresh, full.Zlib, core.TokenRefresh] });
  await client.connect();
  const ws = fake.sockets[0];
  assert.deepEqual(ws.sent[0].caps, ["batch", "refresh", "streams", "unavailable", "zlib"], "each cap once");
  ws.push({ t: "auth_expiring", in_ms: 5000 });
  await fake.until(() => ws.sent.some((f) => f.t === "refresh"));
  ws.push({ t: "hb" }); // (a frame after it, answered by a ping: a second refresh would have gone first)
  await fake.until(() => ws.sent.some((f) => f.t === "ping"));
  assert.equal(ws.sent.filter((f) => f.t === "refresh").length, 1, "one refresh per auth_expiring");
  await client.close();
});

test("the core Client given a plugin twice (the same, or the other entry's) installs it once", { timeout: 5000 }, async () => {
  for (const again of [core.TokenRefresh, full.TokenRefresh]) {
    const fake = fakeSockets({ protocol: "unbroken.v2", decode: decodeClientV2, encode: encodeV2, onFrame: (ws, f) => f.t === "hello" && ws.push(WELCOME) });
    const until = fake.until;
    const client = new core.Client("ws://a/ws", { WebSocket: fake.WS, storage: null, lifecycle: false, token: () => "t", plugins: [core.TokenRefresh, core.Zlib, again, core.Zlib] });
    await client.connect();
    const ws = fake.sockets[0];
    assert.deepEqual(ws.sent[0].caps, ["batch", "refresh", "unavailable", "zlib"], "each cap once");
    ws.push({ t: "auth_expiring", in_ms: 5000 });
    await until(() => ws.sent.some((f) => f.t === "refresh"));
    ws.push({ t: "hb" }); // (a frame after it, answered by a ping: a second refresh would have gone first)
    await until(() => ws.sent.some((f) => f.t === "ping"));
    assert.equal(ws.sent.filter((f) => f.t === "refresh").length, 1, "one refresh per auth_expiring");
    await client.close();
  }
});

test("an object that is not one of the plugins is refused at construction with ConfigError", () => {
  const options = { WebSocket: class {}, storage: null, lifecycle: false };
  for (const bogus of [{ name: "mine" }, { name: "refresh" }]) {
    assert.throws(() => new core.Client("ws://a/ws", { ...options, plugins: [core.Zlib, bogus] }), (e) => e instanceof core.ConfigError && e.message === `unknown plugin ${bogus.name}`);
  }
  assert.throws(() => new full.Client("ws://a/ws", { ...options, plugins: [{ name: "mine" }] }), full.ConfigError);
  // (one named as a plugin it has, too)
  assert.throws(() => new full.Client("ws://a/ws", { ...options, plugins: [{ name: "refresh" }] }), full.ConfigError);
});
