// `error unavailable` (cap `unavailable`, protocol §13.1): one stream's log is
// unreachable on the server. The sans-I/O session puts it back to detached and
// resumes it after a backoff whose floor is the server's retry_after_ms, within the
// policy; past it the stream fails with LogUnavailable (a RequestRefused).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { BackoffPolicy, CAP_UNAVAILABLE, ClientSession, LogUnavailable, RequestRefused, encode } from "../dist/testing.js";

const vectors = JSON.parse(readFileSync(new URL("../../tests/vectors/frames.json", import.meta.url), "utf8")).frames;
const EPOCH = "Zm9vYmFy";
const S1 = "s".repeat(22);
const S2 = "t".repeat(22);

function session(policy) {
  const s = new ClientSession({ caps: [CAP_UNAVAILABLE], outagePolicy: policy, rng: () => 0.5 });
  s.connect();
  s.receive(encode({ t: "welcome", session: "x", heartbeat_ms: 1000, epoch: EPOCH, caps: [CAP_UNAVAILABLE] }));
  for (const [req, stream] of [["r1", S1], ["r2", S2]]) {
    s.start(req, "agent", null);
    s.receive(encode({ t: "started", req, stream, epoch: EPOCH }));
  }
  return s;
}
const unavailable = (ms = 1000) => ({ t: "error", code: "unavailable", message: "its log is unreachable", stream: S1, req: null, retry_after_ms: ms });

test("the vector's error unavailable decodes as an error about one stream", () => {
  const v = vectors.find((f) => f.name.startsWith("error unavailable"));
  const s = session();
  const out = s.receive(v.frame);
  assert.equal(out.kind, "error");
  assert.equal(out.error.code, "unavailable");
  assert.equal(out.error.retry_after_ms, 1000);
});

test("a stream whose log is unreachable is resumed after the server's floor; the other goes on", () => {
  const s = session();
  const action = s.serverError(unavailable(1500), 10);
  assert.deepEqual(action, { kind: "retry_resume", req: "r1", at: 11.5 });
  assert.equal(s.byStream.get(S1).state, "detached");
  assert.equal(s.byStream.get(S2).state, "attached");
  const frame = s.resendResume("r1");
  assert.equal(frame.t, "resume");
  assert.equal(frame.stream, S1);
  assert.equal(s.resendResume("r1"), null); // already resuming
  s.receive(encode({ t: "resumed", stream: S1, from: 0, head: 3, status: "running" }));
  assert.equal(s.byStream.get(S1).state, "attached");
});

test("past the policy the stream fails with LogUnavailable", () => {
  const s = session(new BackoffPolicy({ base: 0.1, cap: 1, maxAttempts: 2, deadline: null }));
  assert.equal(s.serverError(unavailable(), 0).kind, "retry_resume");
  s.resendResume("r1");
  assert.equal(s.serverError(unavailable(), 1).kind, "retry_resume");
  s.resendResume("r1");
  const action = s.serverError(unavailable(), 2.5);
  assert.equal(action.kind, "fail_stream");
  assert.ok(action.error instanceof LogUnavailable && action.error instanceof RequestRefused);
  assert.equal(action.error.code, "unavailable");
  assert.equal(action.error.name, "LogUnavailable");
  assert.equal(action.error.attempts, 2);
  assert.equal(s.byReq.has("r1"), false);
  assert.equal(s.byStream.get(S2).state, "attached");
});

test("a stream detached meanwhile by a drop is resumed by the next connection's hello", () => {
  const s = session();
  s.serverError(unavailable(), 0);
  s.connectionLost();
  assert.equal(s.resendResume("r1"), null);
  s.connect();
  assert.deepEqual(s.resumes().map((f) => f.stream), [S1, S2]);
});
