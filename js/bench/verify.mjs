// Micro-benchmark of the client's hot path: decode and verify `events` frames.
//
//   cd js && npm run build && node bench/verify.mjs [events=100000] [perFrame=64] [runs=5]
//
// 100k text events (bodies of about 20 bytes) in 64-event frames: decoded and
// verified (decode, expand items, chain, compare the frame digest: the codec and the
// chain alone, `decode_verify`), and the same one frame a message fed to a Client's
// socket as the page gets them (that, then the acks, the answer assembled and the
// events queued for the reader: `client`), like `DECODE_BENCH` of tests/browser/measure.py. Also times the
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

/** A Client over a fake socket speaking `version`, its stream started: `feed(message)`
 * hands the client one message as its socket would; `close()`. */
async function client(version) {
  const v2 = version === "v2";
  let ws;
  class WS {
    constructor() {
      ws = this;
      this.readyState = 0;
      this.protocol = "";
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = `unbroken.${version}`;
        this.onopen({});
      }, 0);
    }
    send(data) {
      const f = v2 ? m.decodeClientV2(data) : m.decodeClient(data);
      const reply = (r) => setTimeout(() => this.onmessage({ data: v2 ? m.encodeV2(r) : m.encode(r) }), 0);
      if (f.t === "hello") reply({ t: "welcome", session: "s", heartbeat_ms: 400, epoch });
      else if (f.t === "start") reply({ t: "started", req: f.req, stream, epoch, ...(v2 ? { handle: 0 } : {}) });
    }
    close() {}
  }
  const c = new m.Client("ws://x", { WebSocket: WS, storage: null, lifecycle: false, protocols: [version], compression: false });
  await c.start("a", null, { req: "r" });
  return { feed: (data) => ws.onmessage({ data }), close: () => c.close() };
}

async function best(f) {
  let b = Infinity;
  for (let r = 0; r < runs; r++) b = Math.min(b, await f());
  return b;
}

/** Time `messages` through a fresh client of `version`. */
const through = (version, messages) =>
  best(async () => {
    const c = await client(version);
    const t0 = performance.now();
    for (const f of messages) c.feed(f);
    const ms = performance.now() - t0;
    await c.close();
    return ms;
  });
const client1 = await through("v1", frames);
const client2 = await through("v2", frames2);
// the codec and the chain alone, as the client applies them to each frame
const receive = await best(async () => {
  const v = new m.ChainVerifier(stream, epoch);
  const kinds = new Map();
  const t0 = performance.now();
  for (const f of frames) {
    const frame = m.decodeServer(f, MAX);
    v.extend(m.eventsOf(frame, kinds), frame.h);
  }
  return performance.now() - t0;
});
const receive2 = await best(async () => {
  const v = new m.ChainVerifier(stream, epoch);
  const kinds = new Map();
  const carried = { part: "", kind: 0 };
  const t0 = performance.now();
  for (const f of frames2) {
    for (const [value] of m.framesOfV2(f, MAX)) {
      const frame = m.decodeServerV2(value);
      v.extend(m.eventsOfV2(frame.seq, frame.items, kinds, carried), frame.h);
    }
  }
  return performance.now() - t0;
});
const chain = await best(() => {
  const v = new m.ChainVerifier(stream, epoch);
  const t0 = performance.now();
  for (const b of batches) v.extend(b);
  return performance.now() - t0;
});
const input = m.stepInput(new Uint8Array(16), events[1]);
const hashes = 200_000;
const hash = await best(() => {
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
    client_per_s: Math.round((n / client1) * 1000),
    v2_client_per_s: Math.round((n / client2) * 1000),
    v1_bytes: frames.reduce((a, f) => a + f.length, 0),
    v2_bytes: frames2.reduce((a, f) => a + f.length, 0),
    chain_only_per_s: Math.round((n / chain) * 1000),
    step_us: +((hash * 1000) / hashes).toFixed(3),
    step_input_bytes: input.length,
  }),
);
