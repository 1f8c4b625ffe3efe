// The liveness rule on a queued link: the same numbers as the Python client
// (unbroken/protocol/liveness.py, tests/unit/protocol/test_liveness.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { BULK, Liveness } from "../dist/testing.js";

const MAX_QUEUE = 10.0; // liveness.ts (not exported from the package)
const MAX_AHEAD = 3.0;

function queuedLink(delay) {
  const l = new Liveness({ pingEvery: 0.75 });
  l.connecting();
  l.helloSent(0);
  l.welcomed(0.1, 100, 0.1);
  l.ping(1.0);
  for (let i = 0; i < Math.floor(BULK / 100) + 1; i++) {
    l.bytesHeard(1.0 + (i * delay) / 50, 100);
    l.messageHeard();
  }
  l.pong(1.0 + delay, 1);
  assert.ok(Math.abs(l.queueDelay - delay) < 1e-9);
  return l;
}

test("liveness: a pong queued behind small messages extends the next ping's limit", () => {
  const l = queuedLink(2.0);
  const start = 3.0;
  l.ping(start);
  const limit = l.limit();
  for (let i = 1; i < 60; i++) {
    l.bytesHeard(start + i * 0.1, 100);
    l.messageHeard();
  }
  assert.ok(l.pingAge(start + 5.9) > limit);
  assert.equal(l.dead(start + 5.9), null);
  assert.ok(Math.abs(l.pingLimit() - (limit + 4.0)) < 1e-9);
});

test("liveness: without data ahead of it a ping gets no queue allowance", () => {
  const l = queuedLink(2.0);
  const start = 3.0;
  l.ping(start);
  for (let i = 1; i < 20; i++) {
    l.bytesHeard(start + i * 0.1, 20);
    l.messageHeard();
  }
  assert.ok(Math.abs(l.pingLimit() - l.limit()) < 1e-9);
  assert.match(l.dead(start + l.limit() + 0.01) ?? "", /ping unanswered/);
});

test("liveness: a receive-only link after a healthy round trip is found at the limit", () => {
  const l = new Liveness({ pingEvery: 0.75 });
  l.helloSent(0);
  l.welcomed(0.1, 100, 0.1);
  l.ping(1.0);
  l.pong(1.1, 1);
  assert.equal(l.queueDelay, 0);
  l.ping(1.2);
  for (let i = 1; i < 100; i++) {
    l.bytesHeard(1.2 + i * 0.01, 200);
    l.messageHeard();
  }
  assert.ok(Math.abs(l.pingLimit() - l.limit()) < 1e-9);
  assert.notEqual(l.dead(1.2 + l.limit() + 0.01), null);
});

test("liveness: the queue allowance is capped and a reconnect forgets it", () => {
  const l = queuedLink(30.0);
  l.ping(31.0);
  l.bytesHeard(31.1, BULK);
  l.messageHeard();
  assert.ok(Math.abs(l.pingLimit() - (l.limit() + MAX_QUEUE)) < 1e-9);
  l.connecting();
  assert.equal(l.queueDelay, 0);
});

function welcomedLink(heartbeatMs = 1000) {
  const l = new Liveness({ pingEvery: 0.75 });
  l.connecting();
  l.helloSent(0);
  l.welcomed(0.05, heartbeatMs, 0.05);
  return l;
}

function events(l, at, n) {
  l.bytesHeard(at, n);
  l.messageHeard();
  l.eventsHeard(n);
}

test("liveness: a first ping behind a full window on a slow link is not dead", () => {
  // 5 KB/s against a 16 KiB window: the pong waits 3 s behind events let out before the ping
  const l = welcomedLink();
  const limit = l.limit();
  l.ahead = 16 * 1024 + 4096;
  l.ping(1.0);
  let t = 1.0;
  for (let i = 0; i < 16; i++) {
    t += 0.2;
    events(l, t, 1024);
    assert.equal(l.dead(t), null);
  }
  assert.ok(t - 1.0 > limit);
  const judged = Math.min(t, 1.0 + MAX_AHEAD); // the last event, at most MAX_AHEAD on
  assert.equal(l.dead(judged + limit - 0.01), null);
  assert.notEqual(l.dead(judged + limit + 0.01), null);
});

test("liveness: events beyond the window bound do not excuse an unanswered ping", () => {
  const l = welcomedLink();
  const limit = l.limit();
  l.ahead = 2048;
  l.ping(1.0);
  events(l, 1.2, 2048);
  for (let i = 1; i < 40; i++) events(l, 1.2 + 0.1 * i, 512);
  assert.ok(Math.abs(l.pingAge(1.2 + limit) - limit) < 1e-9);
  assert.notEqual(l.dead(1.2 + limit + 0.01), null);
});

test("liveness: the window allowance is capped, and nothing without ahead", () => {
  const l = welcomedLink();
  l.ahead = 2 ** 30;
  l.ping(1.0);
  let t = 1.0;
  while (t < 1.0 + MAX_AHEAD + 2) {
    t += 0.05;
    events(l, t, 100);
  }
  assert.ok(Math.abs(l.pingAge(t) - (t - (1.0 + MAX_AHEAD))) < 1e-9);
  const bare = welcomedLink();
  bare.ping(1.0);
  events(bare, 2.0, 100);
  assert.ok(Math.abs(bare.pingAge(2.5) - 1.5) < 1e-9);
});

test("liveness: a slow trickle gets no window allowance", () => {
  const l = welcomedLink(400); // the server's default heartbeat
  const limit = l.limit();
  l.ahead = 2 ** 20;
  l.ping(1.0);
  let t = 1.0;
  let deadAt = null;
  while (deadAt === null && t < 1.0 + 2 * limit) {
    t += 0.05;
    events(l, t, 50); // 1 KB/s: fewer than AHEAD_MIN bytes within the limit
    if (l.dead(t) !== null) deadAt = t;
  }
  assert.ok(deadAt !== null && deadAt <= 1.0 + limit + 0.05);
});

test("liveness: the window allowance counts from the first ping of the spell", () => {
  const l = welcomedLink(400);
  const limit = l.limit();
  l.ahead = 2 ** 20;
  let t = 1.0;
  let nextPing = 1.0;
  let deadAt = null;
  while (deadAt === null && t < 30) {
    if (t >= nextPing) {
      l.ping(t);
      nextPing += 0.75;
    }
    t += 0.05;
    events(l, t, 1000); // 20 KB/s within the window; the pings go unanswered
    if (l.dead(t) !== null) deadAt = t;
  }
  assert.ok(deadAt !== null && deadAt <= 1.0 + MAX_AHEAD + limit + 0.05);
});
