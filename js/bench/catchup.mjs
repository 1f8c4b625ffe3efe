// Micro-benchmark of a catch-up in the Client: one `events` message of ~240 kB
// (16k text events of 12 characters, like the first frame after `resumed` in
// tests/browser/measure.py) through the whole Client (decode, verify, build the
// answer, queue), timed from the message to the end of its handler ("verify" in
// measure.py's breakdown) and to the first event out of `for await`.
//
//   cd js && npm run build && node bench/catchup.mjs [events=16000] [runs=15]
import * as m from "../dist/testing.js";

const n = Number(process.argv[2] ?? 16_000);
const runs = Number(process.argv[3] ?? 15);
const stream = "benchStream0123456789";
const epoch = "ep";
const events = [m.makeEvent(1, m.Kind.PART_START, { part: "text", partKind: "text" })];
for (let i = 2; i <= n; i++) events.push(m.makeEvent(i, m.Kind.TEXT, { part: "text", body: `tok ${i} abcdefgh`.slice(0, 12) }));
const h = m.toHex(new m.ChainVerifier(stream, epoch).extend(events));
const big = m.encode({ t: "events", stream, seq: 1, items: m.encodeItems(events), h });

async function once() {
  let sock = null;
  let started;
  const ready = new Promise((r) => (started = r));
  class WS {
    constructor() {
      this.readyState = 0;
      this.protocol = "unbroken.v1";
      sock = this;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }
    send(data) {
      const f = JSON.parse(data);
      const reply = (o) => setTimeout(() => this.onmessage?.({ data: JSON.stringify(o) }), 0);
      if (f.t === "hello") reply({ t: "welcome", session: "s", heartbeat_ms: 400, epoch });
      else if (f.t === "start") {
        reply({ t: "started", req: f.req, stream, epoch });
        setTimeout(started, 1);
      }
    }
    close() {
      this.readyState = 3;
    }
  }
  const client = new m.Client("ws://bench/ws", { WebSocket: WS, storage: null, lifecycle: false });
  const st = await client.start("a", null);
  await ready;
  const it = st[Symbol.asyncIterator]();
  const t0 = performance.now();
  sock.onmessage({ data: big });
  const t1 = performance.now();
  await it.next();
  const t2 = performance.now();
  await client.close();
  return [t1 - t0, t2 - t0];
}

let handler = Infinity;
let first = Infinity;
for (let r = 0; r < runs; r++) {
  const [a, b] = await once();
  handler = Math.min(handler, a);
  first = Math.min(first, b);
}
console.log(JSON.stringify({ events: n, message_bytes: big.length, handler_ms: +handler.toFixed(2), first_event_ms: +first.toFixed(2), per_event_us: +((handler * 1000) / n).toFixed(3) }));
process.exit(0);
