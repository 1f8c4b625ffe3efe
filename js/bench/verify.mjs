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
const frames2 = []; // protocol v2: MessagePack, the part carried, 8 bytes of h
const batches = [];
{
  const v = new m.ChainVerifier(stream, epoch);
  const carried = { part: "", kind: 0 };
  for (let i = 0; i < n; i += per) {
    const batch = events.slice(i, i + per);
    batches.push(batch);
    const d = v.extend(batch);
    const h = m.toHex(d);
    frames.push(m.encode({ t: "events", stream, seq: batch[0].seq, items: m.encodeItems(batch), h }));
    frames2.push(m.encodeV2({ t: "events", handle: 0, seq: batch[0].seq, items: m.encodeItemsV2(batch, carried), h: d.slice(0, 8) }));
  }
}
const MAX = 1 << 24;
const one2 = (f) => m.framesOfV2(m.encodeV2(f), MAX)[0];
function session2() {
  const s = new m.ClientSession();
  s.connect(null, "v2");
  s.receive(one2({ t: "welcome", session: "s", heartbeat_ms: 400, epoch }));
  s.start("r", "a", null);
  s.receive(one2({ t: "started", req: "r", stream, epoch, handle: 0 }));
  return s;
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
const receive2 = best(() => {
  const s = session2();
  const t0 = performance.now();
  for (const f of frames2) for (const one of m.framesOfV2(f, MAX)) s.receive(one);
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
    v2_decode_verify_per_s: Math.round((n / receive2) * 1000),
    v2_decode_verify_ms: +receive2.toFixed(1),
    v1_bytes: frames.reduce((a, f) => a + f.length, 0),
    v2_bytes: frames2.reduce((a, f) => a + f.length, 0),
    chain_only_per_s: Math.round((n / chain) * 1000),
    step_us: +((hash * 1000) / hashes).toFixed(3),
    step_input_bytes: input.length,
  }),
);
