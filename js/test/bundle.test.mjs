// The page bundle's split: protocol v1's codec is dist/unbroken-v1.js, loaded only
// when a server speaks v1, and its errors are the core's own classes (given by the
// core: the v1 module imports nothing, so no second copy of the core loads).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as core from "../dist/unbroken.js";

// A server that answers in v1 (subprotocol unbroken.v1) and replies `reply` to the hello.
function v1Server(reply) {
  const sockets = [];
  class V1Server {
    constructor() {
      Object.assign(this, { readyState: 0, protocol: "", sent: [], closed: null });
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = "unbroken.v1";
        this.onopen?.({});
      }, 1);
    }
    send(data) {
      this.sent.push(data);
      if (this.sent.length === 1) setTimeout(() => this.onmessage?.({ data: reply }), 0);
    }
    close(code = 1000, reason = "") {
      this.closed ??= { code, reason };
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  return { V1Server, sockets };
}

test("the core bundle holds no v1 decoder; the v1 module throws the core's ProtocolError", async () => {
  const text = readFileSync(new URL("../dist/unbroken.js", import.meta.url), "utf8");
  assert.ok(!text.includes("frame is not JSON"), "v1's decoder is in the core bundle");
  assert.ok(text.includes("./unbroken-v1.js"));
  const v1 = (await import("../dist/unbroken-v1.js")).v1(core.ProtocolError);
  assert.throws(() => v1.decodeServer("{"), (e) => e instanceof core.ProtocolError && e.closeCode === 4000);
  assert.equal(v1.encode({ t: "ping", n: 3 }), '{"t":"ping","n":3}');
});

test("unbroken-v1.js imports nothing (never the core: a page's core under another URL would load twice)", () => {
  const text = readFileSync(new URL("../dist/unbroken-v1.js", import.meta.url), "utf8");
  // (no import declaration, dynamic import() or re-export `export {…} from`)
  assert.doesNotMatch(text, /\bimport\b|\}\s*from\s*["']|unbroken\.js/);
  assert.match(text, /export\s*\{\s*\w+ as v1\s*\}/);
});

test("core under a query-string URL and renamed: a malformed v1 frame is its own ProtocolError, close 4000, not retried", async () => {
  // as pages serve it: a hashed file name (unbroken.abc123.js) and a cache-busting
  // query (?v=…), beside unbroken-v1.js; two copies of the core share that module
  const dir = mkdtempSync(join(tmpdir(), "ub-"));
  copyFileSync(new URL("../dist/unbroken.js", import.meta.url), join(dir, "unbroken.abc123.js"));
  copyFileSync(new URL("../dist/unbroken-v1.js", import.meta.url), join(dir, "unbroken-v1.js"));
  const url = pathToFileURL(join(dir, "unbroken.abc123.js"));
  const a = await import(`${url}?v=1`);
  const b = await import(`${url}?v=2`);
  assert.notEqual(a.ProtocolError, b.ProtocolError);
  for (const [mine, other] of [[a, b], [b, a], [a, b]]) {
    const { V1Server, sockets } = v1Server("{not json");
    const client = new mine.Client("ws://x", { WebSocket: V1Server, storage: null, lifecycle: false });
    const err = await client.start("a").then(() => null, (e) => e);
    assert.ok(err instanceof mine.ProtocolError, `${err?.name}: ${err?.message}`);
    assert.ok(err instanceof mine.UnbrokenError && !(err instanceof other.UnbrokenError));
    assert.equal(err.closeCode, 4000);
    assert.match(sockets[0].sent[0], /^\{"t":"hello"/);
    assert.equal(sockets[0].closed?.code, 4000);
    assert.equal(sockets.length, 1); // fatal: not retried
    await client.close();
  }
});

test("the core exports the public API only", () => {
  for (const name of ["Client", "Stream", "Answer", "Cursor", "StreamGone", "BackoffPolicy", "parsePartialJson", "seed", "toHex"]) assert.ok(name in core, name);
  for (const name of ["ClientSession", "decodeServer", "encodeV2", "Liveness", "pack"]) assert.ok(!(name in core), name);
});

test("the core's list of minified internal members holds no public name", () => {
  // (build.mjs minifies these names in dist/unbroken.js: one that is also an option,
  // an event's field, a frame field or a public member would break the page bundle)
  const build = readFileSync(new URL("../build.mjs", import.meta.url), "utf8");
  const list = build.slice(build.indexOf("const INTERNAL = ["), build.indexOf("];", build.indexOf("const INTERNAL = [")));
  const internal = [...list.matchAll(/"([A-Za-z0-9]+)"/g)].map((m) => m[1]);
  assert.ok(internal.length > 50);
  const types = (name) => readFileSync(new URL(`../dist/types/${name}.d.ts`, import.meta.url), "utf8");
  const exported = new Set([...types("index").matchAll(/\b([A-Za-z0-9_]+)\b/g)].map((m) => m[1]));
  const declared = new Set();
  for (const mod of ["client", "response", "backoff", "errors", "roles", "session", "frames", "codecs"]) {
    const text = types(mod).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*/g, "");
    // each top-level declaration: public ones (exported by index.ts) and every frame type
    for (const block of text.split(/\n(?=export )/)) {
      const name = /^export (?:declare )?(?:class|interface|type) ([A-Za-z0-9_]+)/.exec(block)?.[1];
      if (name === undefined || !(exported.has(name) || mod === "frames")) continue;
      for (const m of block.matchAll(/^\s+(?:readonly |static |get |set |async )*([A-Za-z0-9_]+)\??[:(<]/gm)) {
        if (!/^\s*private /.test(m[0])) declared.add(m[1]);
      }
    }
  }
  assert.ok(declared.has("silenceFactor") && declared.has("caps") && declared.has("retryAfter"));
  assert.deepEqual(internal.filter((n) => declared.has(n)), []);
});

test("a v1 server without unbroken-v1.js beside the bundle: ConfigError, no retry; with it the hello goes", async () => {
  const { mkdtempSync, copyFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "ub-"));
  copyFileSync(new URL("../dist/unbroken.js", import.meta.url), join(dir, "unbroken.js"));
  const lone = await import(join(dir, "unbroken.js"));
  const sockets = [];
  let onSend = () => undefined;
  class V1Only {
    constructor() {
      Object.assign(this, { readyState: 0, protocol: "", sent: [] });
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = "unbroken.v1";
        this.onopen?.({});
      }, 1);
    }
    send(data) {
      this.sent.push(data);
      onSend(data);
    }
    close(code = 1000, reason = "") {
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  const client = new lone.Client("ws://x", { WebSocket: V1Only, storage: null, lifecycle: false });
  await assert.rejects(client.start("a"), (e) => e instanceof lone.ConfigError && /unbroken-v1\.js/.test(e.message));
  assert.equal(sockets.length, 1); // fatal: not retried
  await client.close();
  // beside its codec, the same server gets a v1 hello (JSON text)
  const client2 = new core.Client("ws://x", { WebSocket: V1Only, storage: null, lifecycle: false, openTimeout: 0.2 });
  const connected = new Promise((resolve) => (onSend = resolve));
  void client2.connect().catch(() => undefined);
  assert.match(await connected, /^\{"t":"hello"/);
  await client2.close();
});

test("BLAKE2b where WebAssembly is refused: the core loads unbroken-blake2b.js from beside itself (only then); without it, ConfigError", async () => {
  const { blake2b } = await import("@noble/hashes/blake2.js");
  const want = core.toHex(blake2b(new TextEncoder().encode("unbroken.v1\0s\0e"), { dkLen: 16 }));
  const text = readFileSync(new URL("../dist/unbroken.js", import.meta.url), "utf8");
  assert.ok(text.includes('import("./unbroken-blake2b.js")'));
  assert.doesNotMatch(readFileSync(new URL("../dist/unbroken-blake2b.js", import.meta.url), "utf8"), /\bimport\b|\}\s*from\s*["']/);
  const dir = mkdtempSync(join(tmpdir(), "ub-"));
  copyFileSync(new URL("../dist/unbroken.js", import.meta.url), join(dir, "unbroken.js"));
  const url = pathToFileURL(join(dir, "unbroken.js"));
  const saved = globalThis.WebAssembly;
  try {
    globalThis.WebAssembly = undefined;
    // no chunk beside it: the module loads, hashing says why it cannot (also once
    // digestReady(), which never rejects, settled)
    const lone = await import(`${url}?no-chunk`);
    assert.throws(() => lone.seed("s", "e"), (e) => e instanceof lone.ConfigError && /unbroken-blake2b\.js/.test(e.message));
    await lone.digestReady();
    assert.throws(() => lone.seed("s", "e"), (e) => e instanceof lone.ConfigError && /unbroken-blake2b\.js/.test(e.message));
    copyFileSync(new URL("../dist/unbroken-blake2b.js", import.meta.url), join(dir, "unbroken-blake2b.js"));
    // (the chunk is there now: the same module's next digestReady() loads it)
    await lone.digestReady();
    assert.equal(lone.toHex(lone.seed("s", "e")), want);
    const fallback = await import(`${url}?chunk`);
    await fallback.digestReady();
    assert.equal(fallback.toHex(fallback.seed("s", "e")), want);
  } finally {
    globalThis.WebAssembly = saved;
  }
  // with WebAssembly the chunk is not needed (it is gone again: the core still hashes)
  const { rmSync } = await import("node:fs");
  rmSync(join(dir, "unbroken-blake2b.js"));
  const wasm = await import(`${url}?wasm`);
  assert.equal(wasm.toHex(wasm.seed("s", "e")), want);
});

test("the page bundle's layout: the core alone on first load; v1's codec and the JavaScript BLAKE2b on demand, importing nothing (bench/size.mjs)", async () => {
  const { execFileSync } = await import("node:child_process");
  const cwd = new URL("..", import.meta.url);
  const { first, onDemand } = JSON.parse(execFileSync(process.execPath, ["bench/size.mjs", "--json"], { cwd, encoding: "utf8" }));
  assert.deepEqual(first.map((f) => f.file), ["unbroken.js"]);
  assert.deepEqual(onDemand.map((f) => f.file).sort(), ["unbroken-blake2b.js", "unbroken-v1.js"]);
  for (const c of onDemand) {
    assert.ok(c.when, c.file);
    const text = readFileSync(new URL(`../dist/${c.file}`, import.meta.url), "utf8");
    assert.doesNotMatch(text, /\bimport\b|\}\s*from\s*["']/, `${c.file} imports something`);
  }
  // (the core's only imports are those two, dynamic)
  const core = readFileSync(new URL("../dist/unbroken.js", import.meta.url), "utf8");
  assert.deepEqual([...core.matchAll(/\bimport\b[^;]{0,60}/g)].map((m) => m[0].match(/"\.\/[^"]+"/)?.[0]).sort(), ['"./unbroken-blake2b.js"', '"./unbroken-v1.js"']);
});

test("bench/size.mjs --functions: each module's declarations and class members with their gzip share, none negative past noise", async () => {
  const { execFileSync } = await import("node:child_process");
  const cwd = new URL("..", import.meta.url);
  const out = execFileSync(process.execPath, ["bench/size.mjs", "--functions", "dist/unbroken.js"], { cwd, encoding: "utf8" });
  const rows = Object.fromEntries([...out.matchAll(/^    (src\/[\w.-]+): (.*)$/gm)].map((m) => [m[1], m[2].split(", ").map((x) => x.split(/ (?=\d+\/-?\d+$)/))]));
  // the client's connection (the biggest member) and BLAKE2b's WebAssembly generator are there, with their bytes
  const share = (mod, name) => rows[mod].find(([n]) => n === name)?.[1].split("/").map(Number);
  const [connMin, connGz] = share("src/client.ts", "Client._connection");
  assert.ok(connMin > 1000 && connGz > 300, `${connMin}/${connGz}`);
  assert.ok(share("src/blake2b.ts", "wasm")[1] > 100);
  assert.ok(share("src/frames2.ts", "decodeServerV2")[1] > 100);
  // (a removal may gain a few bytes of gzip, never more)
  for (const [mod, list] of Object.entries(rows)) for (const [n, b] of list) assert.ok(Number(b.split("/")[1]) > -10, `${mod} ${n} ${b}`);
});

test("no top-level await: a consumer of dist/unbroken.js bundles for ES2020 (esbuild --target=es2020, IIFE and ESM) and hashes", async () => {
  const { build } = await import("esbuild");
  const entry = new URL("../dist/unbroken.js", import.meta.url).pathname;
  const contents = `import { Client, digestReady, seed, toHex } from ${JSON.stringify(entry)}; export { Client, digestReady, seed, toHex };`;
  for (const format of ["iife", "esm"]) {
    // (esbuild throws on "Top-level await is not available in the configured target environment")
    const out = await build({ stdin: { contents, resolveDir: tmpdir(), loader: "js" }, bundle: true, target: "es2020", format, write: false, logLevel: "silent" });
    assert.equal(out.errors.length, 0, format);
    assert.match(out.outputFiles[0].text, /unbroken-blake2b/, format); // (the chunk bundled in, loaded lazily)
  }
  // the ES2020 bundle works: the chain hashes
  const out = await build({ stdin: { contents, resolveDir: tmpdir(), loader: "js" }, bundle: true, target: "es2020", format: "esm", write: false, logLevel: "silent" });
  const m = await import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString("base64")}`);
  const { blake2b } = await import("@noble/hashes/blake2.js");
  await m.digestReady();
  assert.equal(m.toHex(m.seed("s", "e")), core.toHex(blake2b(new TextEncoder().encode("unbroken.v1\0s\0e"), { dkLen: 16 })));
});
