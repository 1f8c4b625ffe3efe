// Backoff, the retry table and the liveness rule: the same numbers as the Python
// client (unbroken/protocol/backoff.py, retry.py, liveness.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AuthError,
  Client,
  Backoff,
  BackoffPolicy,
  ConfigError,
  ConnectionLost,
  Forbidden,
  IntegrityError,
  Liveness,
  ProtocolError,
  ReconnectExhausted,
  RequestRefused,
  StreamGone,
  closeError,
  fatalError,
  seededRng,
  shouldRetry,
  statusIsRetryable,
  parsePartialJson,
} from "../dist/testing.js";

test("backoff ceilings are 0, 0.1, 0.2, 0.4, … capped at 10 s (spec §14)", () => {
  const p = new BackoffPolicy();
  const ceilings = Array.from({ length: 11 }, (_, i) => p.ceiling(i + 1));
  assert.deepEqual(ceilings, [0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, 10]);
  assert.equal(p.maxAttempts, 12);
  assert.equal(p.deadline, 60);
});

test("backoff: full jitter within the ceiling, attempt 1 at once, seeded is reproducible", () => {
  const a = new Backoff(new BackoffPolicy(), 0, seededRng(7));
  const b = new Backoff(new BackoffPolicy(), 0, seededRng(7));
  const da = [];
  for (let k = 1; k <= 12; k++) da.push(a.nextDelay(0));
  for (let k = 1; k <= 12; k++) assert.equal(b.nextDelay(0), da[k - 1]);
  assert.equal(da[0], 0);
  const p = new BackoffPolicy();
  da.forEach((d, i) => assert.ok(d >= 0 && d <= p.ceiling(i + 1), `attempt ${i + 1}: ${d}`));
  assert.ok(new Set(da.slice(1)).size > 5, "jittered, not constant");
  assert.equal(a.nextDelay(0), null, "max_attempts 12");
});

test("backoff: the server's retry_after is a floor; the deadline ends the episode", () => {
  const b = new Backoff(new BackoffPolicy({ deadline: 5 }), 100, () => 0.5);
  assert.equal(b.nextDelay(100, 1.5), 1.5, "attempt 1 would be at once: floored");
  assert.equal(b.nextDelay(101, null), 0.05);
  assert.equal(b.nextDelay(104.9, 0.2), null, "would end past the deadline");
  assert.deepEqual(b.schedule, [1.5, 0.05]);
});

test("backoff policy refuses nonsense", () => {
  assert.throws(() => new BackoffPolicy({ multiplier: 0.5 }), ConfigError);
  assert.throws(() => new BackoffPolicy({ maxAttempts: 0 }), ConfigError);
  assert.throws(() => new BackoffPolicy({ deadline: 0 }), ConfigError);
  assert.equal(new BackoffPolicy({ maxAttempts: null, deadline: null }).maxAttempts, null);
});

test("retry table: drops, restarts, overload and heartbeat closes retried; auth, version, protocol fatal", () => {
  for (const code of [null, 1000, 1001, 1011, 1012, 4004, 4008]) assert.equal(shouldRetry(new ConnectionLost("x", code)), true, `close ${code}`);
  for (const code of [1007, 1009, 4000, 4001, 4002, 4003, 4005]) assert.equal(shouldRetry(new ConnectionLost("x", code)), false, `close ${code}`);
  for (const e of [new AuthError("a"), new Forbidden("f"), new ProtocolError("p"), new IntegrityError("s", 1, "d"), new RequestRefused("unknown_agent", "")]) {
    assert.equal(shouldRetry(e), false, e.name);
  }
  assert.equal(shouldRetry(new TypeError("socket failed")), true);
  assert.equal(statusIsRetryable(503), true);
  assert.equal(statusIsRetryable(429), true);
  assert.equal(statusIsRetryable(401), false);
  assert.equal(statusIsRetryable(400), false);
});

test("fatal errors are typed: a close code becomes its error class", () => {
  assert.ok(fatalError(new ConnectionLost("bad token", 4002)) instanceof AuthError);
  assert.ok(fatalError(new ConnectionLost("no", 4003)) instanceof Forbidden);
  assert.ok(fatalError(new ConnectionLost("v", 4005)) instanceof ProtocolError);
  assert.ok(fatalError(new TypeError("boom")) instanceof ConnectionLost);
  const gone = new StreamGone("s", "epoch");
  assert.equal(fatalError(gone), gone);
  assert.match(gone.message, /log was restarted/);
  assert.equal(gone.reason, "epoch");
  assert.equal(closeError(null, null).code, null);
  assert.equal(closeError([4008, "full"], null).code, 4008);
  assert.ok(closeError(null, [1009, "too big"]) instanceof ProtocolError);
  // a close 4008 carries the shed's retry_after_ms in its reason (the error may be lost)
  assert.equal(closeError([4008, "overloaded: slow reader detached; retry_after_ms=1416"], null).retryAfter, 1.416);
  assert.equal(closeError([4008, "full"], null).retryAfter, null);
  assert.equal(closeError([1012, "restart; retry_after_ms=5"], null).retryAfter, null);
  assert.equal(closeError([4008, "retry_after_ms=99999999999"], null).retryAfter, null);
});

test("liveness: the limit is 3 heartbeats plus the RTO of the measured round trips", () => {
  const l = new Liveness();
  l.welcomed(0, 400, 0.01);
  assert.ok(Math.abs(l.limit() - (1.2 + 0.01 + 4 * 0.005)) < 1e-9);
  l.welcomed(0, 0, 0.01); // a server's heartbeat cannot switch detection off
  assert.equal(l.heartbeat, 0.05);
  const slow = new Liveness();
  slow.welcomed(0, 400, 5);
  assert.equal(slow.limit(), 1.2 + 2.0, "the RTO term is capped at 2 s");
});

test("liveness: silence beyond the limit is death; a frame resets it", () => {
  const l = new Liveness({ pingEvery: 0 });
  l.helloSent(0);
  l.welcomed(0, 400, 0);
  let t = 0;
  let due = l.firstCheck(0);
  let c;
  for (;;) {
    t = due;
    c = l.check(t, due, true);
    if (c.dead) break;
    if (t > 0.9 && t < 1.0) {
      l.bytesHeard(t, 10);
      l.messageHeard();
    }
    due = c.wakeAt;
    assert.ok(t < 5);
  }
  assert.match(c.dead, /no frame for/);
  assert.ok(t > 2.0 && t < 2.5, `dead at ${t} (last frame at ~0.95 s, limit 1.2 s)`);
});

test("liveness: an unanswered ping is death even while frames arrive (receive-only link)", () => {
  const l = new Liveness({ pingEvery: 0.75 });
  l.helloSent(0);
  l.welcomed(0, 400, 0);
  let due = l.firstCheck(0);
  let c;
  let t;
  for (;;) {
    t = due;
    l.bytesHeard(t, 10); // the server's frames keep coming
    l.messageHeard();
    c = l.check(t, due, true);
    if (c.dead) break;
    due = c.wakeAt;
    assert.ok(t < 5);
  }
  assert.match(c.dead, /ping unanswered/);
  assert.ok(t > 1.9 && t < 2.3, `dead at ${t}`);
});

test("liveness: time this process ran late never counts against the link", () => {
  const l = new Liveness({ pingEvery: 0 });
  l.helloSent(0);
  l.welcomed(0, 400, 0);
  const due = l.firstCheck(0);
  // the page was frozen (or SIGSTOPped) for 10 s: the check runs 10 s late
  const c1 = l.check(due + 10, due, true);
  assert.equal(c1.dead, null, "first late check defers to the reader");
  l.bytesHeard(due + 10, 100); // the queued frames arrive
  l.messageHeard();
  const c2 = l.check(due + 10.001, c1.wakeAt, true);
  assert.equal(c2.dead, null);
  // and no frames after all: dead only after the limit measured from the frames
  const c3 = l.check(due + 10 + 1.3, due + 10 + 1.3, true);
  assert.match(c3.dead ?? "", /no frame/);
});

test("liveness: an idle connection (no live stream) is never declared dead", () => {
  const l = new Liveness();
  l.helloSent(0);
  l.welcomed(0, 400, 0);
  let due = l.firstCheck(0);
  for (let i = 0; i < 100; i++) {
    const c = l.check(due, due, false);
    assert.equal(c.dead, null);
    assert.equal(c.ping, null);
    due = c.wakeAt;
  }
});

test("liveness: pongs are RTT samples, except one queued behind bulk data (Karn)", () => {
  const l = new Liveness();
  l.welcomed(0, 400, 0.1);
  const p = l.ping(1);
  l.pong(1.02, p.n);
  assert.ok(l.srtt < 0.1 && l.srtt > 0.02);
  const before = l.srtt;
  const q = l.ping(2);
  l.bytesHeard(2.5, 5000); // a big message arrived before the pong
  l.pong(2.6, q.n);
  assert.equal(l.srtt, before);
  assert.equal(l.awaitingPong, false);
});

test("partial JSON: a prefix parses as far as it goes", () => {
  assert.deepEqual(parsePartialJson('{"rows": [{"n": 1}, {"n"'), { rows: [{ n: 1 }, {}] });
  assert.deepEqual(parsePartialJson('{"a": "hel'), { a: "hel" });
  assert.deepEqual(parsePartialJson("[1, 2, 3"), [1, 2, 3]);
  assert.equal(parsePartialJson(""), null);
  assert.deepEqual(parsePartialJson('{"a": tru'), {});
  // a key dropped, an escape cut, containers closed, a literal whole at the end
  assert.deepEqual(parsePartialJson('{"a": 1, "b'), { a: 1 });
  assert.deepEqual(parsePartialJson('{"a": "x\\'), { a: "x" });
  assert.deepEqual(parsePartialJson('[{"a": [true, {"b": null}], "c": -1.5e3'), [{ a: [true, { b: null }], c: -1500 }]);
  assert.deepEqual(parsePartialJson('{"a": [1, 2,'), { a: [1, 2] });
  assert.deepEqual(parsePartialJson('"top'), "top");
  assert.equal(parsePartialJson("12"), 12);
  // every prefix of a document: a value or null, the whole document itself
  const doc = '{"rows": [{"id": 1, "tags": ["x", "y\\"z"], "ok": false}, {"id": 2.5, "n": null}], "end": "é€"}';
  for (let i = 0; i < doc.length; i++) assert.notEqual(parsePartialJson(doc.slice(0, i)), undefined);
  assert.deepEqual(parsePartialJson(doc), JSON.parse(doc));
});

test("errors carry their class name even minified", async () => {
  const m = await import("../dist/unbroken.js");
  for (const name of ["StreamGone", "IntegrityError", "ReconnectExhausted", "AuthError", "Overloaded", "ConnectionLost", "ProtocolError", "RequestRefused", "StreamFailed", "RequestTimeout", "Forbidden"]) {
    const cls = m[name];
    assert.equal(cls.prototype.name, name);
    assert.ok(cls.prototype instanceof m.UnbrokenError || cls === m.UnbrokenError);
  }
  assert.equal(new m.StreamGone("s", "expired").name, "StreamGone");
});

test("StreamFailed of a redacted agent failure says where its traceback is, as the Python client's", async () => {
  const m = await import("../dist/unbroken.js");
  const redacted = new m.StreamFailed("s1", "failed", "internal error in agent (RuntimeError)");
  assert.equal(
    redacted.message,
    "stream s1 ended failed: internal error in agent (RuntimeError) (the server's log has its message and traceback: `agent failed stream=s1`; in development, Unbroken(redact=reveal_exception) sends them to clients)",
  );
  assert.equal(new m.StreamFailed("s1", "cancelled", "").message, "stream s1 ended cancelled: no detail");
});

test("a Client with no WebSocket class to use is a ConfigError that says what to pass", () => {
  const had = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  delete globalThis.WebSocket; // Node before 22 has none
  try {
    assert.throws(
      () => new Client("ws://a/ws", { storage: null, lifecycle: false }),
      (e) => e instanceof ConfigError && /options\.WebSocket/.test(e.message) && /experimental-websocket/.test(e.message),
    );
  } finally {
    if (had) Object.defineProperty(globalThis, "WebSocket", had);
  }
});

test("no URL, and a request on a closed client, are ConfigErrors (as in Python)", async () => {
  class NoSocket {}
  assert.throws(() => new Client([], { WebSocket: NoSocket, storage: null, lifecycle: false }), ConfigError);
  const client = new Client("ws://a/ws", { WebSocket: NoSocket, storage: null, lifecycle: false });
  await client.close();
  await assert.rejects(client.start("echo"), (e) => e instanceof ConfigError && /closed: make a new Client/.test(e.message));
});
