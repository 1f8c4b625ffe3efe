// The golden vectors of protocol v2 (tests/vectors/frames_v2.json, invalid_v2.json),
// the same files the Python implementation is held to
// (tests/unit/protocol/test_vectors_v2.py): same frames, same digests, same rejections.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import {
  ChainVerifier,
  KIND_BY_NAME,
  DEFAULT_LIMITS,
  ProtocolError,
  decodeClientV2,
  decodeServerV2,
  encodeV2,
  encodeClientV2,
  packFrame,
  seededRng,
  encodeItemsV2,
  eventsOfV2,
  framesOfV2,
  fromHex,
  inflate,
  isZlib,
  makeEvent,
  pack,
  stepEvent,
  toHex,
  unpack,
  frameOf,
  SERVER_TAGS,
} from "../dist/testing.js";

const load = (name) => JSON.parse(readFileSync(new URL(`../../tests/vectors/${name}`, import.meta.url), "utf8"));
const V2 = load("frames_v2.json");
const INVALID = load("invalid_v2.json");
const V1 = new Map(load("frames.json").frames.map((r) => [r.name, r]));
const MAX = 1 << 20;

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

const withoutHandle = ({ handle, ...rest }) => rest;
const full = (fields) => (fields.t === "welcome" ? { ...fields, limits: { ...DEFAULT_LIMITS, ...fields.limits } } : fields);

test("v2 vectors: every v1 frame has its v2 form", () => {
  assert.equal(V2.subprotocol, "unbroken.v2");
  const names = new Set(V2.frames.map((r) => r.name));
  for (const name of V1.keys()) assert.ok(names.has(name), name);
});

test("v2 vectors: every frame means what the v1 frame means and encodes back byte for byte", () => {
  let n = 0;
  let clients = 0;
  for (const r of V2.frames.filter((r) => r.fields && !r.events)) {
    const wire = fromHex(r.frame_hex);
    assert.deepEqual(r.fields, V1.get(r.name).fields, r.name);
    const [[value, size]] = framesOfV2(wire, MAX);
    assert.equal(size, wire.length);
    if (r.direction === "client") {
      assert.deepEqual(decodeClientV2(wire), r.fields, r.name);
      // (the page bundle's own client-only encoder: the same bytes)
      assert.equal(toHex(encodeClientV2(r.fields)), r.frame_hex, `${r.name} (encodeClientV2)`);
      clients++;
    } else {
      const frame = decodeServerV2(value);
      assert.deepEqual(withoutHandle(frame), full(r.fields), r.name);
      if ("handle" in r) assert.equal(frame.handle, r.handle, r.name);
    }
    const toEncode = "handle" in r ? { ...r.fields, handle: r.handle } : r.fields;
    assert.equal(toHex(encodeV2(toEncode)), r.frame_hex, r.name);
    n++;
  }
  assert.ok(n >= 40, `${n} frames`);
  assert.ok(clients >= 10, `${clients} client frames`);
});

test("v2 vectors: events frames decode to their events, chain to h, and rebuild from the events", () => {
  const rows = V2.frames.filter((r) => r.events);
  assert.ok(rows.length >= 5);
  for (const r of rows) {
    const wire = fromHex(r.frame_hex);
    const events = r.events.map(eventOf);
    let h = fromHex(r.digest_before);
    for (const ev of events) h = stepEvent(h, ev);
    assert.equal(toHex(h), r.fields.h, r.name);
    const final = events.at(-1).kind === 6;
    assert.equal(r.h_bytes, final ? 16 : 8, r.name);
    // decoded: the same events; h is the digest's first h_bytes bytes
    const [[value]] = framesOfV2(wire, MAX);
    const frame = decodeServerV2(value);
    assert.equal(frame.handle, r.handle);
    assert.equal(frame.seq, events[0].seq);
    assert.equal(toHex(frame.h), r.fields.h.slice(0, 2 * r.h_bytes), r.name);
    const partKinds = new Map();
    for (const e of r.events) if (e.kind === "part_start") partKinds.set(e.part, e.part_kind);
    const carried = { part: "", kind: 0 };
    assert.deepEqual(eventsOfV2(frame.seq, frame.items, new Map(), carried), events, r.name);
    // verified against the short (or full) h, from the digest before the frame
    const v = new ChainVerifier(r.stream, r.epoch, events[0].seq - 1, events[0].seq === 1 ? null : fromHex(r.digest_before));
    v.extend(events, frame.h);
    assert.equal(toHex(v.digest), r.fields.h);
    // a wrong event fails the 8-byte check too
    const altered = events.map((e, i) => (i === 0 ? { ...e, body: e.body + "x", error: e.error + "x", schema: e.schema + "x" } : e));
    const w = new ChainVerifier(r.stream, r.epoch, events[0].seq - 1, events[0].seq === 1 ? null : fromHex(r.digest_before));
    assert.throws(() => w.extend(altered, frame.h), /digest mismatch/, r.name);
    // rebuilt from its events: the same bytes
    const rebuilt = encodeV2({ t: "events", handle: r.handle, seq: events[0].seq, items: encodeItemsV2(events, { part: "", kind: 0 }), h: final ? h : h.slice(0, 8) });
    assert.equal(toHex(rebuilt), r.frame_hex, r.name);
  }
});

test("v2: the current part carries from one events frame to the next", () => {
  const evs = [
    makeEvent(1, 4, { part: "a", partKind: "text" }),
    makeEvent(2, 1, { part: "a", body: "x" }),
    makeEvent(3, 1, { part: "a", body: "y" }),
    makeEvent(4, 1, { part: "a", body: "z" }),
    makeEvent(5, 5, { part: "a" }),
  ];
  const send = { part: "", kind: 0 };
  const recv = { part: "", kind: 0 };
  const kinds = new Map();
  const got = [];
  for (const one of evs) {
    const items = encodeItemsV2([one], send);
    if (one.seq === 3 || one.seq === 4) assert.deepEqual(items, [one.body], "a bare chunk, the part carried");
    got.push(...eventsOfV2(one.seq, unpack(pack(items)), kinds, recv));
  }
  assert.deepEqual(got, evs);
  // a fresh attachment starts with no current part: a bare chunk is refused
  assert.throws(() => eventsOfV2(3, ["y"], kinds, { part: "", kind: 0 }), (e) => e instanceof ProtocolError && e.closeCode === 4000);
});

test("v2 vectors: a batch splits into its frames", () => {
  const [r] = V2.frames.filter((r) => r.frames);
  const frames = framesOfV2(fromHex(r.frame_hex), MAX);
  assert.deepEqual(
    frames.map(([v]) => decodeServerV2(v)),
    r.frames,
  );
  assert.deepEqual(
    frames.map(([, n]) => n),
    [2, 3],
  );
});

test("v2 vectors: a zlib frame inflates (DecompressionStream) to its batch", async () => {
  const [r] = V2.frames.filter((r) => r.inflated_hex);
  const wire = fromHex(r.frame_hex);
  assert.ok(isZlib(wire));
  const out = await inflate(wire, MAX);
  assert.equal(toHex(out), r.inflated_hex);
  const frames = framesOfV2(out, MAX);
  assert.equal(frames.length, 400);
  assert.deepEqual(decodeServerV2(frames[399][0]), { t: "pong", n: 399 });
  // over the frame limit once inflated: 1009 (the message itself is small)
  await assert.rejects(inflate(wire, 1000), (e) => e instanceof ProtocolError && e.closeCode === 1009);
  // truncated, not zlib, or a zlib frame inside one: 4000 (bytes after the end of
  // the zlib data: Chromium's DecompressionStream refuses them, Node 20's ignores them)
  const data = unpack(wire)[1];
  for (const bad of [data.slice(0, data.length - 3), data.slice(2)]) {
    await assert.rejects(inflate(pack([13, bad]), MAX), (e) => e instanceof ProtocolError && e.closeCode === 4000);
  }
  const nested = pack([13, new Uint8Array(deflateSync(wire))]);
  await assert.rejects(inflate(nested, MAX), (e) => e instanceof ProtocolError && e.closeCode === 4000 && /inside a zlib/.test(e.message));
});

test("v2 invalid vectors: every input is refused with its close code", async () => {
  let n = 0;
  for (const r of INVALID.frames) {
    const wire = fromHex(r.frame_hex);
    const size = r.max_size ?? MAX;
    await assert.rejects(
      async () => {
        if (r.direction === "client") return decodeClientV2(wire, size);
        const message = isZlib(wire) ? await inflate(wire, size) : wire;
        for (const [v] of framesOfV2(message, size)) {
          const f = decodeServerV2(v);
          if (f.t === "events") eventsOfV2(f.seq, f.items, new Map(), { part: "", kind: 0 });
        }
      },
      (e) => e instanceof ProtocolError && e.closeCode === r.close_code && !e.message.includes("\n"),
      `${r.name}: expected close ${r.close_code}`,
    );
    n++;
  }
  assert.equal(n, INVALID.frames.length);
});

test("MessagePack: every type the protocol uses round-trips, in its smallest form", () => {
  const cases = [
    [0, "00"], [127, "7f"], [128, "cc80"], [255, "ccff"], [256, "cd0100"], [65535, "cdffff"], [65536, "ce00010000"],
    [2 ** 32 - 1, "ceffffffff"], [2 ** 32, "cf0000000100000000"], [2 ** 53, "cf0020000000000000"],
    [-1, "ff"], [-32, "e0"], [-33, "d0df"], [-128, "d080"], [-129, "d1ff7f"], [-32768, "d18000"], [-32769, "d2ffff7fff"],
    [-(2 ** 31), "d280000000"], [-(2 ** 31) - 1, "d3ffffffff7fffffff"],
    [null, "c0"], [false, "c2"], [true, "c3"],
    ["", "a0"], ["a".repeat(31), "bf" + "61".repeat(31)], ["a".repeat(32), "d920" + "61".repeat(32)],
    ["a".repeat(256), "da0100" + "61".repeat(256)], ["é", "a2c3a9"],
    [[], "90"], [[1, [2]], "920191" + "02"],
  ];
  for (const [v, hex] of cases) {
    assert.equal(toHex(pack(v)), hex, JSON.stringify(v));
    assert.deepEqual(unpack(fromHex(hex)), v, hex);
  }
  const big = "x".repeat(70000);
  assert.equal(unpack(pack(big)), big);
  const arr = Array.from({ length: 70000 }, (_, i) => i % 7);
  assert.deepEqual(unpack(pack(arr)), arr);
  assert.deepEqual(unpack(pack(new Uint8Array(300).fill(7))), new Uint8Array(300).fill(7));
  assert.equal(+unpack(fromHex("cb3ff8000000000000")), 1.5);
  assert.equal(typeof unpack(fromHex("cb3ff8000000000000")), "object", "a float is a Number object: integer fields refuse it");
  assert.equal(+unpack(fromHex("ca3fc00000")), 1.5);
  assert.deepEqual({ ...unpack(fromHex("81a16101")) }, { a: 1 });
  // Unicode of every width, long and short
  for (const s of ["ü", "€", "𝄞", "a€b𝄞c".repeat(20), "\u0000\u007f"]) assert.equal(unpack(pack(s)), s);
  // random values survive a round trip
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const gen = (d) => {
    const k = Math.floor(rnd() * (d > 3 ? 4 : 6));
    if (k === 0) return Math.floor((rnd() - 0.5) * 2 ** (rnd() * 54));
    if (k === 1) return Array.from({ length: Math.floor(rnd() * 50) }, () => String.fromCodePoint(Math.floor(rnd() * 0x2ffff) & ~0x800 | 0x20)).join("").replace(/[\ud800-\udfff]/g, "");
    if (k === 2) return null;
    if (k === 3) return new Uint8Array(Math.floor(rnd() * 40)).map(() => rnd() * 256);
    return Array.from({ length: Math.floor(rnd() * 20) }, () => gen(d + 1));
  };
  for (let i = 0; i < 2000; i++) {
    const v = gen(0);
    assert.deepEqual(unpack(pack(v)), v);
  }
});

test("MessagePack: malformed input is refused (4000), never a crash", () => {
  const bad = ["", "c1", "91", "92c0", "d9", "d905616263", "c4ff00", "dc0005", "c7", "d4", "81c0c0", "a2c328", "cf0020000000000001", "cfffffffffffffffff", "0000", "9" + "1".repeat(1) + "91".repeat(40) + "c0"];
  for (const hex of bad) {
    assert.throws(() => unpack(fromHex(hex)), (e) => e instanceof ProtocolError && e.closeCode === 4000, hex);
  }
  // random bytes: a ProtocolError or a value, nothing else
  let seed = 3;
  for (let i = 0; i < 5000; i++) {
    const b = new Uint8Array(1 + (i % 40));
    for (let j = 0; j < b.length; j++) b[j] = (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 255;
    try {
      unpack(b);
    } catch (e) {
      assert.ok(e instanceof ProtocolError, String(e));
    }
  }
});

test("packFrame (the page bundle's encoder of client frames) gives pack's bytes for everything a client frame holds", () => {
  const r = seededRng(19);
  const ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53];
  const value = (depth) => {
    const k = Math.floor(r() * (depth > 2 ? 4 : 5));
    if (k === 0) return null;
    if (k === 1) return r() < 0.5 ? ints[Math.floor(r() * ints.length)] : Math.floor(r() * 2 ** (r() * 53));
    if (k === 2) return "é€x".repeat(Math.floor(r() ** 3 * 30000)).slice(0, Math.floor(r() ** 3 * 70000));
    if (k === 3) return new Uint8Array(Math.floor(r() ** 3 * 70000)).fill(7);
    return Array.from({ length: Math.floor(r() ** 2 * 20) }, () => value(depth + 1));
  };
  for (let i = 0; i < 300; i++) {
    const v = [Math.floor(r() * 24), value(0), value(1)];
    assert.deepEqual(packFrame(v), pack(v), `case ${i}`);
  }
  const long = Array.from({ length: 70000 }, (_, i) => i);
  assert.deepEqual(packFrame(long), pack(long));
  assert.throws(() => packFrame([1.5]), TypeError);
  assert.throws(() => packFrame([-1]), TypeError);
});

test("decodeServerV2 (one decoder per frame) accepts and refuses what the field tables do, on 30k mutated server frames", () => {
  // the tables (frames2-peer.ts: the encoder's, and the decoder's before), with the
  // decoder's two rewrites of a welcome's limits and of streams' items
  const table = (v) => {
    const out = frameOf(v, SERVER_TAGS, "server");
    if (out.t === "welcome") out.limits = { ...DEFAULT_LIMITS, ...out.limits };
    if (out.t === "streams") out.items = out.items.map(([stream, agent, epoch, head, h]) => ({ stream, agent, epoch, head, h: toHex(h), status: "running" }));
    return out;
  };
  const map = (o) => Object.assign(Object.create(null), o);
  const bin = (n) => new Uint8Array(n).fill(n);
  const pool = [null, -1, 0, 1, 7, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 - 1, 1.5, new Number(1.5), new Number(-1), true, "", "x", "a b", "x".repeat(64), "x".repeat(65), "x".repeat(4097),
    "running", "completed", "expired", "bogus", [], ["a"], [[]], ["x".repeat(65)], Array(33).fill("a"), bin(8), bin(12), bin(16), map({}), map({ window: 0 }), map({ window: 5 }), map({ other: "q" }),
    [["s", "ag", "ep", 3, bin(16)]], [["s", "ag", "ep", 3, bin(16), "running"]], [["s", "ag", "ep", 3, bin(16), "done"]], [["s", "a g", "ep", 3, bin(16)]], [["s", "ag", "ep", -3, bin(16)]], [[1, 6]],
    // nils and wrong types where an array or a map is read, nested
    [null], [[null]], [new Number(2)], [map({})], [bin(16)], [["s", null, "ep", 3, bin(16)]], [["s", "ag", "ep", 3, null]], [["s", "ag", "ep", new Number(3), bin(16)]],
    map({ window: null }), map({ window: new Number(2) }), map({ window: "5" }), map({ window: [] }), map({ constructor: 1 }), map({ __proto__: 1 })];
  // a copy of `x` with one element, at any depth, replaced by one of the pool
  const nested = (x, depth = 0) => {
    if (!Array.isArray(x) || x.length === 0 || depth > 3) return pick(pool);
    const y = [...x];
    const at = Math.floor(r() * y.length);
    y[at] = r() < 0.5 ? pick(pool) : nested(y[at], depth + 1);
    return y;
  };
  const bases = V2.frames.filter((f) => f.direction === "server" && !f.frames && !f.inflated_hex).map((f) => unpack(fromHex(f.frame_hex)));
  for (let t = 0; t <= 14; t++) bases.push([t]);
  const r = seededRng(41);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const outcome = (decode, v) => {
    try {
      return JSON.stringify(decode(v), (k, x) => (x instanceof Uint8Array ? `bin ${toHex(x)}` : x));
    } catch (e) {
      assert.ok(e instanceof ProtocolError && e.closeCode === 4000 && !e.message.includes("\n"), String(e));
      return "refused";
    }
  };
  let refused = 0;
  for (let i = 0; i < 30_000; i++) {
    const v = [...pick(bases)];
    const grow = r() < 0.3;
    if (!grow && r() < 0.5 && v.length > 1) v.length = 1 + Math.floor(r() * (v.length - 1));
    for (let j = Math.floor(r() * 3); j > 0; j--) {
      const at = (r() < 0.05 ? 0 : 1) * (1 + Math.floor(r() * (v.length - (grow ? 0 : 1))));
      v[at] = r() < 0.3 && Array.isArray(v[at]) ? nested(v[at]) : pick(pool);
    }
    for (let j = 0; j < v.length; j++) if (!(j in v)) v[j] = null;
    const want = outcome(table, v);
    assert.equal(outcome(decodeServerV2, v), want, JSON.stringify(v, (k, x) => (x instanceof Uint8Array ? `bin ${toHex(x)}` : x)));
    if (want === "refused") refused++;
  }
  assert.ok(refused > 10_000 && refused < 29_000, `${refused} refused`);
  for (const v of [[2, "s", 400, "ep", bin(8)], [2, "s", 400, "ep", new Number(1.5)], [2, "s", 400, "ep", [1]], [12, 1, [null]], [12, 1, [7]], [12, 1, [map({})]], [12, 1, [["s", "ag", "ep", 3, null]]]])
    assert.throws(() => decodeServerV2(v), (e) => e instanceof ProtocolError && e.closeCode === 4000, `tag ${v[0]}`);
});

test("eventsOfV2 refuses nils and wrong types at any depth with a ProtocolError (never a TypeError), on 20k mutated items", () => {
  const r = seededRng(43);
  const pool = [null, undefined, 0, 1, 4, 6, -1, 1.5, new Number(4), true, "", "x", "p", "text", "constructor", "__proto__", "toString", "completed", [], [null], ["text"], [4], Object.create(null), new Uint8Array(3)];
  const pick = (a) => a[Math.floor(r() * a.length)];
  const fresh = () => {
    const x = pick(pool);
    return Array.isArray(x) ? [...x] : x;
  };
  const bases = [
    ["x"],
    [[1, "p", "x"]],
    [[4, "p", "text"], "x", [5, "p"]],
    [[4, "p", "json", "application/json", "{}"], [2, "p", "{}"]],
    [[5, "p", "err"]],
    [[6, "completed", 1]],
    [[6, "failed", 1, "boom"]],
  ];
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    const items = structuredClone(pick(bases));
    for (let j = 1 + Math.floor(r() * 2); j > 0; j--) {
      const at = Math.floor(r() * items.length);
      if (Array.isArray(items[at]) && r() < 0.7) items[at][Math.floor(r() * (items[at].length + 1))] = fresh();
      else items[at] = fresh();
    }
    let events;
    try {
      events = eventsOfV2(1, items, new Map(), { part: "p", kind: 1 });
    } catch (e) {
      if (!(e instanceof ProtocolError && e.closeCode === 4000)) assert.fail(`${String(e)}: ${JSON.stringify(items)}`);
      refused++;
      continue;
    }
    for (const e of events)
      for (const k of ["part", "body", "partKind", "mime", "schema", "status", "error"]) if (typeof e[k] !== "string") assert.fail(`${k} of ${JSON.stringify(items)}`);
  }
  assert.ok(refused > 5_000 && refused < 19_900, `${refused} refused`);
});
