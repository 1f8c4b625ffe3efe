// The liveness rule on a queued link: the same numbers as the Python client
// (unbroken/protocol/liveness.py, tests/unit/protocol/test_liveness.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { BULK, Liveness } from "../dist/testing.js";

const MAX_QUEUE = 10.0; // liveness.ts (not exported from the package)

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
