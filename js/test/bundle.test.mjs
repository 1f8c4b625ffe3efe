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
