/**
 * MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md), the subset
 * protocol v2 uses (§19): nil, booleans, integers up to 2^53, floats (a unix time
 * with a fraction), `str`, `bin`, arrays and maps with string keys. No extension
 * types. Small on purpose: `@msgpack/msgpack` is 4.2 kB gzip (decode only) to 5.9 kB
 * (both ways) in a bundle; this is about 1 kB, and decodes a token's frame without a
 * `TextDecoder` call (short ASCII strings are read byte by byte).
 *
 * Decoding is strict: anything that is not exactly one well-formed value (truncated,
 * trailing bytes, an unknown or reserved type byte, an extension, invalid UTF-8, a
 * map key that is not a string, an integer beyond 2^53, nesting deeper than 32) is a
 * `ProtocolError` 4000. Floats decode as `Number` objects (`typeof` "object"), so a
 * field that wants an integer refuses `1.0` as msgspec does; `+x` unwraps one.
 */
import { ProtocolError } from "./errors.js";

const td = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const te = new TextEncoder();

function bad(what: string): never {
  throw new ProtocolError(`malformed frame: ${what}`, 4000);
}

// the reader's state: the bytes, where it is, a view of them (one message at a time)
let b: Uint8Array = new Uint8Array(0);
let at = 0;
let dv: DataView = new DataView(b.buffer);

function from(bytes: Uint8Array, pos: number): void {
  b = bytes;
  at = pos;
  dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** `n` more bytes are there (else: truncated); returns where they start. */
function need(n: number): number {
  const p = at;
  if ((at += n) > b.length) bad("truncated MessagePack");
  return p;
}

/** A big-endian unsigned integer of `n` (1, 2, 4) bytes. */
function u(n: number): number {
  const p = need(n);
  return n === 1 ? b[p] : n === 2 ? dv.getUint16(p) : dv.getUint32(p);
}

/** One value. */
function value(depth: number): unknown {
  const c = b[need(1)];
  if (c < 0x80) return c;
  if (c >= 0xe0) return c - 0x100;
  if (c >= 0xa0 && c < 0xc0) return str(c & 31);
  if (c < 0xa0) return list(c & 15, depth, c < 0x90);
  switch (c) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
    case 0xc5:
    case 0xc6: {
      const n = u(1 << (c - 0xc4));
      const p = need(n);
      return b.slice(p, p + n);
    }
    case 0xca:
      return new Number(dv.getFloat32(need(4)));
    case 0xcb:
      return new Number(dv.getFloat64(need(8)));
    case 0xcc:
    case 0xcd:
    case 0xce:
      return u(1 << (c - 0xcc));
    case 0xcf:
    case 0xd3: {
      const p = need(8);
      const lo = dv.getUint32(p + 4);
      const x = (c === 0xcf ? dv.getUint32(p) : dv.getInt32(p)) * 0x100000000 + lo;
      // beyond ±2^53 a number would round into range: refused
      if (Math.abs(x) > 2 ** 53 || (x === 2 ** 53 && lo !== 0)) bad("integer out of range");
      return x;
    }
    case 0xd0:
      return dv.getInt8(need(1));
    case 0xd1:
      return dv.getInt16(need(2));
    case 0xd2:
      return dv.getInt32(need(4));
    case 0xd9:
    case 0xda:
    case 0xdb:
      return str(u(1 << (c - 0xd9)));
    case 0xdc:
    case 0xdd:
    case 0xde:
    case 0xdf:
      // (array or map: 16-bit length at an even type byte, 32-bit at an odd one)
      return list(u(c & 1 ? 4 : 2), depth, c > 0xdd);
  }
  bad(`MessagePack type 0x${c.toString(16)} not used`);
}

function str(n: number): string {
  const p = need(n);
  if (n < 40) {
    // short ASCII (a token): no TextDecoder call
    let s = "";
    for (let i = p; i < p + n; i++) {
      const c = b[i];
      if (c > 0x7f) return utf8(p, n);
      s += String.fromCharCode(c);
    }
    return s;
  }
  return utf8(p, n);
}

function utf8(p: number, n: number): string {
  try {
    return td.decode(b.subarray(p, p + n));
  } catch {
    bad("a string that is not valid UTF-8");
  }
}

/** An array of `n` values, or a map of `n` pairs with string keys. */
function list(n: number, depth: number, map: boolean): unknown {
  if (depth >= 32) bad("nested too deep");
  if ((map ? 2 * n : n) > b.length - at) bad("truncated MessagePack");
  if (map) {
    const out: Record<string, unknown> = Object.create(null);
    for (let i = 0; i < n; i++) {
      const k = value(depth + 1);
      if (typeof k !== "string") bad("a map key that is not a string");
      out[k] = value(depth + 1);
    }
    return out;
  }
  const out = new Array<unknown>(n);
  for (let i = 0; i < n; i++) out[i] = value(depth + 1);
  return out;
}

/** The one value `bytes` hold (trailing bytes are refused). */
export function unpack(bytes: Uint8Array): unknown {
  from(bytes, 0);
  const v = value(0);
  if (at !== bytes.length) bad("trailing bytes after the value");
  return v;
}

/** The elements of the array at byte 2 of `bytes` (a batch `[0, [frame, …]]`, its
 * first two bytes already checked), each with its size in bytes; it must end
 * `bytes` and hold at least one. */
export function unpackBatch(bytes: Uint8Array): [unknown, number][] {
  from(bytes, 2);
  const c = bytes[2];
  const n = c >= 0x90 && c < 0xa0 ? (at++, c & 15) : c === 0xdc || c === 0xdd ? (at++, u(c & 1 ? 4 : 2)) : 0;
  if (n < 1 || n > bytes.length - at) bad("empty or truncated batch");
  const out: [unknown, number][] = new Array(n);
  for (let i = 0; i < n; i++) {
    const p = at;
    out[i] = [value(1), 0];
    out[i][1] = at - p;
  }
  if (at !== bytes.length) bad("trailing bytes");
  return out;
}

/** Encodes values as msgspec does (the smallest form of each): strings, integers,
 * `null`, booleans, `Uint8Array` (as `bin`), arrays and plain objects (maps). */
export function pack(value: unknown): Uint8Array {
  const out: number[] = [];
  const head = (small: number, big: number, n: number, max: number) => {
    if (n <= max) out.push(small | n);
    else if (n < 0x100 && big === 0xd9) out.push(0xd9, n);
    else if (n < 0x10000) out.push(big + (big === 0xd9 ? 1 : 0), n >> 8, n & 255);
    else out.push(big + (big === 0xd9 ? 2 : 1), n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255);
  };
  const put = (v: unknown): void => {
    if (v === null || v === undefined) out.push(0xc0);
    else if (v === false || v === true) out.push(v ? 0xc3 : 0xc2);
    else if (typeof v === "number") {
      if (!Number.isSafeInteger(v) && !(v === 2 ** 53)) {
        out.push(0xcb);
        const d = new DataView(new ArrayBuffer(8));
        d.setFloat64(0, v);
        out.push(...new Uint8Array(d.buffer));
      } else if (v >= 0) {
        if (v < 0x80) out.push(v);
        else if (v < 0x100) out.push(0xcc, v);
        else if (v < 0x10000) out.push(0xcd, v >> 8, v & 255);
        else if (v < 0x100000000) out.push(0xce, v >>> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255);
        else {
          const hi = Math.floor(v / 0x100000000);
          out.push(0xcf, hi >>> 24, (hi >> 16) & 255, (hi >> 8) & 255, hi & 255, v >>> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255);
        }
      } else if (v >= -32) out.push(v & 255);
      else if (v >= -128) out.push(0xd0, v & 255);
      else if (v >= -32768) out.push(0xd1, (v >> 8) & 255, v & 255);
      else if (v >= -(2 ** 31)) out.push(0xd2, (v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255);
      else {
        const hi = Math.floor(v / 0x100000000);
        const lo = v - hi * 0x100000000;
        out.push(0xd3, (hi >> 24) & 255, (hi >> 16) & 255, (hi >> 8) & 255, hi & 255, lo >>> 24, (lo >> 16) & 255, (lo >> 8) & 255, lo & 255);
      }
    } else if (typeof v === "string") {
      const bytes = te.encode(v);
      // fixstr up to 31, then str8 / str16 / str32
      head(0xa0, 0xd9, bytes.length, 31);
      for (const x of bytes) out.push(x);
    } else if (v instanceof Uint8Array) {
      const n = v.length;
      if (n < 0x100) out.push(0xc4, n);
      else if (n < 0x10000) out.push(0xc5, n >> 8, n & 255);
      else out.push(0xc6, n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255);
      for (const x of v) out.push(x);
    } else if (Array.isArray(v)) {
      head(0x90, 0xdc, v.length, 15);
      for (const x of v) put(x);
    } else if (typeof v === "object") {
      const entries = Object.entries(v as object);
      head(0x80, 0xde, entries.length, 15);
      for (const [k, x] of entries) {
        put(k);
        put(x);
      }
    } else throw new TypeError(`cannot pack ${typeof v}`);
  };
  put(value);
  return Uint8Array.from(out);
}

/** Encodes a client frame as `pack` does, for what a client sends only: arrays,
 * strings, integers 0..2^53, `null` and `Uint8Array` (`bin`). */
export function packFrame(value: unknown): Uint8Array {
  const out: number[] = [];
  const be = (n: number, bytes: number) => {
    for (let i = bytes - 1; i >= 0; i--) out.push(i >= 4 ? Math.floor(n / 2 ** (8 * i)) & 255 : (n >>> (8 * i)) & 255);
  };
  const len = (small: number, n: number, max: number, b8: number, b16: number, b32: number) => {
    if (n <= max) out.push(small | n);
    else if (n < 0x100 && b8) out.push(b8, n);
    else if (n < 0x10000) out.push(b16, n >> 8, n & 255);
    else out.push(b32), be(n, 4);
  };
  const put = (v: unknown): void => {
    if (v === null || v === undefined) out.push(0xc0);
    else if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 2 ** 53) {
      if (v < 0x80) out.push(v);
      else if (v < 0x100) out.push(0xcc, v);
      else if (v < 0x10000) out.push(0xcd), be(v, 2);
      else if (v < 0x100000000) out.push(0xce), be(v, 4);
      else out.push(0xcf), be(v, 8);
    } else if (typeof v === "string") {
      const bytes = te.encode(v);
      len(0xa0, bytes.length, 31, 0xd9, 0xda, 0xdb);
      for (const x of bytes) out.push(x);
    } else if (v instanceof Uint8Array) {
      len(0, v.length, -1, 0xc4, 0xc5, 0xc6);
      for (const x of v) out.push(x);
    } else if (Array.isArray(v)) {
      len(0x90, v.length, 15, 0, 0xdc, 0xdd);
      for (const x of v) put(x);
    } else throw new TypeError(`cannot pack ${typeof v} in a client frame`);
  };
  put(value);
  return Uint8Array.from(out);
}

