// Micro-benchmark of the client's hot path: decode and verify `events` frames.
//
//   cd js && npm run build && node bench/verify.mjs [events=100000] [perFrame=64] [runs=5]
//
// 100k text events (bodies of about 20 bytes) in 64-event frames, fed to a
// ClientSession as the page gets them (decode, expand items, chain, compare the
// frame digest), like `DECODE_BENCH` of tests/browser/measure.py. Also times the
// chain alone (ChainVerifier.extend) and one BLAKE2b-128 of a 45-byte step input.
// Prints the best of `runs` runs (this machine is loaded: take the best).
// Profile: node --cpu-prof --cpu-prof-dir=/tmp/prof bench/verify.mjs
import * as m from "../dist/testing.js";

const n = Number(process.argv[2] ?? 100_000);
const per = Number(process.argv[3] ?? 64);
const runs = Number(process.argv[4] ?? 5);

const stream = "benchStream0123456789";
const epoch = "ep";
const events = [m.makeEvent(1, m.Kind.PART_START, { part: "text", partKind: "text" })];
for (let i = 2; i <= n; i++) {
  events.push(m.makeEvent(i, m.Kind.TEXT, { part: "text", body: `token ${i} of it`.padEnd(20, ".") }));
}
const frames = [];
const batches = [];
{
  const v = new m.ChainVerifier(stream, epoch);
  for (let i = 0; i < n; i += per) {
    const batch = events.slice(i, i + per);
    batches.push(batch);
    const h = m.toHex(v.extend(batch));
    frames.push(m.encode({ t: "events", stream, seq: batch[0].seq, items: m.encodeItems(batch), h }));
  }
}

function session() {
  const s = new m.ClientSession();
  s.connect(null);
  s.receive(JSON.stringify({ t: "welcome", session: "s", heartbeat_ms: 400, epoch }));
  s.start("r", "a", null);
  s.receive(JSON.stringify({ t: "started", req: "r", stream, epoch }));
  return s;
}

function best(f) {
  let b = Infinity;
  for (let r = 0; r < runs; r++) b = Math.min(b, f());
  return b;
}

const receive = best(() => {
  const s = session();
  const t0 = performance.now();
  for (const f of frames) s.receive(f);
  return performance.now() - t0;
});
const chain = best(() => {
  const v = new m.ChainVerifier(stream, epoch);
  const t0 = performance.now();
  for (const b of batches) v.extend(b);
  return performance.now() - t0;
});
const input = m.stepInput(new Uint8Array(16), events[1]);
const hashes = 200_000;
const hash = best(() => {
  let h = new Uint8Array(16);
  const t0 = performance.now();
  for (let i = 0; i < hashes; i++) h = m.stepEvent(h, events[1]);
  return performance.now() - t0;
});
console.log(
  JSON.stringify({
    events: n,
    per_frame: per,
    decode_verify_per_s: Math.round((n / receive) * 1000),
    decode_verify_ms: +receive.toFixed(1),
    chain_only_per_s: Math.round((n / chain) * 1000),
    step_us: +((hash * 1000) / hashes).toFixed(3),
    step_input_bytes: input.length,
  }),
);
