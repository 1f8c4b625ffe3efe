// The page bundle's split: protocol v1's codec is dist/unbroken-v1.js, loaded only
// when a server speaks v1, and its errors are the core's own classes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as core from "../dist/unbroken.js";

test("the core bundle holds no v1 decoder; the v1 module throws the core's ProtocolError", async () => {
  const text = readFileSync(new URL("../dist/unbroken.js", import.meta.url), "utf8");
  assert.ok(!text.includes("frame is not JSON"), "v1's decoder is in the core bundle");
  assert.ok(text.includes("./unbroken-v1.js"));
  const { v1 } = await import("../dist/unbroken-v1.js");
  assert.throws(() => v1.decodeServer("{"), (e) => e instanceof core.ProtocolError && e.closeCode === 4000);
  assert.equal(v1.encode({ t: "ping", n: 3 }), '{"t":"ping","n":3}');
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
