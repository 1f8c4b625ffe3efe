// The golden vectors of protocol v1 (tests/vectors/*.json), the same files the
// Python implementation is held to: same digests, same frames, same rejections.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  ChainVerifier,
  IntegrityError,
  KIND_BY_NAME,
  ProtocolError,
  decodeClient,
  decodeServer,
  encode,
  encodeItems,
  eventsOf,
  fromHex,
  makeEvent,
  payload,
  seed,
  stepEvent,
  stepInput,
  toHex,
  ChainMismatch,
  Client,
  DEFAULT_LIMITS,
  StreamFailed,
} from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const load = (name) => JSON.parse(readFileSync(new URL(`../../tests/vectors/${name}`, import.meta.url), "utf8"));
const digestVectors = load("digest.json");
const frameVectors = load("frames.json");
const invalidVectors = load("invalid.json");

const eventOf = (row) =>
  makeEvent(row.seq, KIND_BY_NAME[row.kind], {
    part: row.part,
    body: row.body,
    partKind: row.part_kind,
    mime: row.mime,
    schema: row.schema,
    status: row.status,
    error: row.error,
    count: row.count,
  });

test("digest vectors: seed input and seed of every stream", () => {
  assert.ok(digestVectors.streams.length >= 6);
  for (const s of digestVectors.streams) {
    const input = new TextEncoder().encode(`unbroken.v1\0${s.stream}\0${s.epoch}`);
    assert.equal(toHex(input), s.seed_input_hex, s.name);
    assert.equal(toHex(seed(s.stream, s.epoch)), s.seed, s.name);
  }
});

test("digest vectors: payload, step input and digest of every event", () => {
  let n = 0;
  for (const s of digestVectors.streams) {
    let h = seed(s.stream, s.epoch);
    for (const row of s.events) {
      const ev = eventOf(row);
      assert.equal(ev.kind, row.kind_byte, `${s.name} #${row.seq} kind`);
      assert.equal(toHex(payload(ev)), row.payload_hex, `${s.name} #${row.seq} payload`);
      assert.equal(toHex(stepInput(h, ev)), row.step_input_hex, `${s.name} #${row.seq} step input`);
      h = stepEvent(h, ev);
      assert.equal(toHex(h), row.digest, `${s.name} #${row.seq} digest`);
      n++;
    }
    assert.equal(toHex(h), s.final_digest, s.name);
  }
  assert.ok(n > 40);
});

test("digest vectors: a verifier accepts each stream whole and refuses any altered event", () => {
  for (const s of digestVectors.streams) {
    const events = s.events.map(eventOf);
    const v = new ChainVerifier(s.stream, s.epoch);
    v.extend(events, s.final_digest);
    assert.equal(v.seq, events.length);
    for (let i = 0; i < events.length; i++) {
      const altered = events.map((e) => ({ ...e }));
      // change the field the kind's payload carries last
      const field = { text: "body", json: "body", data: "body", part_start: "schema", part_end: "error", end: "error" }[s.events[i].kind];
      altered[i][field] += "x";
      const w = new ChainVerifier(s.stream, s.epoch);
      assert.throws(() => w.extend(altered, s.final_digest), /digest mismatch/, `${s.name} #${i + 1}`);
      assert.equal(w.seq, 0, "a failed frame leaves the verifier where it was");
    }
    // dropped, duplicated, reordered: the sequence check
    if (events.length >= 3) {
      const w = new ChainVerifier(s.stream, s.epoch);
      assert.throws(() => w.extend([events[0], events[2]]), /expected seq 2/);
      assert.throws(() => w.extend([events[0], events[0]]), /expected seq 2/);
      assert.throws(() => w.extend([events[1], events[0]]), /expected seq 1/);
    }
  }
});

test("digest vectors: the same events in another epoch give other digests", () => {
  const b = digestVectors.streams.find((s) => s.name.startsWith("same events as"));
  const a = digestVectors.streams[0];
  assert.equal(a.stream, b.stream);
  assert.notEqual(a.epoch, b.epoch);
  assert.notEqual(a.final_digest, b.final_digest);
});

test("frame vectors: every frame decodes to its fields and encodes back to the exact text", () => {
  let n = 0;
  for (const f of frameVectors.frames) {
    const decode = f.direction === "client" ? decodeClient : decodeServer;
    const frame = decode(f.frame);
    // (the vectors list limits without the fields left at their defaults; a decoder fills them in)
    const expected = f.fields.t === "welcome" ? { ...f.fields, limits: { ...DEFAULT_LIMITS, ...f.fields.limits } } : f.fields;
    assert.deepEqual(frame, expected, f.name);
    assert.equal(encode(f.fields), f.frame, f.name);
    n++;
  }
  assert.ok(n >= 30);
});

test("frame vectors: events frames rebuild from their events and chain", () => {
  const evFrames = frameVectors.frames.filter((f) => f.fields.t === "events");
  assert.ok(evFrames.length >= 6);
  for (const f of evFrames) {
    const events = f.events.map(eventOf);
    // decode: the items stand for exactly these events
    const partKinds = new Map();
    const first = events[0].seq;
    for (const e of digestVectors.streams[2].events) if (e.seq < first && e.kind === "part_start") partKinds.set(e.part, e.part_kind);
    assert.deepEqual(eventsOf(decodeServer(f.frame), partKinds), events, f.name);
    // encode: the items from the events, h from the chain
    const v = new ChainVerifier(f.stream, f.epoch, first - 1, first === 1 ? null : fromHex(f.digest_before));
    const h = toHex(v.extend(events));
    const wire = encode({ t: "events", stream: f.stream, seq: first, items: encodeItems(events), h });
    assert.equal(wire, f.frame, f.name);
  }
});

test("invalid vectors: every frame is refused with its close code", () => {
  let n = 0;
  for (const r of invalidVectors.frames) {
    const decode = r.direction === "client" ? decodeClient : decodeServer;
    const data = r.frame_hex !== undefined ? fromHex(r.frame_hex) : r.frame;
    assert.throws(
      () => {
        const frame = r.max_size === undefined ? decode(data) : decode(data, r.max_size);
        if (frame.t === "events") eventsOf(frame);
      },
      (e) => e instanceof ProtocolError && e.closeCode === r.close_code,
      `${r.name}: expected close ${r.close_code}`,
    );
    n++;
  }
  assert.equal(n, invalidVectors.frames.length);
  assert.ok(n >= 40);
});

test("invalid vectors: items that do not stand for valid events are refused", () => {
  for (const r of invalidVectors.items) {
    const frame = decodeServer(r.frame); // decodes
    assert.throws(
      () => eventsOf(frame),
      (e) => e instanceof ProtocolError && e.closeCode === r.close_code,
      r.name,
    );
  }
});

/** v1 sockets the test drives by hand (`push(text)`; fake-socket.mjs) and
 * `hello(i)`: the i-th socket once its client has sent hello. */
function manual() {
  const m = fakeSockets({ decode: JSON.parse });
  const hello = (i) => m.until(() => m.sockets[i]?.sent[0]?.t === "hello" && m.sockets[i]);
  return { ...m, hello };
}
const manualOptions = (WS, more = {}) => ({ WebSocket: WS, storage: null, lifecycle: false, protocols: ["v1"], ...more });

/** A client started on `s` (a digest vector's stream) over `manual()`'s socket, its `started` answered. */
async function startedOn(s, more = {}) {
  const m = manual();
  const client = new Client("ws://x", manualOptions(m.WS, more));
  const starting = client.start("echo", { text: "Hello, world." }, { req: "req-1" });
  const ws = await m.hello(0);
  ws.push(`{"t":"welcome","session":"c0ffee","heartbeat_ms":1000,"epoch":"${s.epoch}"}`);
  const start = await m.until(() => ws.sent.find((f) => f.t === "start"));
  assert.deepEqual(start, { t: "start", req: "req-1", agent: "echo", input: { text: "Hello, world." } });
  ws.push(`{"t":"started","req":"req-1","stream":"${s.stream}","epoch":"${s.epoch}"}`);
  return { ...m, client, ws, st: await starting };
}

test("a client verifies the worked example of the spec, frame by frame, and acks the end", async () => {
  const s = digestVectors.streams[0]; // "hello"
  const { client, ws, st } = await startedOn(s);
  ws.push(`{"t":"events","stream":"${s.stream}","seq":1,"items":[{"k":"part_start","p":"text","pk":"text"},"Hello",", "],"h":"${s.events[2].digest}"}`);
  const it = st[Symbol.asyncIterator]();
  for (let i = 0; i < 3; i++) await it.next();
  assert.deepEqual([st.cursor.seq, st.cursor.digest], [3, "79b14d8d1cce6b3c894dfba29329e966"]);
  ws.push(`{"t":"events","stream":"${s.stream}","seq":4,"items":[{"k":"text","p":"text","d":"world."},{"k":"part_end","p":"text"},{"k":"end","st":"completed","n":6}],"h":"${s.final_digest}"}`);
  const answer = await st.wait();
  assert.equal(answer.digest, s.final_digest);
  assert.equal(answer.text, "Hello, world.");
  assert.deepEqual(ws.sent.filter((f) => f.t === "ack"), [{ t: "ack", stream: s.stream, seq: 6 }]);
  await client.close();
});

test("a wrong h fails the stream with IntegrityError before any event of its frame; the chain is all or nothing", async () => {
  const s = digestVectors.streams[0];
  const { client, ws, st } = await startedOn(s);
  ws.push(`{"t":"events","stream":"${s.stream}","seq":1,"items":[{"k":"part_start","p":"text","pk":"text"},"Hello",", "],"h":"${s.events[2].digest}"}`);
  ws.push(`{"t":"events","stream":"${s.stream}","seq":4,"items":[{"k":"text","p":"text","d":"world!"}],"h":"${s.events[3].digest}"}`);
  await assert.rejects(st.wait(), (e) => e instanceof IntegrityError && e.seq === 4 && e.stream === s.stream);
  const seen = [];
  await assert.rejects(async () => {
    for await (const ev of st) seen.push(ev.type);
  }, IntegrityError);
  assert.equal(seen.length, 3, "the events of the verified frame only");
  assert.deepEqual(ws.closed, { code: 1000, reason: "" }, "the connection is dropped (the other streams resume afresh)");
  await client.close();
  // the verifier did not move: the right frame still fits
  const v = new ChainVerifier(s.stream, s.epoch, 3, fromHex(s.events[2].digest));
  const text = (seq, body) => makeEvent(seq, KIND_BY_NAME.text, { part: "text", body });
  assert.throws(() => v.extend([text(4, "world!")], s.events[3].digest), (e) => e instanceof ChainMismatch && e.seq === 4);
  const rest = [text(4, "world."), makeEvent(5, KIND_BY_NAME.part_end, { part: "text" }), makeEvent(6, KIND_BY_NAME.end, { status: "completed", count: 6 })];
  assert.equal(toHex(v.extend(rest, s.final_digest)), s.final_digest);
});

test("an end received before a drop is not acked on the next connection", async () => {
  const s = digestVectors.streams[3]; // only an end
  const connected = [];
  let second;
  const reconnected = new Promise((r) => (second = r));
  const onEvent = (e) => e.kind === "connected" && connected.push(e) === 2 && second();
  const { client, ws, st, sockets, hello } = await startedOn(s, { onEvent });
  ws.readyState = 2; // the connection is closing: nothing the client sends goes out
  ws.push(`{"t":"events","stream":"${s.stream}","seq":1,"items":[{"k":"end","st":"cancelled","n":1,"err":"cancelled by the client"}],"h":"${s.final_digest}"}`);
  await assert.rejects(st.wait(), StreamFailed);
  ws.onclose({ code: 1006, reason: "" });
  const ws2 = await hello(1);
  ws2.push(`{"t":"welcome","session":"s2","heartbeat_ms":1000,"epoch":"${s.epoch}"}`);
  await reconnected;
  assert.deepEqual(ws2.sent.map((f) => f.t), ["hello"], "no ack, start or resume for the ended stream");
  assert.equal(sockets.length, 2);
  await client.close();
});
