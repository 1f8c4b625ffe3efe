// The client's own BLAKE2b-128 (src/blake2b.ts) against @noble/hashes (the oracle,
// a devDependency only): random messages of 0..1000 bytes, every length, give the
// same digest; and the chain built on it (step inputs written in place, ASCII byte
// by byte, the rest by TextEncoder) equals the reference construction.
import assert from "node:assert/strict";
import { test } from "node:test";
import { build } from "esbuild";
import { blake2b } from "@noble/hashes/blake2.js";
import {
  ChainVerifier,
  Kind,
  makeEvent,
  seed,
  seededRng,
  stepEvent,
  stepInput,
  toHex,
} from "../dist/testing.js";

const bundled = await build({
  entryPoints: [new URL("../src/blake2b.ts", import.meta.url).pathname],
  bundle: true,
  format: "esm",
  write: false,
});
const own = await import(`data:text/javascript;base64,${Buffer.from(bundled.outputFiles[0].text).toString("base64")}`);
// (the JavaScript compression is a module of its own, loaded where WebAssembly is refused)
await own.loadJs();
const oracle = (bytes) => blake2b(bytes, { dkLen: 16 });

// the client's seeded PRNG (mulberry32): failures are reproducible
const rng = seededRng;

// both compression functions: WebAssembly (the default where it is there) and the
// JavaScript one it falls back to
for (const wasm of [true, false]) {
  const name = wasm ? "WebAssembly" : "JavaScript";
  test(`blake2b128 (${name}) equals @noble/hashes blake2b dkLen 16 on random messages of every length 0..1000`, () => {
    assert.equal(own.useWasm(wasm), wasm, "WebAssembly is there in Node");
    try {
      const r = rng(14);
      for (let len = 0; len <= 1000; len++) {
        for (let rep = 0; rep < 3; rep++) {
          const msg = new Uint8Array(len);
          for (let i = 0; i < len; i++) msg[i] = (r() * 256) | 0;
          if (rep === 1) msg.fill(0xff);
          assert.equal(toHex(own.blake2b128(msg)), toHex(oracle(msg)), `length ${len}, repetition ${rep}`);
        }
      }
    } finally {
      own.useWasm(true);
    }
  });

  test(`blake2b128Into (${name}) reads a prefix and may write over its own input`, () => {
    own.useWasm(wasm);
    try {
      const r = rng(7);
      for (const len of [0, 1, 16, 45, 127, 128, 129, 255, 256, 257, 1000]) {
        const buf = new Uint8Array(len + 40);
        for (let i = 0; i < buf.length; i++) buf[i] = (r() * 256) | 0;
        const want = toHex(oracle(buf.slice(0, len)));
        own.blake2b128Into(buf, len, buf);
        assert.equal(toHex(buf.subarray(0, 16)), want, `length ${len}`);
      }
    } finally {
      own.useWasm(true);
    }
  });
}

test("without WebAssembly (or when a page's CSP refuses to compile it) the JavaScript compression is used", () => {
  const saved = globalThis.WebAssembly;
  try {
    globalThis.WebAssembly = undefined;
    assert.equal(own.useWasm(true), false);
    assert.equal(toHex(own.blake2b128(new Uint8Array(3).fill(97))), toHex(oracle(new Uint8Array(3).fill(97))));
  } finally {
    globalThis.WebAssembly = saved;
    assert.equal(own.useWasm(true), true);
  }
});

const ALPHABET = ["a", "Z", "0", " ", "\0", "\n", '"', "é", "ß", "€", "中", "😀", "\u{10ffff}", "\u007f", "\u0080", "\u07ff", "\u0800", "\uffff"];
function randomText(r, max) {
  const n = (r() * max) | 0;
  let s = "";
  for (let i = 0; i < n; i++) s += r() < 0.7 ? String.fromCharCode(32 + ((r() * 95) | 0)) : ALPHABET[(r() * ALPHABET.length) | 0];
  return s;
}

function randomEvent(r, seq) {
  const k = 1 + ((r() * 6) | 0);
  const part = `p${(r() * 5) | 0}`;
  switch (k) {
    case Kind.PART_START:
      return makeEvent(seq, k, { part, partKind: "text", mime: randomText(r, 20), schema: randomText(r, 40) });
    case Kind.PART_END:
      return makeEvent(seq, k, { part, error: randomText(r, 10) });
    case Kind.END:
      return makeEvent(seq, k, { status: "completed", error: randomText(r, 10), count: seq });
    default:
      return makeEvent(seq, k, { part, body: randomText(r, r() < 0.05 ? 3000 : 60) });
  }
}

const enc = new TextEncoder();
function referenceInput(prev, ev) {
  let text;
  if (ev.kind <= Kind.DATA) text = `${ev.part}\0${ev.body}`;
  else if (ev.kind === Kind.PART_START) text = `${ev.part}\0${ev.partKind}\0${ev.mime}\0${ev.schema}`;
  else if (ev.kind === Kind.PART_END) text = `${ev.part}\0${ev.error}`;
  else text = `${ev.status}\0${ev.error}\0${ev.count}`;
  const payload = enc.encode(text);
  const out = new Uint8Array(25 + payload.length);
  out.set(prev, 0);
  new DataView(out.buffer).setBigUint64(16, BigInt(ev.seq), false);
  out[24] = ev.kind;
  out.set(payload, 25);
  return out;
}

test("the chain on random events (any Unicode, long bodies) equals the reference step inputs hashed by the oracle", () => {
  const r = rng(2024);
  const stream = "s1";
  const epoch = "e1";
  assert.equal(toHex(seed(stream, epoch)), toHex(oracle(enc.encode(`unbroken.v1\0${stream}\0${epoch}`))));
  const v = new ChainVerifier(stream, epoch);
  let h = seed(stream, epoch);
  let seq = 0;
  for (let frame = 0; frame < 60; frame++) {
    const events = [];
    const n = 1 + ((r() * 40) | 0);
    for (let i = 0; i < n; i++) {
      const ev = randomEvent(r, ++seq);
      const ref = referenceInput(h, ev);
      assert.equal(toHex(stepInput(h, ev)), toHex(ref), `step input of event ${seq}`);
      const next = oracle(ref);
      assert.equal(toHex(stepEvent(h, ev)), toHex(next), `digest of event ${seq}`);
      h = next;
      events.push(ev);
    }
    assert.equal(toHex(v.extend(events, toHex(h))), toHex(h), `frame ${frame}`);
  }
});

// the chain over each compression: a copy of the digest module and its BLAKE2b
// loaded with WebAssembly there, or not there (as under a CSP that refuses it)
const chainBundle = await build({
  stdin: { contents: 'export * from "./digest.ts"; export { useWasm, ready } from "./blake2b.ts";', resolveDir: new URL("../src", import.meta.url).pathname, loader: "ts" },
  bundle: true,
  format: "esm",
  write: false,
});
const chainMod = (n) => import(`data:text/javascript;base64,${Buffer.from(chainBundle.outputFiles[0].text + `\n//${n}`).toString("base64")}`);
for (const wasm of [true, false]) {
  test(`the chain with ${wasm ? "WebAssembly" : "JavaScript"} BLAKE2b equals the reference (step inputs of one block and longer)`, async () => {
    const saved = globalThis.WebAssembly;
    if (!wasm) globalThis.WebAssembly = undefined;
    try {
      const d = await chainMod(wasm);
      // (WebAssembly refused: the JavaScript compression is loading; no top-level await)
      await d.ready();
      await chainOver(d);
    } finally {
      globalThis.WebAssembly = saved;
    }
  });
}

async function chainOver(d) {
    const r = rng(99);
    const v = new d.ChainVerifier("s2", "e2");
    let h = oracle(enc.encode("unbroken.v1\0s2\0e2"));
    let seq = 0;
    for (let frame = 0; frame < 30; frame++) {
      const events = [];
      for (let i = 0; i < 20; i++) {
        const ev = makeEvent(++seq, Kind.TEXT, { part: "p", body: randomText(r, r() < 0.2 ? 400 : 90) });
        h = oracle(referenceInput(h, ev));
        events.push(ev);
      }
      assert.equal(toHex(v.extend(events, toHex(h))), toHex(h), `frame ${frame}`);
    }
}

test("a seq beyond 2^32 is written as a big-endian 64-bit integer", () => {
  const prev = new Uint8Array(16).fill(3);
  for (const seq of [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53]) {
    const ev = makeEvent(seq, Kind.TEXT, { part: "p", body: "x" });
    assert.equal(toHex(stepInput(prev, ev)), toHex(referenceInput(prev, ev)), `seq ${seq}`);
  }
});
