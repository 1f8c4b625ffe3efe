/**
 * Frames of protocol v1 (docs/reference/protocol.md §3–§6): field types, decoding
 * with every check of the spec (a bad frame is a `ProtocolError` with its close
 * code), encoding that omits defaults in the spec's field order, and the compact
 * `events` items. Mirrors `unbroken/protocol/frames.py` and `items.py`.
 */
import { ProtocolError } from "./errors.js";

/** The versions this client speaks, newest first (`"v2"`, `"v1"`): offered as the
 * subprotocols `unbroken.v2`, `unbroken.v1` (§2). */
export const VERSIONS = ["v2", "v1"] as const;
export const SUBPROTOCOLS = ["unbroken.v2", "unbroken.v1"] as const;
export const CAP_BATCH = "batch";
/** Capability: in-band token refresh (`auth_expiring`, `refresh`, `refreshed`; §18). */
export const CAP_REFRESH = "refresh";
/** Capability: "list my live streams" (`list`, `streams`; §2). */
export const CAP_STREAMS = "streams";
/** The client takes `error unavailable` about one stream (its log unreachable for now)
 * and resumes it after `retry_after_ms`; without it the server closes 1011 instead. */
export const CAP_UNAVAILABLE = "unavailable";
export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
export const MAX_SEQ = 9007199254740992; // 2 ** 53

/** WebSocket close codes of protocol v1 (§13.2). */
export enum CloseCode {
  NORMAL = 1000,
  GOING_AWAY = 1001,
  INVALID_DATA = 1007,
  TOO_BIG = 1009,
  INTERNAL = 1011,
  SERVICE_RESTART = 1012,
  BAD_FRAME = 4000,
  AUTH_REQUIRED = 4001,
  AUTH_FAILED = 4002,
  FORBIDDEN = 4003,
  HEARTBEAT_TIMEOUT = 4004,
  UNSUPPORTED_VERSION = 4005,
  OVERLOADED = 4008,
  TOKEN_EXPIRED = 4010,
}

/** One-line meaning of each close code. */
export const CLOSE_CODE_MEANING: Record<number, string> = {
  1000: "normal closure",
  1001: "going away",
  1007: "invalid UTF-8",
  1009: "frame too big",
  1011: "server error",
  1012: "server restarting",
  4000: "bad frame",
  4001: "hello with a token required",
  4002: "credentials refused",
  4003: "forbidden",
  4004: "peer silent",
  4005: "no common protocol version",
  4008: "server full",
  4010: "token expired",
};

// ------------------------------------------------------------------ events
/** Event kinds and their byte in the digest (§6.1). */
// (TypeScript enums: esbuild writes their values in where they are used)
export enum Kind { TEXT = 1, JSON = 2, DATA = 3, PART_START = 4, PART_END = 5, END = 6 }
export type KindByte = Kind;
export const KIND_BY_NAME: Record<string, KindByte> = {
  text: 1,
  json: 2,
  data: 3,
  part_start: 4,
  part_end: 5,
  end: 6,
};
export const NAME_BY_KIND: Record<number, string> = {
  1: "text",
  2: "json",
  3: "data",
  4: "part_start",
  5: "part_end",
  6: "end",
};

/** One event of a stream (fields not used by its kind are empty). */
export interface Event {
  seq: number;
  kind: KindByte;
  part: string;
  body: string;
  partKind: string;
  mime: string;
  schema: string;
  status: string;
  error: string;
  count: number;
}

export function makeEvent(seq: number, kind: KindByte, f: Partial<Event> = {}): Event {
  return {
    seq,
    kind,
    part: f.part ?? "",
    body: f.body ?? "",
    partKind: f.partKind ?? "",
    mime: f.mime ?? "",
    schema: f.schema ?? "",
    status: f.status ?? "",
    error: f.error ?? "",
    count: f.count ?? 0,
  };
}

// ------------------------------------------------------------------ field types
export type Check = (v: unknown) => boolean;
const re = /* @__NO_SIDE_EFFECTS__ */ (pattern: RegExp): Check => (v) => typeof v === "string" && pattern.test(v);
const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;
export const isStreamId = re(STREAM_ID);
export const isEpoch = re(STREAM_ID);
export const isAnon = re(STREAM_ID);
export const isReq = re(/^[\x21-\x7e]{1,128}$/);
export const isAgent = re(/^[A-Za-z0-9_.:-]{1,128}$/);
export const PART_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
const isHex16 = re(/^[0-9a-f]{32}$/);
export const isSeq: Check = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_SEQ;
export const isSeq1: Check = (v) => isSeq(v) && (v as number) >= 1;
export const isPositive: Check = (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 1;
export const isNonNegative: Check = (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
export const maxLen = /* @__NO_SIDE_EFFECTS__ */ (n: number): Check => (v) => typeof v === "string" && v.length <= n;
export const isToken = maxLen(16384);
export const isShortText = maxLen(4096);
export const orNull = /* @__NO_SIDE_EFFECTS__ */ (c: Check): Check => (v) => v === null || c(v);
export const oneOf = /* @__NO_SIDE_EFFECTS__ */ (...values: string[]): Check => (v) => typeof v === "string" && values.includes(v);
export const isCaps: Check = (v) =>
  Array.isArray(v) && v.length <= 32 && v.every((s) => typeof s === "string" && s.length <= 64);
const isAny: Check = () => true;
/** Unix seconds (a JWT NumericDate: an integer, or a number with a fraction). */
export const isUnixTime: Check = (v) => {
  const x = v instanceof Number ? +v : v; // (v2: a float is a Number object)
  return typeof x === "number" && Number.isFinite(x) && x >= 0;
};

/** `limits` of `welcome` (§5): every field a positive integer. */
export interface Limits {
  max_frame: number;
  window: number;
  max_streams: number;
  max_chunk: number;
  max_client_frame: number;
}
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  max_frame: 16777216,
  window: 1048576,
  max_streams: 1000,
  max_chunk: 1048576,
  max_client_frame: 1048576,
});
export const LIMIT_FIELDS = /* @__PURE__ */ Object.keys(DEFAULT_LIMITS) as (keyof Limits)[];

export const REQUIRED = Symbol("required");
export type Field = readonly [wire: string, check: Check, dflt: unknown];
export const F = /* @__NO_SIDE_EFFECTS__ */ (wire: string, check: Check, dflt: unknown = REQUIRED): Field => [wire, check, dflt];

export const CLIENT_FRAMES: Record<string, readonly Field[]> = {
  hello: [F("caps", isCaps, []), F("token", orNull(isToken), null), F("anon", orNull(isAnon), null)],
  start: [F("req", isReq), F("agent", isAgent), F("input", isAny, null)],
  resume: [F("stream", isStreamId), F("after", isSeq), F("epoch", isEpoch), F("h", orNull(isHex16), null)],
  ack: [F("stream", isStreamId), F("seq", isSeq)],
  cancel: [F("stream", isStreamId)],
  refresh: [F("token", isToken)],
  ping: [F("n", isSeq, 0)],
  list: [F("n", isSeq, 0)],
};

export const isLimits: Check = (v) => {
  // a map: JSON's object, MessagePack's (no prototype); not an array, bytes or a float (a Number)
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  if (proto !== null && proto !== Object.prototype) return false;
  for (const k of LIMIT_FIELDS) {
    const x = (v as Record<string, unknown>)[k];
    if (x !== undefined && !isPositive(x)) return false;
  }
  return true;
};

/** An item of `streams` (cap `streams`): exactly these fields, a run that has not ended. */
const LIVE_STREAM: Record<string, Check> = {
  stream: isStreamId,
  agent: isAgent,
  epoch: isEpoch,
  head: isSeq,
  h: isHex16,
  status: oneOf("running"),
};
const isLiveStreams: Check = (v) =>
  Array.isArray(v) &&
  v.length <= 10_000 &&
  v.every(
    (it) =>
      typeof it === "object" &&
      it !== null &&
      !Array.isArray(it) &&
      Object.keys(it).length === 6 &&
      Object.entries(LIVE_STREAM).every(([k, check]) => check((it as Record<string, unknown>)[k])),
  );

export const SERVER_FRAMES: Record<string, readonly Field[]> = {
  welcome: [
    F("session", maxLen(64)),
    F("heartbeat_ms", isPositive),
    F("epoch", isEpoch),
    F("limits", isLimits, DEFAULT_LIMITS),
    F("caps", isCaps, []),
    F("anon", orNull(isAnon), null),
    F("auth_exp", orNull(isUnixTime), null),
  ],
  started: [F("req", isReq), F("stream", isStreamId), F("epoch", isEpoch)],
  events: [
    F("stream", isStreamId),
    F("seq", isSeq1),
    F("items", (v) => Array.isArray(v) && v.length > 0),
    F("h", isHex16),
  ],
  resumed: [
    F("stream", isStreamId),
    F("from", isSeq),
    F("head", isSeq, 0),
    F("status", oneOf("running", "completed", "failed", "cancelled"), "running"),
  ],
  gone: [
    F("stream", isStreamId),
    F("reason", oneOf("unknown", "expired", "epoch", "diverged", "forbidden")),
    F("message", isShortText, ""),
  ],
  resync: [F("stream", isStreamId), F("reason", isShortText, "")],
  error: [
    F("code", maxLen(64)),
    F("message", isShortText, ""),
    F("stream", orNull(isStreamId), null),
    F("req", orNull(isReq), null),
    F("retry_after_ms", orNull(isNonNegative), null),
  ],
  hb: [],
  pong: [F("n", isSeq, 0)],
  auth_expiring: [F("in_ms", isNonNegative)],
  refreshed: [F("exp", orNull(isUnixTime), null)],
  streams: [F("n", isSeq, 0), F("items", isLiveStreams, [])],
};

/** The fields (unix times) that may carry a fraction, by frame type. */
const TIME_FIELD: Record<string, RegExp> = { welcome: /"auth_exp":[0-9.eE+-]+/g, refreshed: /"exp":[0-9.eE+-]+/g };

// ------------------------------------------------------------------ frame types
export interface Hello { t: "hello"; caps: string[]; token: string | null; anon: string | null }
export interface Start { t: "start"; req: string; agent: string; input: unknown }
export interface Resume { t: "resume"; stream: string; after: number; epoch: string; h: string | null }
export interface Ack { t: "ack"; stream: string; seq: number }
export interface Cancel { t: "cancel"; stream: string }
export interface Refresh { t: "refresh"; token: string }
export interface Ping { t: "ping"; n: number }
export interface List { t: "list"; n: number }
export type ClientFrame = Hello | Start | Resume | Ack | Cancel | Refresh | Ping | List;

export interface Welcome {
  t: "welcome";
  session: string;
  heartbeat_ms: number;
  epoch: string;
  limits: Limits;
  caps: string[];
  anon: string | null;
  /** When the connection's credentials expire (unix seconds); `null`: never. */
  auth_exp: number | null;
}
export interface Started { t: "started"; req: string; stream: string; epoch: string; /** v2 */ handle?: number }
export type Item = string | Record<string, unknown>;
export interface Events { t: "events"; stream: string; seq: number; items: Item[]; h: string }
export interface Resumed { t: "resumed"; stream: string; from: number; head: number; status: string; /** v2 */ handle?: number }
export interface Gone { t: "gone"; stream: string; reason: string; message: string }
export interface Resync { t: "resync"; stream: string; reason: string }
export interface ErrorFrame {
  t: "error";
  code: string;
  message: string;
  stream: string | null;
  req: string | null;
  retry_after_ms: number | null;
}
export interface Hb { t: "hb" }
export interface Pong { t: "pong"; n: number }
export interface AuthExpiring { t: "auth_expiring"; in_ms: number }
export interface Refreshed { t: "refreshed"; exp: number | null }
export interface LiveStream { stream: string; agent: string; epoch: string; head: number; h: string; status: "running" }
export interface Streams { t: "streams"; n: number; items: LiveStream[] }
export type ServerFrame = Welcome | Started | Events | Resumed | Gone | Resync | ErrorFrame | Hb | Pong | AuthExpiring | Refreshed | Streams;

// ------------------------------------------------------------------ decoding
const utf8 = /* @__PURE__ */ new TextEncoder();
const strictDecoder = /* @__PURE__ */ new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** UTF-8 length of `s` (exact; only computed when the quick bound is not enough). */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // 2 bytes: +1; 3 bytes: +2; a surrogate pair (4 bytes): +1 per half
    if (c >= 0x80) n += c >= 0x800 && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return n;
}

/** Is there a number literal outside strings that is no integer of protocol v1: one
 * with a fraction or exponent (`1.0`), or beyond 2^53 (JSON.parse would round it
 * into range)? Strings are skipped, so bodies cost a jump. */
function hasNonIntegerNumber(text: string): boolean {
  let i = 0;
  const n = text.length;
  while (i < n) {
    const q = text.indexOf('"', i);
    const end = q < 0 ? n : q;
    for (let j = i + 1; j < end; j++) {
      const c = text.charCodeAt(j);
      if (c === 46 || c === 101 || c === 69) {
        const p = text.charCodeAt(j - 1);
        if (p >= 48 && p <= 57) return true;
      } else if (c >= 48 && c <= 57) {
        let e = j;
        while (e < end && text.charCodeAt(e) >= 48 && text.charCodeAt(e) <= 57) e++;
        if (e - j >= 16 && BigInt(text.slice(j, e)) > 2n ** 53n) return true;
        j = e - 1;
      }
    }
    if (q < 0) return false;
    // skip the string: find its closing quote (not escaped)
    let k = q + 1;
    for (;;) {
      const c = text.indexOf('"', k);
      if (c < 0) return false; // JSON.parse already accepted it: cannot happen
      let b = c - 1;
      while (text.charCodeAt(b) === 92) b--;
      if ((c - 1 - b) % 2 === 0) {
        i = c + 1;
        break;
      }
      k = c + 1;
    }
  }
  return false;
}

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

function wellFormed(v: unknown): boolean {
  if (typeof v === "string") {
    const s = v as string & { isWellFormed?: () => boolean };
    if (s.isWellFormed) return s.isWellFormed();
    return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(v);
  }
  if (Array.isArray(v)) return v.every(wellFormed);
  if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) if (!wellFormed(k) || !wellFormed(x)) return false;
  }
  return true;
}

function finite(v: unknown): boolean {
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every(finite);
  if (v && typeof v === "object") return Object.values(v).every(finite);
  return true;
}

export function bad(message: string, code: number = CloseCode.BAD_FRAME): never {
  throw new ProtocolError(message, code);
}

function decode<T>(
  data: string | Uint8Array | ArrayBuffer,
  maxSize: number,
  table: Record<string, readonly Field[]>,
  side: string,
): T {
  let text: string;
  if (typeof data === "string") {
    text = data;
    if (text.length > maxSize / 3 && utf8Length(text) > maxSize) {
      bad(`frame of ${utf8Length(text)} bytes is over the limit of ${maxSize}`, CloseCode.TOO_BIG);
    }
  } else {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    if (bytes.length > maxSize) {
      bad(`frame of ${bytes.length} bytes is over the limit of ${maxSize}`, CloseCode.TOO_BIG);
    }
    try {
      text = strictDecoder.decode(bytes);
    } catch {
      bad("message is not valid UTF-8", CloseCode.INVALID_DATA);
    }
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    bad(`frame is not JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) bad("frame is not a JSON object");
  const o = obj as Record<string, unknown>;
  const t = o.t;
  if (typeof t !== "string") bad("frame has no string field t");
  const fields = Object.prototype.hasOwnProperty.call(table, t) ? table[t] : undefined;
  if (fields === undefined) bad(`unknown ${side} frame type ${JSON.stringify(t).slice(0, 80)}`);
  // integers only: a number with a fraction or exponent is only legal in start.input
  if (t !== "start" && hasNonIntegerNumber(text)) {
    // a unix time may have a fraction; every other number is an integer
    const times = TIME_FIELD[t];
    if (times === undefined || hasNonIntegerNumber(text.replace(times, (m) => m.slice(0, m.indexOf(":") + 1) + "0"))) {
      bad(`${t}: a number that is not an integer`);
    }
  }
  if (SURROGATE_ESCAPE.test(text) && !wellFormed(o)) bad(`${t}: a string with an unpaired surrogate`);
  const out: Record<string, unknown> = { t };
  for (const [wire, check, dflt] of fields) {
    const v = o[wire];
    if (v === undefined) {
      if (dflt === REQUIRED) bad(`${t}: missing field ${wire}`);
      out[wire] = dflt;
      continue;
    }
    if (!check(v)) bad(`${t}: invalid ${wire}`);
    out[wire] = v;
  }
  if (t === "welcome") out.limits = { ...DEFAULT_LIMITS, ...(out.limits as object) };
  if (t === "start" && !finite(out.input)) bad("start: a number out of range in input");
  return out as T;
}

/** Decode a frame a server sent (a text message, or bytes checked as UTF-8). */
export function decodeServer(data: string | Uint8Array | ArrayBuffer, maxSize = DEFAULT_MAX_FRAME): ServerFrame {
  return decode<ServerFrame>(data, maxSize, SERVER_FRAMES, "server");
}

/** Decode a frame a client sent (used by tests and tools; a client never needs it). */
export function decodeClient(data: string | Uint8Array | ArrayBuffer, maxSize = DEFAULT_MAX_FRAME): ClientFrame {
  return decode<ClientFrame>(data, maxSize, CLIENT_FRAMES, "client");
}

// ------------------------------------------------------------------ encoding
function isDefault(v: unknown, dflt: unknown): boolean {
  if (v === dflt) return true;
  if (Array.isArray(v) && Array.isArray(dflt)) return v.length === 0 && dflt.length === 0;
  return false;
}

/** Encode a frame (either side) as the exact text this protocol's encoder produces:
 * fields in the spec's order, every field equal to its default omitted. */
export function encode(frame: ClientFrame | ServerFrame | Record<string, unknown>): string {
  const f = frame as Record<string, unknown>;
  const t = f.t as string;
  const fields = CLIENT_FRAMES[t] ?? SERVER_FRAMES[t];
  if (fields === undefined) throw new ProtocolError(`cannot encode frame type ${t}`);
  const out: Record<string, unknown> = { t };
  for (const [wire, , dflt] of fields) {
    let v = f[wire];
    if (v === undefined || (dflt !== REQUIRED && isDefault(v, dflt))) continue;
    if (wire === "limits") {
      const lim: Record<string, unknown> = {};
      for (const k of LIMIT_FIELDS) {
        const x = (v as Record<string, unknown>)[k];
        if (x !== undefined && x !== DEFAULT_LIMITS[k]) lim[k] = x;
      }
      if (Object.keys(lim).length === 0) continue;
      v = lim;
    }
    out[wire] = v;
  }
  return JSON.stringify(out);
}

// ------------------------------------------------------------------ items
/** (no prototype: `CHUNK_KIND["constructor"]` is undefined, not a kind) */
export const CHUNK_KIND: Record<string, KindByte> = Object.assign(Object.create(null), { text: 1, json: 2, data: 3 });
export const STATUSES = ["completed", "failed", "cancelled"];

/**
 * The events an `events` frame stands for (§6.2), checking every rule: a bare
 * string needs a current part, a chunk's kind matches its part's, `end` is last and
 * its `n` is its seq. `partKinds` (part id → kind, kept for the whole stream) is
 * updated by `part_start`. Throws `ProtocolError` (4000).
 */
export function eventsOf(frame: Events, partKinds: Map<string, string> = new Map()): Event[] {
  const items = frame.items;
  const out: Event[] = new Array(items.length);
  let current = "";
  let currentKind: KindByte | 0 = 0;
  let seq = frame.seq;
  const last = items.length - 1;
  for (let i = 0; i <= last; i++, seq++) {
    const item = items[i];
    if (typeof item === "string") {
      if (currentKind === 0) bad(`events: item ${i} is a bare chunk with no current part`);
      out[i] = { seq, kind: currentKind, part: current, body: item, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
      continue;
    }
    if (typeof item !== "object" || item === null || Array.isArray(item)) bad(`events: item ${i} is not a string or an object`);
    const k = item.k;
    const p = item.p;
    if (k === "end") {
      const st = item.st;
      const n = item.n;
      const err = item.err ?? "";
      if (!STATUSES.includes(st as string)) bad(`events: end with an unknown status`);
      if (!isSeq(n)) bad("events: end with an invalid n");
      if (typeof err !== "string") bad("events: end with an invalid err");
      if (i !== last) bad("events: end is not the last item of its frame");
      if (n !== seq) bad(`events: end says ${n} events but is event ${seq}`);
      out[i] = makeEvent(seq, Kind.END, { status: st as string, error: err, count: n as number });
      continue;
    }
    if (typeof p !== "string" || !PART_ID.test(p)) bad(`events: item ${i} has an invalid part id`);
    const chunk = typeof k === "string" ? CHUNK_KIND[k] : undefined;
    if (chunk !== undefined) {
      const d = item.d;
      if (typeof d !== "string") bad(`events: item ${i} has no string d`);
      const known = partKinds.get(p);
      if (known !== undefined && known !== k) bad(`events: a ${k as string} chunk of part ${p} started as ${known}`);
      current = p;
      currentKind = chunk;
      out[i] = { seq, kind: chunk, part: p, body: d, partKind: "", mime: "", schema: "", status: "", error: "", count: 0 };
    } else if (k === "part_start") {
      const pk = item.pk;
      const mime = item.mime ?? "";
      const schema = item.schema ?? "";
      if (typeof pk !== "string" || CHUNK_KIND[pk] === undefined) bad(`events: part_start with a bad part kind`);
      if (typeof mime !== "string" || mime.length > 4096 || mime.includes("\0")) bad("events: part_start with an invalid mime");
      if (typeof schema !== "string") bad("events: part_start with an invalid schema");
      partKinds.set(p, pk as string);
      current = p;
      currentKind = CHUNK_KIND[pk as string];
      out[i] = makeEvent(seq, Kind.PART_START, { part: p, partKind: pk as string, mime, schema });
    } else if (k === "part_end") {
      const err = item.err ?? "";
      if (typeof err !== "string") bad("events: part_end with an invalid err");
      if (current === p) {
        current = "";
        currentKind = 0;
      }
      out[i] = makeEvent(seq, Kind.PART_END, { part: p, error: err });
    } else {
      bad(`events: item ${i} of unknown kind`);
    }
  }
  if (seq - 1 > MAX_SEQ) bad("events: seq beyond 2^53");
  return out;
}

/** The `items` of a frame holding `events` (bare strings for chunks of the current
 * part): what a server sends; here for tests and tools. */
export function encodeItems(events: readonly Event[]): Item[] {
  const items: Item[] = [];
  let current = "";
  let currentKind = 0;
  for (const ev of events) {
    switch (ev.kind) {
      case Kind.TEXT:
      case Kind.JSON:
      case Kind.DATA:
        if (ev.part === current && ev.kind === currentKind) items.push(ev.body);
        else {
          items.push({ k: NAME_BY_KIND[ev.kind], p: ev.part, d: ev.body });
          current = ev.part;
          currentKind = ev.kind;
        }
        break;
      case Kind.PART_START: {
        const it: Record<string, unknown> = { k: "part_start", p: ev.part, pk: ev.partKind };
        if (ev.mime) it.mime = ev.mime;
        if (ev.schema) it.schema = ev.schema;
        items.push(it);
        current = ev.part;
        currentKind = CHUNK_KIND[ev.partKind];
        break;
      }
      case Kind.PART_END: {
        const it: Record<string, unknown> = { k: "part_end", p: ev.part };
        if (ev.error) it.err = ev.error;
        items.push(it);
        if (current === ev.part) {
          current = "";
          currentKind = 0;
        }
        break;
      }
      default: {
        const it: Record<string, unknown> = { k: "end", st: ev.status, n: ev.count };
        if (ev.error) it.err = ev.error;
        items.push(it);
      }
    }
  }
  return items;
}

export { utf8 as utf8Encoder };
