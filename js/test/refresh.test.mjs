// In-band token refresh (protocol §18) over a scripted server: auth_expiring →
// refresh → refreshed with the streams flowing; auth_failed retried with backoff a
// bounded number of times; close 4010 → a new token, a reconnect and an exact
// resume; a provider that fails for good → AuthError, no retry storm.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AuthError, Client, ChainVerifier, TextDelta, encode, encodeItems, makeEvent, Kind, toHex } from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const EPOCH = "ep0ch";
const STREAM = "S1streamXYZ";

function answerEvents(n) {
  const evs = [makeEvent(1, Kind.PART_START, { part: "text", partKind: "text" })];
  for (let i = 0; i < n; i++) evs.push(makeEvent(evs.length + 1, Kind.TEXT, { part: "text", body: `tok${i} ` }));
  evs.push(makeEvent(evs.length + 1, Kind.PART_END, { part: "text" }));
  evs.push(makeEvent(evs.length + 1, Kind.END, { status: "completed", count: evs.length + 1 }));
  return evs;
}
const expectedText = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join("");

/** A scripted server with refresh: `script.hello(f, conn)` may return a close code
 * (refuse) or null; `script.refresh(f, conn)` returns the answer frame or a close
 * code; events go out `per` at a time every `gap` ms, and `script.frame(conn, n)`
 * may act after the n-th events frame of a connection (send auth_expiring, close). */
class RefreshServer {
  constructor(events, script = {}, { per = 2, gap = 1 } = {}) {
    Object.assign(this, { events, script, per, gap });
    this.hellos = [];
    this.refreshes = [];
    this.starts = 0;
    this.resumes = [];
    const v = new ChainVerifier(STREAM, EPOCH);
    this.digests = events.map((ev) => toHex(v.extend([ev])));
    const fake = fakeSockets({ openDelay: 1, onFrame: (ws, f) => this.handle(ws, f) });
    this.sockets = fake.sockets;
    this.WebSocket = class extends fake.WS {
      constructor(...args) {
        super(...args);
        this.conn = fake.sockets.length; // 1, 2, ...
      }
    };
  }
  get connections() {
    return this.sockets.length;
  }
  out(ws, frame) {
    if (ws.readyState === 1) ws.onmessage?.({ data: typeof frame === "string" ? frame : encode(frame) });
  }
  closeWith(ws, code, reason) {
    ws.readyState = 3;
    ws.onclose?.({ code, reason });
  }
  handle(ws, f) {
    if (ws.readyState !== 1) return;
    if (f.t === "hello") {
      this.hellos.push(f);
      const refuse = this.script.hello?.(f, ws.conn);
      if (refuse) return this.closeWith(ws, refuse, "refused");
      const caps = f.caps.includes("refresh") ? ["batch", "refresh"] : ["batch"];
      return this.out(ws, { t: "welcome", session: "s", heartbeat_ms: 200, epoch: EPOCH, caps, auth_exp: 1767225600 });
    }
    if (f.t === "start") {
      this.starts++;
      this.out(ws, { t: "started", req: f.req, stream: STREAM, epoch: EPOCH });
      return this.pump(ws, 0);
    }
    if (f.t === "resume") {
      this.resumes.push(f.after);
      assert.equal(f.h, f.after === 0 ? null : this.digests[f.after - 1]);
      this.out(ws, { t: "resumed", stream: f.stream, from: f.after, head: this.events.length, status: "running" });
      return this.pump(ws, f.after);
    }
    if (f.t === "refresh") {
      this.refreshes.push([f.token, ws.conn, performance.now()]);
      const answer = this.script.refresh?.(f, ws.conn) ?? { t: "refreshed", exp: 1767225700 };
      if (typeof answer === "number") return this.closeWith(ws, answer, "refresh refused");
      return this.out(ws, answer);
    }
    if (f.t === "ping") this.out(ws, { t: "pong", n: f.n });
  }
  pump(ws, after) {
    let n = 0;
    const next = (from) => {
      if (ws.readyState !== 1 || from >= this.events.length) return;
      const batch = this.events.slice(from, from + this.per);
      const last = from + batch.length;
      this.out(ws, { t: "events", stream: STREAM, seq: from + 1, items: encodeItems(batch), h: this.digests[last - 1] });
      n++;
      this.script.frame?.(this, ws, n);
      setTimeout(() => next(last), this.gap);
    };
    next(after);
  }
}

async function drain(st) {
  let text = "";
  for await (const ev of st) if (ev instanceof TextDelta) text += ev.text;
  return text;
}

test("auth_expiring: the provider's new token goes in-band as refresh; refreshed; the stream never paused", async () => {
  let issued = 0;
  const provider = async () => `tok-${++issued}`;
  const server = new RefreshServer(answerEvents(60), {
    frame: (srv, ws, n) => n === 5 && srv.out(ws, { t: "auth_expiring", in_ms: 400 }),
  });
  const seen = [];
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, token: provider, storage: null, lifecycle: false, onEvent: (e) => seen.push(e) });
  const st = await client.start("echo");
  assert.equal(await drain(st), expectedText(60));
  assert.equal((await st.wait()).digest, server.digests.at(-1));
  assert.deepEqual(server.hellos[0].caps, ["batch", "refresh", "streams", "unavailable"], "a provider offers the refresh cap");
  assert.equal(server.hellos[0].token, "tok-1");
  assert.deepEqual(server.refreshes.map(([t, c]) => [t, c]), [["tok-2", 1]]);
  assert.equal(server.connections, 1, "no reconnect");
  const kinds = seen.map((e) => e.kind);
  assert.ok(kinds.includes("auth_expiring") && kinds.includes("refreshed"), kinds.join());
  assert.equal(seen.find((e) => e.kind === "auth_expiring").delay, 0.4);
  await client.close();
});

test("error auth_failed: asked again with backoff (0.1 s, 0.2 s), at most 3 times in a row", async () => {
  let issued = 0;
  const server = new RefreshServer(answerEvents(400), {
    frame: (srv, ws, n) => n === 3 && srv.out(ws, { t: "auth_expiring", in_ms: 5000 }),
    refresh: () => ({ t: "error", code: "auth_failed", message: "token expired at 1767225600" }),
  }, { gap: 5 }); // ~1 s of stream: the three attempts (0.3 s) fall inside it
  const seen = [];
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, token: () => `tok-${++issued}`, storage: null, lifecycle: false, onEvent: (e) => seen.push(e) });
  const st = await client.start("echo");
  assert.equal(await drain(st), expectedText(400));
  assert.equal(server.refreshes.length, 3, "3 attempts, then it stops asking (the server's 4010 decides)");
  const [a, b, c] = server.refreshes.map(([, , at]) => at);
  assert.ok(b - a >= 95 && c - b >= 195, `backoff: ${b - a} ms, ${c - b} ms`);
  assert.equal(seen.filter((e) => e.kind === "refresh_failed").length, 3);
  assert.equal(server.connections, 1, "a refused refresh does not drop the connection");
  await client.close();
});

test("close 4010: a new token from the provider, a reconnect, and the stream resumes exactly", async () => {
  let issued = 0;
  const server = new RefreshServer(answerEvents(80), {
    frame: (srv, ws, n) => ws.conn === 1 && n === 7 && srv.closeWith(ws, 4010, "token expired; reconnect with a new token"),
  });
  const seen = [];
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, token: async () => `tok-${++issued}`, storage: null, lifecycle: false, onEvent: (e) => seen.push(e) });
  const st = await client.start("echo");
  assert.equal(await drain(st), expectedText(80));
  assert.equal((await st.wait()).digest, server.digests.at(-1));
  assert.deepEqual(server.hellos.map((h) => h.token), ["tok-1", "tok-2"]);
  assert.equal(server.starts, 1);
  assert.deepEqual(server.resumes, [14]);
  const lost = seen.find((e) => e.kind === "disconnected");
  assert.equal(lost.code, 4010);
  assert.ok(seen.some((e) => e.kind === "reconnecting" && e.delay === 0), "at once");
  await client.close();
});

test("a provider that keeps failing ends the streams with AuthError after 3 attempts, no retry storm", async () => {
  let calls = 0;
  const server = new RefreshServer(answerEvents(5));
  const client = new Client("ws://a/ws", {
    WebSocket: server.WebSocket,
    token: async () => {
      calls++;
      throw new Error("identity provider down");
    },
    storage: null,
    lifecycle: false,
  });
  await assert.rejects(client.start("echo"), (e) => e instanceof AuthError && /identity provider down/.test(e.message) && /3 attempts/.test(e.message));
  assert.equal(calls, 3);
  assert.equal(server.connections, 0, "no connection opened without a token");
  await client.close();
});

test("after 4010 a token the server refuses at hello (4002) ends the stream with AuthError, once", async () => {
  let issued = 0;
  const server = new RefreshServer(answerEvents(80), {
    hello: (f, conn) => (conn > 1 ? 4002 : null),
    frame: (srv, ws, n) => ws.conn === 1 && n === 4 && srv.closeWith(ws, 4010, "token expired; reconnect with a new token"),
  });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, token: () => `tok-${++issued}`, storage: null, lifecycle: false });
  const st = await client.start("echo");
  await assert.rejects(drain(st), AuthError);
  await assert.rejects(st.wait(), AuthError);
  assert.equal(server.connections, 2, "one attempt with the refused token, no more");
  await client.close();
});

test("a fixed token offers no refresh cap and ignores auth_expiring; at 4010 it reconnects with the same token", async () => {
  const server = new RefreshServer(answerEvents(40), {
    hello: (f, conn) => (conn > 1 ? 4002 : null), // the same expired token: refused
    frame: (srv, ws, n) => {
      if (ws.conn !== 1) return;
      if (n === 2) srv.out(ws, { t: "auth_expiring", in_ms: 100 });
      if (n === 6) srv.closeWith(ws, 4010, "token expired; reconnect with a new token");
    },
  });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, token: "fixed", storage: null, lifecycle: false });
  const st = await client.start("echo");
  await assert.rejects(st.wait(), AuthError);
  assert.deepEqual(server.hellos[0].caps, ["batch", "streams", "unavailable"]);
  assert.deepEqual(server.hellos.map((h) => h.token), ["fixed", "fixed"]);
  assert.equal(server.refreshes.length, 0);
  await client.close();
});
