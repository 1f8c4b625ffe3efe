/**
 * What a server, a test or a tool needs of protocol v2 beyond a client (`dist/testing.js`
 * only; the page bundle has `frames2.ts`): the client frames' tags and checks, and
 * the encoder of any frame, either side. Mirrors `unbroken/protocol/frames_v2.py`.
 */
import { ProtocolError } from "./errors.js";
import {
  CLIENT_FRAMES,
  DEFAULT_LIMITS,
  F,
  LIMIT_FIELDS,
  REQUIRED,
  bad,
  isAgent,
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
  isAnon,
  maxLen,
  oneOf,
  orNull,
  type Check,
  type ClientFrame,
  type Field,
} from "./frames.js";
import { fromHex as fromHexBytes } from "./digest.js";
import { pack } from "./msgpack.js";

const isHandle: Check = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const isBin = (n: number): Check => (v) => v instanceof Uint8Array && v.length === n;
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

/** Server → client frames by tag (§19.3) as field tables: v1's frames and field
 * checks in v2's field order (the encoder's; the page bundle decodes each frame by
 * its own code, `decodeServerV2`). */
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

/** A decoded MessagePack array as the frame it is in `table` (v1 field names,
 * defaults filled in; `resume.h` as v1 has it, hex): a client's frames (what a
 * server does; tests and tools). */
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
  if (t === "resume" && out.h !== null) out.h = Array.from(out.h as Uint8Array, (x) => (x < 16 ? "0" : "") + x.toString(16)).join("");
  return out;
}

const isBin16 = (v: unknown) => v instanceof Uint8Array && v.length === 16;

/** The fields of v1's client frame `t`, in the v2 order `names`, some replaced. */
function C(t: string, names: string, extra: Record<string, Field> = {}): [string, readonly Field[]] {
  return [t, names.split(" ").map((n) => extra[n] ?? CLIENT_FRAMES[t].find((f) => f[0] === n)!)];
}

/** Client → server frames by tag (§19.2). */
export const CLIENT_TAGS: Record<number, [string, readonly Field[]]> = {
  16: C("hello", "caps token anon"),
  17: C("start", "req agent input", { input: F("input", (v) => typeof v === "string" && v.length > 0, "null") }),
  18: C("resume", "stream after epoch h", { h: F("h", (v) => v === null || isBin16(v), null) }),
  19: C("ack", "stream seq"),
  20: C("cancel", "stream"),
  21: C("refresh", "token"),
  22: C("ping", "n"),
  23: C("list", "n"),
};

function isDefault(v: unknown, dflt: unknown): boolean {
  return v === dflt || (Array.isArray(v) && Array.isArray(dflt) && v.length === 0 && dflt.length === 0);
}

/** A frame (either side, v1 field names; `started`/`resumed`/`events` with their
 * `handle`) as the bytes of a v2 message: trailing fields equal to their default
 * left out (except `ping`/`pong`'s `n`), as the Python encoder does. */
export function encodeV2(frame: ClientFrame | Record<string, unknown>): Uint8Array {
  const f = frame as Record<string, unknown>;
  let tag = -1;
  for (const table of [SERVER_TAGS, CLIENT_TAGS]) for (const [k, [t]] of Object.entries(table)) if (t === f.t) tag = +k;
  if (tag < 0) throw new ProtocolError(`cannot encode frame type ${String(f.t)}`);
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
    let n = out.length;
    while (n > 1) {
      const [wire, , dflt] = fields[n - 2];
      const v = out[n - 1];
      const isDflt = wire === "limits" ? Object.keys(v as object).length === 0 : wire === "input" ? v === "null" : dflt !== REQUIRED && isDefault(v, dflt);
      if (!isDflt) break;
      n--;
    }
    out.length = n;
  }
  return pack(out);
}
