// A/B of the hot path (v2 decode + verify of `events` frames: bench/verify.mjs's
// `v2_decode_verify`)
// between two builds in one process, interleaved, so the machine's load hits both
// alike: `node bench/ab.mjs A/dist/testing.js B/dist/testing.js [rounds=15] [--client]`
// (`--client`: through a whole Client over a fake socket).
// Prints each side's best and median events/s over the rounds.
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [pa, pb, r = "15"] = process.argv.slice(2).filter((a) => a !== "--client");
const rounds = Number(r);
const sides = await Promise.all([pa, pb].map((p) => import(pathToFileURL(resolve(p)).href)));
const m = sides[0];
const n = 100_000;
const per = 64;
const stream = "benchStream0123456789";
const epoch = "ep";
const events = [m.makeEvent(1, m.Kind.PART_START, { part: "text", partKind: "text" })];
for (let i = 2; i <= n; i++) events.push(m.makeEvent(i, m.Kind.TEXT, { part: "text", body: `token ${i} of it`.padEnd(20, ".") }));
const frames = [];
{
  const v = new m.ChainVerifier(stream, epoch);
  const carried = { part: "", kind: 0 };
  for (let i = 0; i < n; i += per) {
    const batch = events.slice(i, i + per);
    const d = v.extend(batch);
    frames.push(m.encodeV2({ t: "events", handle: 0, seq: batch[0].seq, items: m.encodeItemsV2(batch, carried), h: d.slice(0, 8) }));
  }
}
const MAX = 1 << 24;
/** v2 decode + verify (the codec and the chain, as the client applies them), events/s */
function run(x) {
  const v = new x.ChainVerifier(stream, epoch);
  const kinds = new Map();
  const carried = { part: "", kind: 0 };
  const t0 = performance.now();
  for (const f of frames) {
    for (const [value] of x.framesOfV2(f, MAX)) {
      const frame = x.decodeServerV2(value);
      v.extend(x.eventsOfV2(frame.seq, frame.items, kinds, carried), frame.h);
    }
  }
  return (n / (performance.now() - t0)) * 1000;
}

/** events/s of the same frames, one a message, through a whole Client of build `x`
 * over a fake socket (`--client`: the acks, the answer assembled, the events queued) */
async function runClient(x) {
  let ws;
  class WS {
    constructor() {
      ws = this;
      this.readyState = 0;
      this.protocol = "";
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = "unbroken.v2";
        this.onopen({});
      }, 0);
    }
    send(data) {
      const f = x.decodeClientV2(data);
      const reply = (r) => setTimeout(() => this.onmessage({ data: x.encodeV2(r) }), 0);
      if (f.t === "hello") reply({ t: "welcome", session: "s", heartbeat_ms: 400, epoch });
      else if (f.t === "start") reply({ t: "started", req: f.req, stream, epoch, handle: 0 });
    }
    close() {}
  }
  const c = new x.Client("ws://x", { WebSocket: WS, storage: null, lifecycle: false, protocols: ["v2"], compression: false });
  await c.start("a", null, { req: "r" });
  const t0 = performance.now();
  for (const f of frames) ws.onmessage({ data: f });
  const per = (n / (performance.now() - t0)) * 1000;
  await c.close();
  return per;
}
const client = process.argv.includes("--client");

const got = [[], []];
for (let i = 0; i < rounds; i++) for (const k of i % 2 ? [1, 0] : [0, 1]) got[k].push(client ? await runClient(sides[k]) : run(sides[k]));
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const k of [0, 1]) console.log(`${[pa, pb][k]}: best ${Math.round(Math.max(...got[k]))}/s, median ${Math.round(med(got[k]))}/s`);
