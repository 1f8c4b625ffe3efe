/**
 * The digest chain (§7): BLAKE2b-128 over events, never over frames.
 *
 *   h_0 = BLAKE2b-128("unbroken.v1" 0x00 utf8(stream) 0x00 utf8(epoch))
 *   h_n = BLAKE2b-128(h_{n-1} ‖ uint64_be(n) ‖ uint8(kind) ‖ payload(event n))
 *
 * WebCrypto has no BLAKE2b: `./blake2b.ts` computes it (checked against
 * `@noble/hashes` in the tests). Mirrors `unbroken/protocol/digest.py`.
 */
import { blake2b128, blake2b128Into } from "./blake2b.js";
import { ChainMismatch } from "./errors.js";
import { Kind, type Event } from "./frames.js";

const enc = new TextEncoder();

export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i] < 16 ? "0" : "") + b[i].toString(16);
  return s;
}

export function fromHex(h: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(h)) throw new TypeError(`not hex: ${h.slice(0, 40)}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(i * 2, 2), 16);
  return out;
}

/** h_0 of a stream in an epoch. */
export function seed(stream: string, epoch: string): Uint8Array {
  return blake2b128(enc.encode(`unbroken.v1\0${stream}\0${epoch}`));
}

/** The canonical payload of an event (§7.1). */
export function payload(ev: Event): Uint8Array {
  return enc.encode(payloadText(ev));
}

function payloadText(ev: Event): string {
  switch (ev.kind) {
    case Kind.TEXT:
    case Kind.JSON:
    case Kind.DATA:
      return `${ev.part}\0${ev.body}`;
    case Kind.PART_START:
      return `${ev.part}\0${ev.partKind}\0${ev.mime}\0${ev.schema}`;
    case Kind.PART_END:
      return `${ev.part}\0${ev.error}`;
    default:
      return `${ev.status}\0${ev.error}\0${ev.count}`;
  }
}

/** A reusable buffer for step inputs: one allocation per chain, grown as needed.
 * The digest of each step is written over the first 16 bytes, where the next
 * step's input starts with it. */
class Scratch {
  buf = new Uint8Array(1024);

  /** Write `s` as UTF-8 at `n` (room for 3 bytes per UTF-16 unit is there);
   * ASCII byte by byte, the rest by the TextEncoder. Returns the new end. */
  private _put(s: string, n: number): number {
    const buf = this.buf;
    const len = s.length;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return n + enc.encodeInto(i === 0 ? s : s.slice(i), buf.subarray(n)).written;
      buf[n++] = c;
    }
    return n;
  }

  /** Write the step input of `ev` after the 16 bytes of the previous digest
   * (already in place); returns its length. */
  write(ev: Event): number {
    const chunk = ev.kind <= Kind.DATA;
    const text = chunk ? ev.body : payloadText(ev);
    const part = chunk ? ev.part : "";
    // UTF-8 is at most 3 bytes per UTF-16 unit
    const need = 25 + 3 * (part.length + 1 + text.length);
    if (need > this.buf.length) {
      const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, 16));
      this.buf = grown;
    }
    const buf = this.buf;
    const seq = ev.seq;
    const hi = Math.floor(seq / 0x100000000);
    buf[16] = hi >>> 24;
    buf[17] = hi >>> 16;
    buf[18] = hi >>> 8;
    buf[19] = hi;
    buf[20] = seq >>> 24;
    buf[21] = seq >>> 16;
    buf[22] = seq >>> 8;
    buf[23] = seq;
    buf[24] = ev.kind;
    let n = 25;
    if (chunk) {
      n = this._put(part, n);
      buf[n++] = 0;
    }
    return this._put(text, n);
  }

  input(prev: Uint8Array, ev: Event): Uint8Array {
    this.buf.set(prev, 0);
    const n = this.write(ev); // may grow the buffer
    return this.buf.subarray(0, n);
  }
}

const shared = new Scratch();

/** h_seq from h_{seq-1} and the event. */
export function stepEvent(prev: Uint8Array, ev: Event): Uint8Array {
  return blake2b128(shared.input(prev, ev));
}

/** The step input itself (for tests against the vectors' `step_input_hex`). */
export function stepInput(prev: Uint8Array, ev: Event): Uint8Array {
  return shared.input(prev, ev).slice();
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Incremental verifier: feed events in order, check the digest after each frame.
 * All or nothing: a frame that fails leaves the verifier where it was. */
export class ChainVerifier {
  seq: number;
  digest: Uint8Array;

  constructor(stream: string, epoch: string, seq = 0, digest: Uint8Array | null = null) {
    const h0 = digest === null || seq === 0 ? seed(stream, epoch) : digest;
    if (seq === 0 && digest !== null && !equal(digest, h0)) {
      throw new ChainMismatch(0, "starting digest is not the stream's seed");
    }
    this.seq = seq;
    this.digest = h0;
  }

  /** Chain `events`; when `expected` is given, the digest after the last must equal it. */
  extend(events: readonly Event[], expected: Uint8Array | string | null = null): Uint8Array {
    let seq = this.seq;
    const sc = shared;
    sc.buf.set(this.digest, 0);
    for (let i = 0; i < events.length; i++) {
      const ev = events[i];
      if (ev.seq !== seq + 1) {
        throw new ChainMismatch(ev.seq, `expected seq ${seq + 1}, got ${ev.seq}`);
      }
      const n = sc.write(ev);
      blake2b128Into(sc.buf, n, sc.buf);
      seq = ev.seq;
    }
    const h = sc.buf.slice(0, 16);
    if (expected !== null) {
      // (v2: a frame's h is the chain value's first 8 bytes, or all 16)
      const ok = typeof expected === "string" ? toHex(h) === expected : expected.length === 8 ? equal(h.subarray(0, 8), expected) : equal(h, expected);
      if (!ok) throw new ChainMismatch(seq, "digest mismatch");
    }
    this.digest = h;
    this.seq = seq;
    return h;
  }
}
