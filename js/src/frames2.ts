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
  CloseCode,
  DEFAULT_LIMITS,
  F,
  Kind,
  PART_ID,
  REQUIRED,
  STATUSES,
  bad,
  isAgent,
  isAnon,
  isCaps,
  isEpoch,
  isLimits,
  isNonNegative,
  isPositive,
  isReq,
  isSeq,
  isSeq1,
  isShortText,
  isStreamId,
  isUnixTime,
  maxLen,
  oneOf,
  orNull,
  type Check,
  type ClientFrame,
  type Event,
  type Field,
  type KindByte,
} from "./frames.js";
import { Reader, packFrame, unpack } from "./msgpack.js";

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

const handle = F("handle", isHandle);
const stream = F("stream", isStreamId);
const epoch = F("epoch", isEpoch);
const n = F("n", isSeq, 0);
const T = (t: string, ...fields: Field[]): [string, readonly Field[]] => [t, fields];

/** Server → client frames by tag (§19.3): v1's frames and field checks, in v2's
 * field order (v1's own tables are the v1 codec's, frames.ts). */
export const SERVER_TAGS: Record<number, [string, readonly Field[]]> = {
  1: T("events", handle, F("seq", isSeq1), F("items", (v) => Array.isArray(v) && v.length > 0), F("h", isFrameH)),
  2: T(
    "welcome",
    F("session", maxLen(64)),
    F("heartbeat_ms", isPositive),
    epoch,
    F("limits", isLimits, DEFAULT_LIMITS),
    F("caps", isCaps, []),
    F("anon", orNull(isAnon), null),
    F("auth_exp", orNull(isUnixTime), null),
  ),
  3: T("started", F("req", isReq), stream, epoch, handle),
  4: T("resumed", stream, handle, F("from", isSeq), F("head", isSeq, 0), F("status", oneOf("running", "completed", "failed", "cancelled"), "running")),
  5: T("gone", stream, F("reason", oneOf("unknown", "expired", "epoch", "diverged", "forbidden")), F("message", isShortText, "")),
  6: T("resync", stream, F("reason", isShortText, "")),
  7: T("error", F("code", maxLen(64)), F("message", isShortText, ""), F("stream", orNull(isStreamId), null), F("req", orNull(isReq), null), F("retry_after_ms", orNull(isNonNegative), null)),
  8: T("hb"),
  9: T("pong", n),
  10: T("auth_expiring", F("in_ms", isNonNegative)),
  11: T("refreshed", F("exp", orNull(isUnixTime), null)),
  12: T("streams", n, F("items", isLive2, [])),
};

const hex = (b: Uint8Array) => Array.from(b, (x) => (x < 16 ? "0" : "") + x.toString(16)).join("");

/** A decoded MessagePack array as the frame it is in `table` (v1 field names,
 * defaults filled in; `streams` items and `resume.h` as v1 has them, hex). */
export function frameOf(v: unknown, table: Record<number, [string, readonly Field[]]>, side: string): Record<string, unknown> {
  if (!Array.isArray(v) || v.length === 0 || typeof v[0] !== "number") bad("malformed frame: no tag");
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
    if (n < 1) bad("malformed frame: empty batch");
    const out: [unknown, number][] = new Array(n);
    for (let i = 0; i < n; i++) {
      const p = r.pos;
      const v = r.value(1);
      if (Array.isArray(v) && (v[0] === T_BATCH || v[0] === T_ZLIB)) bad("malformed frame: nested batch");
      out[i] = [v, r.pos - p];
    }
    if (r.pos !== message.length) bad("malformed frame: trailing bytes");
    return out;
  }
  return [[unpack(message), message.length]];
}

/** The message a `zlib` frame holds, inflated to at most `maxSize` bytes (1009
 * beyond); not zlib, truncated, or holding another `zlib` frame: 4000. Uses the
 * platform's `DecompressionStream("deflate")` (RFC 1950), so it is async. */
export async function inflate(message: Uint8Array, maxSize: number): Promise<Uint8Array> {
  const v = unpack(message);
  if (!Array.isArray(v) || v.length !== 2 || !(v[1] instanceof Uint8Array)) bad("malformed frame: bad zlib frame");
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
        bad(`inflates past ${maxSize} bytes`, CloseCode.TOO_BIG);
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
  if (isZlib(out)) bad("malformed frame: zlib inside a zlib frame");
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
      if (kind === 0) bad(`events: item ${i}: no current part`);
      out[i] = { seq, kind: kind as KindByte, part: current, body: it, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
      continue;
    }
    if (!Array.isArray(it)) bad(`events: item ${i}: bad type`);
    const k = it[0];
    const len = it.length;
    const p = it[1];
    if (k === Kind.END) {
      const err = len > 3 ? it[3] : "";
      if (len < 3 || len > 4 || !STATUSES.includes(p) || typeof err !== "string") bad(`events: item ${i}: an invalid end`);
      if (i !== last) bad("events: end not last");
      if (it[2] !== seq) bad(`events: end says ${it[2]}, is ${seq}`);
      out[i] = { seq, kind: Kind.END, part: "", body: "", partKind: "", mime: "", schema: "", status: p, error: err, count: seq };
      continue;
    }
    if (typeof p !== "string" || !PART_ID.test(p)) bad(`events: item ${i}: bad part id`);
    if (k === Kind.TEXT || k === Kind.JSON || k === Kind.DATA) {
      const d = it[2];
      if (len !== 3 || typeof d !== "string") bad(`events: item ${i}: an invalid chunk`);
      const known = partKinds.get(p);
      if (known !== undefined && CHUNK_KIND[known] !== k) bad(`events: part ${p} is ${known}, not ${k}`);
      current = p;
      kind = k;
      out[i] = { seq, kind: k, part: p, body: d, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
    } else if (k === Kind.PART_START) {
      const pk = it[2];
      const mime = len > 3 ? it[3] : "";
      const schema = len > 4 ? it[4] : "";
      if (len < 3 || len > 5 || CHUNK_KIND[pk] === undefined) bad(`events: item ${i}: bad part kind`);
      if (typeof mime !== "string" || mime.length > 4096 || mime.includes("\0")) bad("events: bad mime");
      if (typeof schema !== "string") bad("events: bad schema");
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

/** Client frames: tag and fields in v2's order; `?`: trailing ones equal to their
 * default are left out (`OPTIONAL`), as the Python encoder does (§19.2). */
const CLIENT_FIELDS: Record<string, string> = {
  hello: "16 caps? token? anon?",
  start: "17 req agent input?",
  resume: "18 stream after epoch h?",
  ack: "19 stream seq",
  cancel: "20 stream",
  refresh: "21 token",
  ping: "22 n",
  list: "23 n?",
};

/** A client frame (v1 field names) as the bytes of a v2 message: `start`'s input as
 * JSON text, `resume`'s `h` as 16 bytes, trailing optional fields at their default
 * (`[]`, `null`, input `"null"`, list's `n` 0) left out. */
export function encodeClientV2(frame: ClientFrame): Uint8Array {
  const f = frame as unknown as Record<string, unknown>;
  const spec = CLIENT_FIELDS[f.t as string];
  if (spec === undefined) throw new ProtocolError(`cannot encode frame type ${String(f.t)}`);
  const [tag, ...names] = spec.split(" ");
  const out: unknown[] = [+tag];
  let keep = 1;
  for (const name of names) {
    const wire = name.replace("?", "");
    let v = f[wire] ?? (wire === "caps" ? [] : wire === "n" ? 0 : null);
    if (wire === "input") v = JSON.stringify(v);
    else if (wire === "h" && typeof v === "string") v = fromHexBytes(v);
    out.push(v);
    const dflt = name !== wire && (wire === "input" ? v === "null" : wire === "n" ? v === 0 : wire === "caps" ? (v as unknown[]).length === 0 : v === null);
    if (!dflt) keep = out.length;
  }
  out.length = keep;
  return packFrame(out);
}

export function fromHexBytes(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}
