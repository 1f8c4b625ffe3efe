// The wait for a start's or resume's answer (requestTimeout): many requests waiting
// cost the client one ticker (it measures how late the page ran), not a wake-up per
// request. The deadline behaviours themselves (a stalled page, resends, a server
// that never answers) are in client.test.mjs. Over a scripted v1 socket.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, ConnectionLost } from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const EPOCH = "Zm9vYmFy";

test("requests awaiting their answer share the client's one ticker and do not wake", async () => {
  // a server that welcomes and answers pings but never a start: n starts wait
  const n = 1000;
  const server = fakeSockets({
    onFrame(ws, f) {
      if (f.t === "hello") ws.push({ t: "welcome", session: "x", heartbeat_ms: 1000, epoch: EPOCH, caps: [] });
      else if (f.t === "ping") ws.push({ t: "pong", n: f.n });
    },
  });
  const client = new Client("ws://x", { WebSocket: server.WS, storage: null, lifecycle: false, requestTimeout: 30 });
  const waits = Array.from({ length: n }, (_, i) => client.start("agent", null, { req: `r${i}` }).then(() => null, (e) => e));
  await server.until(() => server.sockets[0]?.sent.filter((f) => f.t === "start").length === n);
  assert.equal(client.lateWaits, n);
  assert.notEqual(client.lateDue, null, "the one ticker runs");
  // from the ticker's next tick to its fifth, count every timer armed in the process
  const realSetTimeout = globalThis.setTimeout;
  const armed = [];
  const counting = (fn, ms, ...args) => (armed.push(ms), realSetTimeout(fn, ms, ...args));
  const tick = client.lateTick;
  let ticks = 0;
  const fourTicks = new Promise((resolve) => {
    client.lateTick = function () {
      ticks++;
      if (ticks === 1) globalThis.setTimeout = counting;
      if (ticks === 5) {
        globalThis.setTimeout = realSetTimeout;
        resolve();
      }
      return tick.call(this);
    };
  });
  try {
    await fourTicks;
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  // four re-arms of the ticker, and the connection's own checks and pings; a wake-up
  // per waiting request would be n timers every 0.25 s
  assert.ok(armed.length >= 4, `${armed.length} timers armed`);
  assert.ok(armed.length < n / 10, `${armed.length} timers armed in four ticks with ${n} requests waiting`);
  assert.equal(armed.filter((ms) => ms === 250).length >= 4, true, "the ticker ticks every 0.25 s");
  await client.close();
  const errors = await Promise.all(waits);
  assert.ok(errors.every((e) => e instanceof ConnectionLost), "each wait ends with the client");
  assert.equal(client.lateWaits, 0);
  assert.equal(client.lateDue, null, "the ticker stops with the last wait");
});
