// `error unavailable` (cap `unavailable`, protocol §13.1): one stream's log is
// unreachable on the server. The client puts it back to detached and resumes it
// after a backoff whose floor is the server's retry_after_ms, within the policy;
// past it the stream fails with LogUnavailable (a RequestRefused). Over a scripted
// v1 socket.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { CAP_UNAVAILABLE, Client, LogUnavailable, RequestRefused, decodeServer, seed, toHex } from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const vectors = JSON.parse(readFileSync(new URL("../../tests/vectors/frames.json", import.meta.url), "utf8")).frames;
const EPOCH = "Zm9vYmFy";
const S1 = "s".repeat(22);
const S2 = "t".repeat(22);
const STREAM_OF = { r1: S1, r2: S2 };

/** A scripted v1 server (fake-socket.mjs): welcomes with the `unavailable` cap,
 * starts r1 (S1) and r2 (S2); answers a start with `onStart(frame, ws)` and a resume
 * with `onResume(frame, ws)` (a frame, or null: none). */
function scripted(onResume = (f) => ({ t: "resumed", stream: f.stream, from: f.after, head: 3, status: "running" }), onStart = (f) => ({ t: "started", req: f.req, stream: STREAM_OF[f.req], epoch: EPOCH })) {
  return fakeSockets({
    onFrame(ws, f) {
      if (f.t === "hello") ws.push({ t: "welcome", session: "x", heartbeat_ms: 1000, epoch: EPOCH, caps: [CAP_UNAVAILABLE] });
      else if (f.t === "start" || f.t === "resume") {
        const answer = (f.t === "start" ? onStart : onResume)(f, ws);
        if (answer) ws.push(answer);
      }
    },
  });
}

/** A client with streams r1 (S1) and r2 (S2) started. */
async function twoStreams(server, more = {}) {
  const events = [];
  const client = new Client("ws://x", { WebSocket: server.WS, storage: null, lifecycle: false, onEvent: (e) => events.push(e), seed: 1, ...more });
  const st1 = await client.start("agent", null, { req: "r1" });
  const st2 = await client.start("agent", null, { req: "r2" });
  return { client, st1, st2, events };
}
const unavailable = (ms = 1000) => ({ t: "error", code: "unavailable", message: "its log is unreachable", stream: S1, req: null, retry_after_ms: ms });
const resumesOf = (ws, stream) => ws.sent.filter((f) => f.t === "resume" && f.stream === stream);

test("the vector's error unavailable decodes as an error about one stream", () => {
  const v = vectors.find((f) => f.name.startsWith("error unavailable"));
  const f = decodeServer(v.frame);
  assert.equal(f.t, "error");
  assert.equal(f.code, "unavailable");
  assert.equal(f.retry_after_ms, 1000);
  assert.equal(f.req, null);
  assert.equal(f.stream, "mUlt1PartStream-xyz_42");
});

test("a stream whose log is unreachable is resumed after the server's floor; the other goes on", async () => {
  const server = scripted();
  const { client, st1, st2, events } = await twoStreams(server);
  const ws = server.sockets[0];
  ws.push(unavailable(40));
  const ev = events.find((e) => e.kind === "unavailable");
  assert.equal(ev.stream, S1);
  assert.equal(ev.delay, 0.04, "attempt 1 would be at once: the server's floor");
  assert.equal(ev.cause, "its log is unreachable");
  const [resume] = await server.until(() => resumesOf(ws, S1).length && resumesOf(ws, S1));
  assert.deepEqual(resume, { t: "resume", stream: S1, after: 0, epoch: EPOCH, h: toHex(seed(S1, EPOCH)) });
  await server.until(() => events.some((e) => e.kind === "resumed"));
  assert.equal(events.find((e) => e.kind === "resumed").stream, S1);
  assert.deepEqual(resumesOf(ws, S2), [], "the other stream stays attached");
  assert.equal(st1.done || st2.done, false);
  assert.equal(server.sockets.length, 1, "the connection stays");
  await client.close();
});

test("past the policy the stream fails with LogUnavailable; the other goes on", async () => {
  const server = scripted(() => unavailable(10)); // unreachable for good
  const policy = { base: 0.01, cap: 0.02, maxAttempts: 2, deadline: null };
  const { client, st1, st2, events } = await twoStreams(server, { policy });
  server.sockets[0].push(unavailable(10));
  const error = await st1.wait().then(() => null, (e) => e);
  assert.ok(error instanceof LogUnavailable && error instanceof RequestRefused);
  assert.equal(error.code, "unavailable");
  assert.equal(error.name, "LogUnavailable");
  assert.equal(error.attempts, 2);
  assert.equal(resumesOf(server.sockets[0], S1).length, 2);
  assert.equal(events.filter((e) => e.kind === "unavailable").length, 2);
  assert.equal(st2.done, false);
  assert.equal(server.sockets.length, 1);
  await client.close();
});

test("a stream detached meanwhile by a drop is resumed by the next connection's hello", async () => {
  const server = scripted();
  const { client } = await twoStreams(server, { policy: { base: 0.01, cap: 0.02 } });
  const ws = server.sockets[0];
  ws.push(unavailable(300));
  ws.readyState = 3;
  ws.onclose({ code: 1006, reason: "" });
  const ws2 = await server.until(() => server.sockets[1]?.sent.length >= 3 && server.sockets[1]);
  assert.deepEqual(ws2.sent.slice(0, 3).map((f) => [f.t, f.stream]), [["hello", undefined], ["resume", S1], ["resume", S2]], "pipelined before welcome");
  await client.close();
});

const startUnavailable = (f) => ({ t: "error", code: "unavailable", message: "its log is unreachable", stream: null, req: f.req, retry_after_ms: 10 });

test("a start whose log is unreachable is sent again (same req) after the server's floor, then answered", async () => {
  let n = 0;
  const server = scripted(undefined, (f) => (++n <= 2 ? startUnavailable(f) : { t: "started", req: f.req, stream: S1, epoch: EPOCH }));
  const events = [];
  const client = new Client("ws://x", { WebSocket: server.WS, storage: null, lifecycle: false, onEvent: (e) => events.push(e), seed: 1, policy: { base: 0.01, cap: 0.02, maxAttempts: 5 } });
  const st = await client.start("agent", null, { req: "r1" });
  assert.equal(st.id, S1);
  const starts = server.sockets[0].sent.filter((f) => f.t === "start");
  assert.deepEqual(starts.map((f) => f.req), ["r1", "r1", "r1"], "the same start, sent again");
  const told = events.filter((e) => e.kind === "unavailable");
  assert.equal(told.length, 2);
  assert.equal(told[0].stream, "");
  assert.ok(told[0].delay >= 0.01, "no sooner than the server's floor");
  assert.equal(server.sockets.length, 1, "the connection stays");
  await client.close();
});

test("a start whose log stays unreachable fails with LogUnavailable naming its req", async () => {
  const server = scripted(undefined, startUnavailable);
  const client = new Client("ws://x", { WebSocket: server.WS, storage: null, lifecycle: false, seed: 1, policy: { base: 0.01, cap: 0.02, maxAttempts: 2, deadline: null } });
  const error = await client.start("agent", null, { req: "r9" }).then(() => null, (e) => e);
  assert.ok(error instanceof LogUnavailable && error instanceof RequestRefused);
  assert.equal(error.stream, "");
  assert.equal(error.req, "r9");
  assert.equal(error.attempts, 2);
  assert.match(error.message, /start r9/);
  assert.equal(server.sockets[0].sent.filter((f) => f.t === "start").length, 3, "the start, then sent again twice");
  await client.close();
});

test("a start re-sent at welcome is not sent again by the retry timer of the connection before", async () => {
  // conn0 answers the start `unavailable {req}` and drops; conn1's start (sent at
  // welcome) is held unanswered past the retry timer: one start only, then `started`.
  // Both awaited as events: a process stalled past the timer (a loaded machine) fires
  // it before conn1's welcome, and one start is still the answer
  let timerDone;
  const timerFired = new Promise((r) => (timerDone = r));
  const { WS, sockets, until } = scripted(undefined, (f, ws) => {
    if (ws === sockets[0]) {
      ws.push(startUnavailable(f));
      ws.close(1011, "drop");
    }
    return null;
  });
  const startOn1 = until(() => sockets[1]?.sent.some((f) => f.t === "start"));
  const onEvent = (e) => {
    // set in the same tick as the client's retry timer, due later: it fires after it
    if (e.kind === "unavailable") setTimeout(timerDone, e.delay * 1000 + 20);
  };
  const client = new Client("ws://x", { WebSocket: WS, storage: null, lifecycle: false, onEvent, seed: 1, policy: { base: 0.001, cap: 0.002 } });
  try {
    const started = client.start("agent", null, { req: "r1" });
    await Promise.all([timerFired, startOn1]);
    assert.equal(sockets.length, 2, "one reconnect");
    const starts = sockets[1].sent.filter((f) => f.t === "start");
    assert.equal(starts.length, 1, "the start sent at welcome, not again by the old timer");
    sockets[1].push({ t: "started", req: "r1", stream: S1, epoch: EPOCH });
    assert.equal((await started).id, S1);
  } finally {
    await client.close();
  }
});

test("a stale error about the req of a started stream (a duplicate start's answer) leaves it be", async () => {
  const server = scripted();
  const { client, st1, st2 } = await twoStreams(server);
  try {
    const ws = server.sockets[0];
    ws.push(startUnavailable({ req: "r1" }));
    ws.push({ t: "error", code: "overloaded", message: "busy", stream: null, req: "r2", retry_after_ms: 10 });
    assert.equal(st1.done, false, "the started stream goes on");
    assert.equal(st2.done, false, "the started stream goes on");
    assert.equal(ws.readyState, 1, "the connection goes on");
    assert.equal(ws.sent.filter((f) => f.t === "start").length, 2, "nothing sent again");
  } finally {
    await client.close();
  }
});
