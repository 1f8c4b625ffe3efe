/**
 * Frames of protocol v2 (docs/reference/protocol.md §19): the frames of v1 as
 * MessagePack arrays `[tag, field, …]` in binary messages, trailing fields equal to
 * their default left out. Decoding gives the v1 frame objects (the session is the
 * same for both versions), plus `handle` on `started`/`resumed`; `events` names its
 * stream by handle, carries its items as arrays (`eventsOfV2`) and `h` as 8 raw
 * bytes (16 in the frame with `end`). Mirrors `unbroken/protocol/frames_v2.py`.
 */
import { ProtocolError } from "./errors.js";
import {
  CHUNK_KIND,
  CLIENT_FRAMES,
  CloseCode,
  DEFAULT_LIMITS,
  F,
  Kind,
  LIMIT_FIELDS,
  PART_ID,
  REQUIRED,
  SERVER_FRAMES,
  STATUSES,
  bad,
  isAgent,
  isEpoch,
  isSeq,
  isStreamId,
  type Check,
  type ClientFrame,
  type Event,
  type Field,
  type KindByte,
} from "./frames.js";
import { Reader, pack, unpack } from "./msgpack.js";

/** Capability (v2): the server may send a large message deflated, `[13, bin]` (§19.6). */
export const CAP_ZLIB = "zlib";
export const T_BATCH = 0;
export const T_ZLIB = 13;

const isHandle: Check = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const isBin = (n: number): Check => (v) => v instanceof Uint8Array && v.length === n;
/** `h` of `events`: the first 8 bytes of the chain value, or all 16 (§19.4). */
const isFrameH: Check = (v) => v instanceof Uint8Array && (v.length === 8 || v.length === 16);
const isLive2: Check = (v) =>
  Array.isArray(v) &&
  v.length <= 10_000 &&
  v.every(
    (it) =>
      Array.isArray(it) &&
      (it.length === 5 || it.length === 6) &&
      isStreamId(it[0]) &&
      isAgent(it[1]) &&
      isEpoch(it[2]) &&
      isSeq(it[3]) &&
      isBin(16)(it[4]) &&
      (it.length === 5 || it[5] === "running"),
  );

/** The fields of v1's frame `t`, in the v2 order `names`, some replaced. */
function pick(table: Record<string, readonly Field[]>, t: string, names: string, extra: Record<string, Field> = {}): [string, readonly Field[]] {
  return [t, names ? names.split(" ").map((n) => extra[n] ?? table[t].find((f) => f[0] === n)!) : []];
}
const S = (t: string, names: string, extra?: Record<string, Field>) => pick(SERVER_FRAMES, t, names, extra);
const C = (t: string, names: string, extra?: Record<string, Field>) => pick(CLIENT_FRAMES, t, names, extra);
const handle = F("handle", isHandle);

/** Server → client frames by tag (§19.3). */
export const SERVER_TAGS: Record<number, [string, readonly Field[]]> = {
  1: S("events", "handle seq items h", { handle, h: F("h", isFrameH) }),
  2: S("welcome", "session heartbeat_ms epoch limits caps anon auth_exp"),
  3: S("started", "req stream epoch handle", { handle }),
  4: S("resumed", "stream handle from head status", { handle }),
  5: S("gone", "stream reason message"),
  6: S("resync", "stream reason"),
  7: S("error", "code message stream req retry_after_ms"),
  8: S("hb", ""),
  9: S("pong", "n"),
  10: S("auth_expiring", "in_ms"),
  11: S("refreshed", "exp"),
  12: S("streams", "n items", { items: F("items", isLive2, []) }),
};

/** Client → server frames by tag (§19.2). */
export const CLIENT_TAGS: Record<number, [string, readonly Field[]]> = {
  16: C("hello", "caps token anon"),
  17: C("start", "req agent input", { input: F("input", (v) => typeof v === "string" && v.length > 0, "null") }),
  18: C("resume", "stream after epoch h", { h: F("h", (v) => v === null || isBin(16)(v), null) }),
  19: C("ack", "stream seq"),
  20: C("cancel", "stream"),
  21: C("refresh", "token"),
  22: C("ping", "n"),
  23: C("list", "n"),
};
const TAG_OF: Record<string, number> = {};
for (const table of [SERVER_TAGS, CLIENT_TAGS]) for (const [tag, [t]] of Object.entries(table)) TAG_OF[t] = +tag;

const hex = (b: Uint8Array) => Array.from(b, (x) => (x < 16 ? "0" : "") + x.toString(16)).join("");

/** A decoded MessagePack array as the frame it is in `table` (v1 field names,
 * defaults filled in; `streams` items and `resume.h` as v1 has them, hex). */
export function frameOf(v: unknown, table: Record<number, [string, readonly Field[]]>, side: string): Record<string, unknown> {
  if (!Array.isArray(v) || v.length === 0 || typeof v[0] !== "number") bad("malformed frame: not a MessagePack array starting with a tag");
  const spec = Object.prototype.hasOwnProperty.call(table, v[0]) ? table[v[0]] : undefined;
  if (spec === undefined) bad(`unknown ${side} frame tag ${v[0]}`);
  const [t, fields] = spec;
  if (v.length - 1 > fields.length) bad(`${t}: ${v.length - 1} fields, at most ${fields.length}`);
  const out: Record<string, unknown> = { t };
  for (let i = 0; i < fields.length; i++) {
    const [wire, check, dflt] = fields[i];
    if (i + 1 >= v.length) {
      if (dflt === REQUIRED) bad(`${t}: missing field ${wire}`);
      out[wire] = dflt;
      continue;
    }
    const x = v[i + 1];
    if (!check(x)) bad(`${t}: invalid ${wire}`);
    out[wire] = x instanceof Number ? +x : x;
  }
  if (t === "welcome") out.limits = { ...DEFAULT_LIMITS, ...(out.limits as object) };
  else if (t === "streams") {
    out.items = (out.items as unknown[][]).map(([stream, agent, epoch, head, h]) => ({ stream, agent, epoch, head, h: hex(h as Uint8Array), status: "running" }));
  } else if (t === "resume" && out.h !== null) out.h = hex(out.h as Uint8Array);
  return out;
}

/** A server frame (one element of a message), already unpacked. */
export function decodeServerV2(v: unknown): Record<string, unknown> {
  return frameOf(v, SERVER_TAGS, "server");
}

/** Is this message a `zlib` frame (to inflate first)? */
export function isZlib(message: Uint8Array): boolean {
  return message[0] === 0x92 && message[1] === T_ZLIB;
}

/** The frames of one binary message, unpacked, each with its size in bytes: the
 * message itself, or the frames of a batch `[0, [frame, …]]`. */
export function framesOfV2(message: Uint8Array, maxSize: number): [unknown, number][] {
  if (message.length > maxSize) bad(`frame of ${message.length} bytes is over the limit of ${maxSize}`, CloseCode.TOO_BIG);
  if (message[0] === 0x92 && message[1] === T_BATCH) {
    const r = new Reader(message, 2);
    const n = r.arrayHeader();
    if (n < 1) bad("malformed frame: a batch that is not a non-empty array of frames");
    const out: [unknown, number][] = new Array(n);
    for (let i = 0; i < n; i++) {
      const p = r.pos;
      const v = r.value(1);
      if (Array.isArray(v) && (v[0] === T_BATCH || v[0] === T_ZLIB)) bad("malformed frame: a batch or zlib frame inside a batch");
      out[i] = [v, r.pos - p];
    }
    if (r.pos !== message.length) bad("malformed frame: trailing bytes after the batch");
    return out;
  }
  return [[unpack(message), message.length]];
}

/** The message a `zlib` frame holds, inflated to at most `maxSize` bytes (1009
 * beyond); not zlib, truncated, or holding another `zlib` frame: 4000. Uses the
 * platform's `DecompressionStream("deflate")` (RFC 1950), so it is async. */
export async function inflate(message: Uint8Array, maxSize: number): Promise<Uint8Array> {
  const v = unpack(message);
  if (!Array.isArray(v) || v.length !== 2 || !(v[1] instanceof Uint8Array)) bad("malformed frame: a zlib frame is [13, bin]");
  const ds = new DecompressionStream("deflate");
  const w = ds.writable.getWriter();
  w.write(v[1] as Uint8Array<ArrayBuffer>).catch(() => undefined);
  w.close().catch(() => undefined);
  const r = ds.readable.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await r.read();
      if (done) break;
      n += value.length;
      if (n > maxSize) {
        r.cancel().catch(() => undefined);
        bad(`compressed frame inflates past the limit of ${maxSize} bytes`, CloseCode.TOO_BIG);
      }
      parts.push(value);
    }
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    bad(`malformed frame: zlib: ${(e as Error)?.message ?? e}`);
  }
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  if (isZlib(out)) bad("malformed frame: a zlib frame inside a zlib frame");
  return out;
}

/** A stream's current part, carried from one `events` frame to the next (§19.4). */
export interface Carried {
  part: string;
  kind: number;
}

/**
 * The events of a v2 `events` frame's `items`, the first being event `seq`, with
 * the same rules as v1 (`eventsOf`) and the current part `carried` in from the
 * stream's last frame (updated when the whole frame is valid). Throws
 * `ProtocolError` (4000).
 */
export function eventsOfV2(seq: number, items: unknown[], partKinds: Map<string, string>, carried: Carried): Event[] {
  const n = items.length;
  const out: Event[] = new Array(n);
  let current = carried.part;
  let kind = carried.kind;
  const last = n - 1;
  for (let i = 0; i < n; i++, seq++) {
    const it = items[i];
    if (typeof it === "string") {
      if (kind === 0) bad(`events: item ${i} is a bare chunk with no current part`);
      out[i] = { seq, kind: kind as KindByte, part: current, body: it, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
      continue;
    }
    if (!Array.isArray(it)) bad(`events: item ${i} is not a string or an array`);
    const k = it[0];
    const len = it.length;
    const p = it[1];
    if (k === Kind.END) {
      const err = len > 3 ? it[3] : "";
      if (len < 3 || len > 4 || !STATUSES.includes(p) || typeof err !== "string") bad(`events: item ${i}: an invalid end`);
      if (i !== last) bad("events: end is not the last item of its frame");
      if (it[2] !== seq) bad(`events: end says ${it[2]} events but is event ${seq}`);
      out[i] = { seq, kind: Kind.END, part: "", body: "", partKind: "", mime: "", schema: "", status: p, error: err, count: seq };
      continue;
    }
    if (typeof p !== "string" || !PART_ID.test(p)) bad(`events: item ${i} has an invalid part id`);
    if (k === Kind.TEXT || k === Kind.JSON || k === Kind.DATA) {
      const d = it[2];
      if (len !== 3 || typeof d !== "string") bad(`events: item ${i}: an invalid chunk`);
      const known = partKinds.get(p);
      if (known !== undefined && CHUNK_KIND[known] !== k) bad(`events: a chunk of kind ${k} of part ${p} started as ${known}`);
      current = p;
      kind = k;
      out[i] = { seq, kind: k, part: p, body: d, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
    } else if (k === Kind.PART_START) {
      const pk = it[2];
      const mime = len > 3 ? it[3] : "";
      const schema = len > 4 ? it[4] : "";
      if (len < 3 || len > 5 || CHUNK_KIND[pk] === undefined) bad(`events: item ${i}: part_start with a bad part kind`);
      if (typeof mime !== "string" || mime.length > 4096 || mime.includes("\0")) bad("events: part_start with an invalid mime");
      if (typeof schema !== "string") bad("events: part_start with an invalid schema");
      partKinds.set(p, pk);
      current = p;
      kind = CHUNK_KIND[pk];
      out[i] = { seq, kind: Kind.PART_START, part: p, body: "", partKind: pk, mime, schema, status: "", error: "", count: 0 };
    } else if (k === Kind.PART_END) {
      const err = len > 2 ? it[2] : "";
      if (len > 3 || typeof err !== "string") bad("events: part_end with an invalid err");
      if (current === p) {
        current = "";
        kind = 0;
      }
      out[i] = { seq, kind: Kind.PART_END, part: p, body: "", partKind: "", mime: "", schema: "", status: "", error: err, count: 0 };
    } else bad(`events: item ${i} of unknown kind`);
  }
  if (seq - 1 > 2 ** 53) bad("events: seq beyond 2^53");
  carried.part = current;
  carried.kind = kind;
  return out;
}

function isDefault(v: unknown, dflt: unknown): boolean {
  return v === dflt || (Array.isArray(v) && Array.isArray(dflt) && v.length === 0 && dflt.length === 0);
}

/** A frame (either side, v1 field names; `started`/`resumed`/`events` with their
 * `handle`) as the bytes of a v2 message: trailing fields equal to their default
 * left out (except `ping`/`pong`'s `n`), as the Python encoder does. */
export function encodeV2(frame: ClientFrame | Record<string, unknown>): Uint8Array {
  const f = frame as Record<string, unknown>;
  const tag = TAG_OF[f.t as string];
  if (tag === undefined) throw new ProtocolError(`cannot encode frame type ${String(f.t)}`);
  const fields = (SERVER_TAGS[tag] ?? CLIENT_TAGS[tag])[1];
  const out: unknown[] = [tag];
  for (const [wire, , dflt] of fields) {
    let v = f[wire] === undefined && dflt !== REQUIRED ? dflt : f[wire];
    if (wire === "limits") {
      const lim: Record<string, unknown> = {};
      for (const k of LIMIT_FIELDS) {
        const x = (v as Record<string, unknown> | undefined)?.[k];
        if (x !== undefined && x !== DEFAULT_LIMITS[k]) lim[k] = x;
      }
      v = lim;
    } else if (f.t === "start" && wire === "input") v = JSON.stringify(f.input ?? null);
    else if (wire === "h" && typeof v === "string") v = fromHexBytes(v);
    else if (f.t === "streams" && wire === "items") {
      v = (v as Record<string, unknown>[]).map((i) => [i.stream, i.agent, i.epoch, i.head, fromHexBytes(i.h as string), i.status ?? "running"]);
    }
    out.push(v);
  }
  if (f.t !== "ping" && f.t !== "pong" && f.t !== "events") {
    const fs = fields;
    let n = out.length;
    while (n > 1) {
      const [wire, , dflt] = fs[n - 2];
      const v = out[n - 1];
      const isDflt = wire === "limits" ? Object.keys(v as object).length === 0 : wire === "input" ? v === "null" : dflt !== REQUIRED && isDefault(v, dflt);
      if (!isDflt) break;
      n--;
    }
    out.length = n;
  }
  return pack(out);
}

function fromHexBytes(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}
