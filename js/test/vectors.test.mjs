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
  ClientSession,
  DEFAULT_LIMITS,
} from "../dist/testing.js";

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

test("a client session verifies the worked example of the spec and refuses a wrong h", () => {
  const s = digestVectors.streams[0]; // "hello"
  const session = new ClientSession();
  session.connect(null);
  session.receive(`{"t":"welcome","session":"c0ffee","heartbeat_ms":1000,"epoch":"${s.epoch}"}`);
  session.start("req-1", "echo", { text: "Hello, world." });
  session.receive(`{"t":"started","req":"req-1","stream":"${s.stream}","epoch":"${s.epoch}"}`);
  const out = session.receive(
    `{"t":"events","stream":"${s.stream}","seq":1,"items":[{"k":"part_start","p":"text","pk":"text"},"Hello",", "],"h":"${s.events[2].digest}"}`,
  );
  assert.equal(out.kind, "events");
  assert.equal(toHex(out.digest), "79b14d8d1cce6b3c894dfba29329e966");
  const wrong = `{"t":"events","stream":"${s.stream}","seq":4,"items":[{"k":"text","p":"text","d":"world!"}],"h":"${s.events[3].digest}"}`;
  assert.throws(() => session.receive(wrong), (e) => e instanceof IntegrityError && e.seq === 4);
  // the verifier did not move: the right frame still fits
  const right = `{"t":"events","stream":"${s.stream}","seq":4,"items":[{"k":"text","p":"text","d":"world."},{"k":"part_end","p":"text"},{"k":"end","st":"completed","n":6}],"h":"${s.final_digest}"}`;
  const end = session.receive(right);
  assert.equal(toHex(end.digest), s.final_digest);
  assert.deepEqual(session.takeAcks(0), [{ t: "ack", stream: s.stream, seq: 6 }]);
});

test("an end received before a drop is not acked on the next connection", () => {
  const s = digestVectors.streams[3]; // only an end
  const session = new ClientSession();
  session.connect(null);
  session.receive(`{"t":"welcome","session":"s","heartbeat_ms":1000,"epoch":"${s.epoch}"}`);
  session.start("r", "a", null);
  session.receive(`{"t":"started","req":"r","stream":"${s.stream}","epoch":"${s.epoch}"}`);
  session.receive(`{"t":"events","stream":"${s.stream}","seq":1,"items":[{"k":"end","st":"cancelled","n":1,"err":"cancelled by the client"}],"h":"${s.final_digest}"}`);
  session.connectionLost(); // before the end's ack went out
  session.connect(null);
  session.receive(`{"t":"welcome","session":"s2","heartbeat_ms":1000,"epoch":"${s.epoch}"}`);
  assert.deepEqual(session.afterWelcome(), []);
  assert.deepEqual(session.takeAcks(5), []);
});
