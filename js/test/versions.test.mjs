// Version negotiation through the Client (a scripted server, a fake WebSocket): v2
// offered first, v1 as fallback, a pinned version, the 4005 refusal as a typed
// UnsupportedVersion (never retried), and what only v2 has: deflated messages (cap
// zlib), handles, the 16-byte h at the end.
import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import {
  ChainVerifier,
  Client,
  ConfigError,
  Kind,
  ProtocolError,
  UnsupportedVersion,
  decodeClient,
  decodeClientV2,
  encode,
  encodeItems,
  encodeItemsV2,
  encodeV2,
  makeEvent,
  pack,
  toHex,
  fromHex,
} from "../dist/testing.js";

const EPOCH = "ep0ch";
const STREAM = "S1streamXYZ";

function answer(n) {
  const evs = [makeEvent(1, Kind.PART_START, { part: "t", partKind: "text" })];
  for (let i = 0; i < n; i++) evs.push(makeEvent(evs.length + 1, Kind.TEXT, { part: "t", body: `tok${i} ` }));
  evs.push(makeEvent(evs.length + 1, Kind.PART_END, { part: "t" }));
  evs.push(makeEvent(evs.length + 1, Kind.END, { status: "completed", count: evs.length + 1 }));
  return evs;
}
const TEXT = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join("");

/** A server speaking `speaks` (newest first); `zlib`: deflate every events message;
 * `tamper(frame)`: change a v2 events frame before it goes. */
class Server {
  constructor(events, { speaks = ["v2", "v1"], zlib = false, per = 5, tamper = null } = {}) {
    Object.assign(this, { events, speaks, zlib, per, tamper });
    const v = new ChainVerifier(STREAM, EPOCH);
    this.digests = events.map((ev) => v.extend([ev]));
    this.offered = [];
    this.hellos = [];
    this.closes = [];
    const server = this;
    this.WebSocket = class {
      constructor(url, protocols) {
        server.offered.push(protocols);
        this.readyState = 0;
        this.protocol = "";
        const chosen = server.speaks.find((v) => protocols.includes(`unbroken.${v}`));
        setTimeout(() => {
          this.readyState = 1;
          this.protocol = chosen ? `unbroken.${chosen}` : "";
          this.version = chosen;
          this.onopen?.({});
          if (!chosen) {
            // accepted without a subprotocol, then closed 4005 naming what it speaks
            this.readyState = 3;
            this.onclose?.({ code: 4005, reason: `no common protocol version; server speaks ${server.speaks.join(",")}` });
          }
        }, 1);
      }
      send(data) {
        // (accepted without a version, a v1 client sends its hello before the close)
        if (this.version === undefined) return;
        assert.equal(typeof data === "string", this.version === "v1");
        setTimeout(() => server.handle(this, typeof data === "string" ? decodeClient(data) : decodeClientV2(data)), 0);
      }
      close(code = 1000, reason = "") {
        server.closes.push([code, reason]);
        if (this.readyState >= 2) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason }), 0);
      }
    };
  }
  send(ws, bytesOrText) {
    if (ws.readyState !== 1) return;
    const data = typeof bytesOrText === "string" ? bytesOrText : bytesOrText.buffer.slice(bytesOrText.byteOffset, bytesOrText.byteOffset + bytesOrText.length);
    ws.onmessage?.({ data });
  }
  out(ws, f) {
    this.send(ws, ws.version === "v1" ? encode(f) : encodeV2(f));
  }
  handle(ws, f) {
    if (f.t === "hello") {
      this.hellos.push(f);
      const caps = ws.version === "v2" && this.zlib && f.caps.includes("zlib") ? ["batch", "zlib"] : ["batch"];
      // no hb, pong or resume here: the longest heartbeat, so the client's silence rule
      // (3 heartbeats) is a liveness bound, not a race with its own inflating (200 ms:
      // nine deflated messages inflated in over 0.66 s on a loaded machine, the
      // connection was found dead, and the resume was never answered)
      return this.out(ws, { t: "welcome", session: "s", heartbeat_ms: 10_000, epoch: EPOCH, caps });
    }
    if (f.t === "start") {
      this.out(ws, { t: "started", req: f.req, stream: STREAM, epoch: EPOCH, handle: 7 });
      const carried = { part: "", kind: 0 };
      for (let from = 0; from < this.events.length; from += this.per) {
        const evs = this.events.slice(from, from + this.per);
        const h = this.digests[from + evs.length - 1];
        if (ws.version === "v1") {
          this.out(ws, { t: "events", stream: STREAM, seq: from + 1, items: encodeItems(evs), h: toHex(h) });
          continue;
        }
        let frame = { t: "events", handle: 7, seq: from + 1, items: encodeItemsV2(evs, carried), h: evs.at(-1).kind === Kind.END ? h : h.slice(0, 8) };
        if (this.tamper) frame = this.tamper(frame);
        const wire = encodeV2(frame);
        this.send(ws, this.zlib ? pack([13, new Uint8Array(deflateSync(wire))]) : wire);
      }
    }
  }
}

test("the client offers v2 then v1; a v2 server speaks v2 (binary frames), a v1 server v1: the same answer", async () => {
  for (const speaks of [["v2", "v1"], ["v2"], ["v1"]]) {
    const server = new Server(answer(30), { speaks });
    const conn = [];
    const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false, onEvent: (e) => conn.push(e) });
    const st = await client.start("echo");
    const a = await st.wait();
    assert.equal(a.text, TEXT(30));
    assert.equal(a.digest, toHex(server.digests.at(-1)));
    assert.deepEqual(server.offered[0], ["unbroken.v2", "unbroken.v1"]);
    assert.equal(client.version, speaks[0]);
    assert.equal(conn.find((e) => e.kind === "connected").version, speaks[0]);
    await client.close();
  }
});

test("protocols pins a version: only it is offered", async () => {
  const server = new Server(answer(5));
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false, protocols: ["v1"] });
  const a = await (await client.start("echo")).wait();
  assert.equal(a.text, TEXT(5));
  assert.deepEqual(server.offered, [["unbroken.v1"]]);
  assert.equal(client.version, "v1");
  assert.deepEqual(server.hellos[0].caps.includes("zlib"), false, "zlib is a v2 cap: not offered to v1");
  await client.close();
  assert.throws(() => new Client("ws://a/ws", { WebSocket: server.WebSocket, protocols: ["v3"] }), ConfigError);
  assert.throws(() => new Client("ws://a/ws", { WebSocket: server.WebSocket, protocols: [] }), ConfigError);
});

test("no common version: close 4005 is UnsupportedVersion naming both sides' versions, never retried", async () => {
  for (const [mine, theirs] of [[["v1"], ["v2"]], [["v2"], ["v1"]]]) {
    const server = new Server(answer(5), { speaks: theirs });
    const conn = [];
    const client = new Client(["ws://a/ws", "ws://b/ws"], { WebSocket: server.WebSocket, storage: null, lifecycle: false, protocols: mine, onEvent: (e) => conn.push(e.kind) });
    await assert.rejects(client.start("echo"), (e) => {
      assert.ok(e instanceof UnsupportedVersion && e instanceof ProtocolError, String(e));
      assert.equal(e.name, "UnsupportedVersion");
      assert.equal(e.closeCode, 4005);
      assert.deepEqual(e.clientVersions, mine);
      assert.deepEqual(e.serverVersions, theirs);
      assert.match(e.message, new RegExp(`this client speaks ${mine[0]}, the server speaks ${theirs[0]}`));
      return true;
    });
    assert.equal(server.offered.length, 1, "not retried");
    assert.ok(!conn.includes("reconnecting"));
    await client.close();
  }
});

test("v2 with the zlib cap: deflated messages are inflated in order (DecompressionStream), the answer exact", async () => {
  const server = new Server(answer(400), { zlib: true, per: 50 });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false });
  const st = await client.start("echo");
  const seqs = [];
  for await (const ev of st) seqs.push(ev.seq);
  const a = await st.wait();
  assert.deepEqual(seqs, Array.from({ length: 403 }, (_, i) => i + 1));
  assert.equal(a.text, TEXT(400));
  assert.ok(server.hellos[0].caps.includes("zlib"));
  await client.close();
  // without offering it, a deflated message is a bad frame (4000)
  const off = new Server(answer(10), { zlib: true });
  const c2 = new Client("ws://a/ws", { WebSocket: off.WebSocket, storage: null, lifecycle: false, compression: false });
  assert.ok(!(await c2.connect(), off.hellos[0].caps.includes("zlib")));
  await c2.close();
});

for (const [name, tamper, pattern] of [
  ["an events frame with an unknown handle", (f) => ({ ...f, handle: 9 }), /unknown stream handle 9/],
  ["the frame with end carrying 8 bytes of h", (f) => (f.items.at(-1)?.[0] === 6 ? { ...f, h: f.h.slice(0, 8) } : f), /all 16 bytes/],
]) {
  test(`v2: ${name} is a bad frame: the client closes 4000`, async () => {
    const server = new Server(answer(8), { tamper });
    const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false, policy: { maxAttempts: 1 } });
    const st = await client.start("echo");
    await assert.rejects(st.wait());
    assert.ok(
      server.closes.some(([code, reason]) => code === 4000 && pattern.test(reason)),
      JSON.stringify(server.closes),
    );
    await client.close();
  });
}

test("v2: an 8-byte h that does not match is an IntegrityError", async () => {
  const server = new Server(answer(8), { tamper: (f) => (f.seq === 6 ? { ...f, h: fromHex("0000000000000000") } : f) });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false });
  const st = await client.start("echo");
  await assert.rejects(st.wait(), (e) => e.name === "IntegrityError" && e.seq === 10);
  await client.close();
});
