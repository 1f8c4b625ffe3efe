/**
 * The digest chain (§7): BLAKE2b-128 over events, never over frames.
 *
 *   h_0 = BLAKE2b-128("unbroken.v1" 0x00 utf8(stream) 0x00 utf8(epoch))
 *   h_n = BLAKE2b-128(h_{n-1} ‖ uint64_be(n) ‖ uint8(kind) ‖ payload(event n))
 *
 * WebCrypto has no BLAKE2b: `@noble/hashes` (audited, no dependencies) computes it.
 * Mirrors `unbroken/protocol/digest.py`.
 */
import { blake2b } from "@noble/hashes/blake2.js";
import { ChainMismatch } from "./errors.js";
import { Kind, type Event } from "./frames.js";

const enc = new TextEncoder();
const OPTS = { dkLen: 16 };

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
  return blake2b(enc.encode(`unbroken.v1\0${stream}\0${epoch}`), OPTS);
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

/** A reusable buffer for step inputs: one allocation per chain, grown as needed. */
class Scratch {
  buf = new Uint8Array(1024);
  view = new DataView(this.buf.buffer);

  input(prev: Uint8Array, ev: Event): Uint8Array {
    const text = ev.kind <= Kind.DATA ? ev.body : payloadText(ev);
    const part = ev.kind <= Kind.DATA ? ev.part : "";
    // UTF-8 is at most 3 bytes per UTF-16 unit
    const need = 25 + 3 * (part.length + 1 + text.length);
    if (need > this.buf.length) {
      this.buf = new Uint8Array(Math.max(need, this.buf.length * 2));
      this.view = new DataView(this.buf.buffer);
    }
    const buf = this.buf;
    buf.set(prev, 0);
    this.view.setUint32(16, Math.floor(ev.seq / 0x100000000), false);
    this.view.setUint32(20, ev.seq >>> 0, false);
    buf[24] = ev.kind;
    let n = 25;
    if (ev.kind <= Kind.DATA) {
      n += enc.encodeInto(part, buf.subarray(n)).written;
      buf[n++] = 0;
    }
    n += enc.encodeInto(text, buf.subarray(n)).written;
    return buf.subarray(0, n);
  }
}

const shared = new Scratch();

/** h_seq from h_{seq-1} and the event. */
export function stepEvent(prev: Uint8Array, ev: Event): Uint8Array {
  return blake2b(shared.input(prev, ev), OPTS);
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
    let h = this.digest;
    let seq = this.seq;
    for (const ev of events) {
      if (ev.seq !== seq + 1) {
        throw new ChainMismatch(ev.seq, `expected seq ${seq + 1}, got ${ev.seq}`);
      }
      h = stepEvent(h, ev);
      seq = ev.seq;
    }
    if (expected !== null) {
      const ok = typeof expected === "string" ? toHex(h) === expected : equal(h, expected);
      if (!ok) throw new ChainMismatch(seq, "digest mismatch");
    }
    this.digest = h;
    this.seq = seq;
    return h;
  }
}
