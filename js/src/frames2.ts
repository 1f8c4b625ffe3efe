/**
 * Frames of protocol v2 (docs/reference/protocol.md §19): the frames of v1 as
 * MessagePack arrays `[tag, field, …]` in binary messages, trailing fields equal to
 * their default left out. Decoding gives the v1 frame objects (the session is the
 * same for both versions), plus `handle` on `started`/`resumed`; `events` names its
 * stream by handle, carries its items as arrays (`eventsOfV2`) and `h` as 8 raw
 * bytes (16 in the frame with `end`). Mirrors `unbroken/protocol/frames_v2.py`.
 */
import { fromHex, toHex } from "./digest.js";
import { ProtocolError } from "./errors.js";
import { CHUNK_KIND, CloseCode, DEFAULT_LIMITS, Kind, PART_ID, STATUSES, bad, isLimits, type ClientFrame, type Event, type KindByte } from "./frames.js";
import { packFrame, unpack, unpackBatch } from "./msgpack.js";

/** Capability (v2): the server may send a large message deflated, `[13, bin]` (§19.6). */
export const CAP_ZLIB = "zlib";
export const T_BATCH = 0;
export const T_ZLIB = 13;

// the field checks of the server frames (§5, §19.3), written out per frame below
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const str = (v: unknown, max: number): v is string => typeof v === "string" && v.length <= max;
const isId = (v: unknown): v is string => typeof v === "string" && ID.test(v);
const isReq = (v: unknown): v is string => typeof v === "string" && /^[\x21-\x7e]{1,128}$/.test(v);
/** an integer in [min, max] (a float is a `Number` object: refused) */
const int = (v: unknown, min = 0, max = 2 ** 53): v is number => typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
/** unix seconds, or null (a float is a `Number` object: unwrapped) */
const time = (v: unknown): number | null => {
  const x = v instanceof Number ? +v : v;
  if (x !== null && !(typeof x === "number" && Number.isFinite(x) && x >= 0)) bad("bad unix time");
  return x;
};
const isBin = (v: unknown, n: number): v is Uint8Array => v instanceof Uint8Array && v.length === n;
const SAFE = Number.MAX_SAFE_INTEGER;

/** A server frame (one element of a message, already unpacked: `[tag, field, …]`) as
 * the v1 frame it is (v1 field names, defaults filled in, `streams` items as v1 has
 * them), plus `handle` on `started`/`resumed`. Each frame is decoded by its own code
 * with every check of §19.3; a bad one is a `ProtocolError` 4000. */
export function decodeServerV2(v: unknown): Record<string, unknown> {
  if (!Array.isArray(v)) bad("malformed frame: no tag");
  const tag = v[0];
  // (the most elements each tag's frame has; not a number, or an unknown tag: undefined)
  if (!(v.length <= (typeof tag === "number" ? [5, 8, 5, 6, 4, 3, 6, 1, 2, 2, 2, 3][tag - 1] : -1))) bad(`unknown server frame tag ${typeof tag === "number" ? tag : typeof tag}, or too many fields`);
  // Each frame's fields, trailing ones left out given their default (a destructuring
  // default: only for a field that is absent, never for a nil); a required field left
  // out is `undefined`, which fails its check.
  let ok: boolean;
  let out: Record<string, unknown>;
  switch (tag) {
    case 1: {
      // handle, seq (from 1), items (at least one), h (8 bytes, or 16)
      const [, handle, seq, items, h] = v;
      ok = int(handle, 0, 0xffffffff) && int(seq, 1) && Array.isArray(items) && items.length > 0 && (isBin(h, 8) || isBin(h, 16));
      out = { t: "events", handle, seq, items, h };
      break;
    }
    case 2: {
      const [, session, heartbeat_ms, epoch, limits = {}, caps = [], anon = null, exp = null] = v;
      // limits: a map (not bytes, nor a float: a Number object), each limit a positive int
      ok = str(session, 64) && int(heartbeat_ms, 1, SAFE) && isId(epoch) && isLimits(limits);
      ok &&= Array.isArray(caps) && caps.length <= 32 && caps.every((c) => str(c, 64)) && (anon === null || isId(anon));
      out = { t: "welcome", session, heartbeat_ms, epoch, limits: { ...DEFAULT_LIMITS, ...limits }, caps, anon, auth_exp: time(exp) };
      break;
    }
    case 3: {
      const [, req, stream, epoch, handle] = v;
      ok = isReq(req) && isId(stream) && isId(epoch) && int(handle, 0, 0xffffffff);
      out = { t: "started", req, stream, epoch, handle };
      break;
    }
    case 4: {
      const [, stream, handle, from, head = 0, status = "running"] = v;
      ok = isId(stream) && int(handle, 0, 0xffffffff) && int(from) && int(head) && (status === "running" || STATUSES.includes(status));
      out = { t: "resumed", stream, handle, from, head, status };
      break;
    }
    case 5: {
      const [, stream, reason, message = ""] = v;
      ok = isId(stream) && ["unknown", "expired", "epoch", "diverged", "forbidden"].includes(reason) && str(message, 4096);
      out = { t: "gone", stream, reason, message };
      break;
    }
    case 6: {
      const [, stream, reason = ""] = v;
      ok = isId(stream) && str(reason, 4096);
      out = { t: "resync", stream, reason };
      break;
    }
    case 7: {
      const [, code, message = "", stream = null, req = null, retry_after_ms = null] = v;
      ok = str(code, 64) && str(message, 4096) && (stream === null || isId(stream)) && (req === null || isReq(req)) && (retry_after_ms === null || int(retry_after_ms, 0, SAFE));
      out = { t: "error", code, message, stream, req, retry_after_ms };
      break;
    }
    case 8:
      ok = true;
      out = { t: "hb" };
      break;
    case 9: {
      const [, n = 0] = v;
      ok = int(n);
      out = { t: "pong", n };
      break;
    }
    case 10: {
      const [, in_ms] = v;
      ok = int(in_ms, 0, SAFE);
      out = { t: "auth_expiring", in_ms };
      break;
    }
    case 11: {
      const [, exp = null] = v;
      ok = true;
      out = { t: "refreshed", exp: time(exp) };
      break;
    }
    default: {
      // 12, streams: n, items (each [stream, agent, epoch, head, h (16 bytes), "running"?])
      const [, n = 0, items = []] = v;
      ok = int(n) && Array.isArray(items) && items.length <= 10_000;
      out = {
        t: "streams",
        n,
        items: !ok
          ? []
          : items.map((it: unknown) => {
              const [stream, agent, epoch, head, h, status = "running"] = Array.isArray(it) ? it : [];
              ok &&= Array.isArray(it) && it.length <= 6 && isId(stream) && typeof agent === "string" && /^[A-Za-z0-9_.:-]{1,128}$/.test(agent) && isId(epoch) && int(head) && isBin(h, 16) && status === "running";
              return { stream, agent, epoch, head, h: ok ? toHex(h) : "", status };
            }),
      };
    }
  }
  if (!ok) bad(`invalid ${out.t} frame`);
  return out;
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
    const out = unpackBatch(message);
    for (const [v] of out) if (Array.isArray(v) && (v[0] === T_BATCH || v[0] === T_ZLIB)) bad("malformed frame: nested batch");
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
  for (let i = 0; i < n; i++, seq++) {
    const it = items[i];
    // the event's fields (its kind's own, the others empty)
    let k: number = kind;
    let part = current;
    let body = "";
    let partKind = "";
    let mime = "";
    let schema = "";
    let status = "";
    let error = "";
    let count = 0;
    if (typeof it === "string") {
      if (kind === 0) bad(`events: item ${i}: no current part`);
      body = it;
    } else {
      if (!Array.isArray(it)) bad(`events: item ${i}: bad type`);
      const len = it.length;
      const p = it[1];
      k = it[0];
      if (k === Kind.END) {
        error = len > 3 ? it[3] : "";
        if (len < 3 || len > 4 || !STATUSES.includes(p) || typeof error !== "string") bad(`events: item ${i}: an invalid end`);
        if (i !== n - 1) bad("events: end not last");
        if (it[2] !== seq) bad(`events: end says ${typeof it[2] === "number" ? it[2] : typeof it[2]}, is ${seq}`);
        part = "";
        status = p;
        count = seq;
      } else {
        if (typeof p !== "string" || !PART_ID.test(p)) bad(`events: item ${i}: bad part id`);
        part = p;
        if (k === Kind.TEXT || k === Kind.JSON || k === Kind.DATA) {
          body = it[2];
          if (len !== 3 || typeof body !== "string") bad(`events: item ${i}: an invalid chunk`);
          const known = partKinds.get(p);
          if (known !== undefined && CHUNK_KIND[known] !== k) bad(`events: part ${p} is ${known}, not ${k}`);
          current = p;
          kind = k;
        } else if (k === Kind.PART_START) {
          partKind = it[2];
          mime = len > 3 ? it[3] : "";
          schema = len > 4 ? it[4] : "";
          if (len < 3 || len > 5 || typeof partKind !== "string" || CHUNK_KIND[partKind] === undefined) bad(`events: item ${i}: bad part kind`);
          if (typeof mime !== "string" || mime.length > 4096 || mime.includes("\0")) bad("events: bad mime");
          if (typeof schema !== "string") bad("events: bad schema");
          partKinds.set(p, partKind);
          current = p;
          kind = CHUNK_KIND[partKind];
        } else if (k === Kind.PART_END) {
          error = len > 2 ? it[2] : "";
          if (len > 3 || typeof error !== "string") bad("events: part_end with an invalid err");
          if (current === p) {
            current = "";
            kind = 0;
          }
        } else bad(`events: item ${i} of unknown kind`);
      }
    }
    out[i] = { seq, kind: k as KindByte, part, body, partKind, mime, schema, status, error, count };
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
    else if (wire === "h" && typeof v === "string") v = fromHex(v);
    out.push(v);
    const dflt = name !== wire && (wire === "input" ? v === "null" : wire === "n" ? v === 0 : wire === "caps" ? (v as unknown[]).length === 0 : v === null);
    if (!dflt) keep = out.length;
  }
  out.length = keep;
  return packFrame(out);
}
