/**
 * BLAKE2b-128 (RFC 7693): unkeyed, a 16-byte digest, nothing else. The digest
 * chain (§7) hashes one short step input per event, mostly a single 128-byte
 * block, so this is a compression function over a reused state, and no per-call
 * setup: in WebAssembly where it is there (generated below, 64-bit words), else in
 * JavaScript over 32-bit halves of the 64-bit words. Both are checked against
 * `@noble/hashes` (a property test over random messages) and the golden vectors.
 */
import { ConfigError } from "./errors.js";

// The IV (SHA-512's: the first 64 bits of the fractional parts of the square roots
// of the first 8 primes, floor(sqrt(p << 128)) mod 2^64 by Newton's method, computed
// here rather than written out: 50 bytes less gzip; the check in `useWasm` and the
// tests hold it to @noble/hashes), as [low, high] 32-bit halves of each 64-bit word.
const IV = new Int32Array(16);
[2, 3, 5, 7, 11, 13, 17, 19].forEach((p, i) => {
  const x = BigInt(p) << 128n;
  let r = x;
  for (let n; (n = (r + x / r) >> 1n) < r; ) r = n;
  IV[2 * i] = Number(r & 0xffffffffn);
  IV[2 * i + 1] = Number((r >> 32n) & 0xffffffffn);
});

// The message schedule of rounds 0..11 (rounds 10 and 11 repeat 0 and 1), as
// offsets of [low, high] pairs in `m`.
const SIGMA = new Uint8Array(
  (
    "0123456789abcdef" +
    "ea489fd61c02b753" +
    "b8c052fdae367194" +
    "7931dcbe265a40f8" +
    "905724afe1bc683d" +
    "2c6a0b834d75fe19" +
    "c51fed4a0763928b" +
    "db7ec13950f4862a" +
    "6fe9b308c2d714a5" +
    "a2847615fb9e3cd0" +
    "0123456789abcdef" +
    "ea489fd61c02b753"
  )
    .split("")
    .map((c) => 2 * parseInt(c, 16)),
);

let h = new Int32Array(16); // the chaining value
let m = new Int32Array(32); // the message block

type Compress = (count: number, last: boolean) => void;
// the JavaScript compression's own state (WebAssembly's is in its memory)
const jsState = [h, m];
/** The JavaScript compression, once loaded (`loadJs`). */
let js: Compress | null = null;
const unloaded: Compress = () => {
  throw new ConfigError("no WebAssembly and no unbroken-blake2b.js: serve it beside unbroken.js");
};
let compress: Compress = unloaded;


/** The same compression function in WebAssembly (native 64-bit adds and rotates:
 * about 3x faster than the 32-bit halves above), its 1.1 kB of code generated here.
 * It works on `h` and `m` laid out in its memory as above (little-endian 64-bit
 * words: [low, high] halves), the IV at 192 and the schedule (byte offsets in `m`)
 * at 256. `new WebAssembly.Module` is synchronous: small modules may compile on a
 * page's main thread. */
function wasm(): Compress {
  // locals: 0 count (f64), 1 last (i32), 2..17 the working vector, 18..33 the
  // round's message words (i64), 34 the round times 16 (i32)
  const b: number[] = [];
  const leb = (n: number): number[] => (n < 128 ? [n] : [(n & 127) | 128, n >> 7]);
  const get = (i: number) => b.push(0x20, i);
  const set = (i: number) => b.push(0x21, i);
  const load = (at: number) => b.push(0x29, 3, ...leb(at));
  // v[a] += v[c] (+ x[i]); v[d] = rotr(v[d] ^ v[a], n)
  const add = (a: number, c: number, x: number) => {
    get(a);
    get(c);
    b.push(0x7c);
    if (x) b.push(0x20, x, 0x7c);
    set(a);
  };
  const rot = (d: number, a: number, n: number) => {
    get(d);
    get(a);
    b.push(0x85, 0x42, n, 0x8a);
    set(d);
  };
  for (let i = 0; i < 16; i++) {
    b.push(0x41, 0);
    load(i < 8 ? 8 * i : 128 + 8 * i);
    set(2 + i);
  }
  get(14); // v12 ^= count
  get(0);
  b.push(0xb1, 0x85);
  set(14);
  get(1); // if (last) v14 = ~v14
  b.push(0x04, 0x40, 0x20, 16, 0x42, 0x7f, 0x85, 0x21, 16, 0x0b, 0x03, 0x40);
  for (let i = 0; i < 16; i++) {
    get(34);
    b.push(0x2d, 0, ...leb(256 + i));
    load(64);
    set(18 + i);
  }
  for (let g = 0; g < 8; g++) {
    const a = 2 + (g & 3);
    const c = 2 + ((g < 4 ? g : g + 1) & 3) + 4;
    const cc = 2 + ((g < 4 ? g : g + 2) & 3) + 8;
    const d = 2 + ((g < 4 ? g : g + 3) & 3) + 12;
    add(a, c, 18 + 2 * g);
    rot(d, a, 32);
    add(cc, d, 0);
    rot(c, cc, 24);
    add(a, c, 19 + 2 * g);
    rot(d, a, 16);
    add(cc, d, 0);
    rot(c, cc, 63);
  }
  // r += 16; loop while r != 192; then h ^= v[i] ^ v[i + 8]
  b.push(0x20, 34, 0x41, 16, 0x6a, 0x22, 34, 0x41, ...leb(192), 0x47, 0x0d, 0, 0x0b);
  for (let i = 0; i < 8; i++) {
    b.push(0x41, 0, 0x41, 0);
    load(8 * i);
    get(2 + i);
    b.push(0x85);
    get(10 + i);
    b.push(0x85, 0x37, 3, 8 * i);
  }
  b.push(0x0b);
  const body = [2, 32, 0x7e, 1, 0x7f, ...b];
  const sec = (id: number, s: number[]) => [id, ...leb(s.length), ...s];
  const mod = new Uint8Array([
    0, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...sec(1, [1, 0x60, 2, 0x7c, 0x7f, 0]), // type (f64, i32) -> ()
    ...sec(3, [1, 0]),
    ...sec(5, [1, 0, 1]), // one page of memory
    ...sec(7, [2, 1, 0x6d, 2, 0, 1, 0x63, 0, 0]), // export "m" memory, "c" function
    ...sec(10, [1, ...leb(body.length), ...body]),
  ]); // fmt: skip
  const { m: mem, c } = new WebAssembly.Instance(new WebAssembly.Module(mod)).exports as { m: WebAssembly.Memory; c: Compress };
  new Int32Array(mem.buffer, 192, 16).set(IV);
  new Uint8Array(mem.buffer, 256, 192).set(SIGMA.map((x) => 4 * x));
  h = new Int32Array(mem.buffer, 0, 16);
  m = new Int32Array(mem.buffer, 64, 32);
  return c;
}

/** Compress with WebAssembly (`true`, when it is there, checked on a block) or
 * JavaScript (once `loadJs()` loaded it); returns whether WebAssembly is in use.
 * Without WebAssembly (or with a Content-Security-Policy that refuses to compile it)
 * the JavaScript one is used. */
export function useWasm(on: boolean): boolean {
  compress = js ?? unloaded;
  [h, m] = jsState;
  if (on) {
    try {
      compress = wasm();
      // (BLAKE2b-128 of the schedule's 192 bytes, from @noble/hashes: db4b6b5a e2eb4714
      // 5f73f54a 32e99d7f, as the little-endian words of the chaining value)
      blake2b128(SIGMA);
      if (h[0] !== 0x5a6b4bdb || h[1] !== 0x1447ebe2 || h[2] !== 0x4af5735f || h[3] !== 0x7f9de932) throw 0;
      return true;
    } catch {
      compress = js ?? unloaded;
      [h, m] = jsState;
    }
  }
  return false;
}

/** Load the JavaScript compression (`dist/unbroken-blake2b.js`, beside the core). */
export async function loadJs(): Promise<void> {
  js ??= (await import("./unbroken-blake2b.js")).compressor(jsState[0], jsState[1], IV, SIGMA);
  if (compress === unloaded) compress = js;
}


/** Load bytes [from, to) of `data` into `m` as little-endian words, zero-padded. */
function load(data: Uint8Array, from: number, to: number): void {
  let w = 0;
  let j = from;
  for (; j + 4 <= to; j += 4) {
    m[w++] = data[j] | (data[j + 1] << 8) | (data[j + 2] << 16) | (data[j + 3] << 24);
  }
  if (j < to) {
    let x = 0;
    for (let k = 0; j < to; j++, k += 8) x |= data[j] << k;
    m[w++] = x;
  }
  while (w < 32) m[w++] = 0;
}

/** BLAKE2b with a 16-byte digest, no key, of the first `n` bytes of `data`,
 * written over the first 16 bytes of `out` (which may be `data`: it is read first). */
export function blake2b128Into(data: Uint8Array, n: number, out: Uint8Array): void {
  h.set(IV);
  // parameter block: digest length 16, key length 0, fanout 1, depth 1
  h[0] ^= 0x01010010;
  let i = 0;
  while (n - i > 128) {
    load(data, i, i + 128);
    i += 128;
    compress(i, false);
  }
  load(data, i, n);
  compress(n, true);
  for (let k = 0, at = 0; k < 4; k++) {
    const x = h[k];
    out[at++] = x;
    out[at++] = x >>> 8;
    out[at++] = x >>> 16;
    out[at++] = x >>> 24;
  }
}

/** BLAKE2b-128 of `data` (unkeyed). */
export function blake2b128(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  blake2b128Into(data, data.length, out);
  return out;
}

let loading: Promise<void> | null = null;
/** Resolves once BLAKE2b can run: at once where WebAssembly works, else once the
 * JavaScript compression loaded (or failed to: hashing then throws `ConfigError`,
 * and the next call tries again). Never rejects. */
export function ready(): Promise<void> {
  if (compress !== unloaded) return Promise.resolve();
  return (loading ??= loadJs().catch(() => {
    loading = null;
  }));
}

// WebAssembly refused: start loading the JavaScript compression now (no top-level
// await, which would break bundlers targeting ES2020 and IIFE/CJS outputs: the
// client awaits `ready()` before each connection; never where WebAssembly works)
if (!useWasm(true)) void ready();
