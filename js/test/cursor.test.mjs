// Cursor strings: the same golden vectors as Python (tests/vectors/cursor.json), and
// Client.join / Client.read against a scripted server (no network: the sans-I/O
// client over a fake WebSocket, as in client.test.mjs).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ConfigError, Cursor } from "../dist/testing.js";

const vectors = JSON.parse(readFileSync(new URL("../../tests/vectors/cursor.json", import.meta.url), "utf8"));

test("cursor vectors: String(cursor) and Cursor.parse agree with Python", () => {
  for (const row of vectors.valid) {
    const c = new Cursor(row.stream, row.seq, row.digest, row.epoch);
    assert.equal(String(c), row.text);
    assert.equal(`${c}`, row.text);
    assert.deepEqual({ ...Cursor.parse(row.text) }, { stream: row.stream, seq: row.seq, digest: row.digest, epoch: row.epoch });
    // saved fields (a cursor through JSON) are checked the same way
    assert.equal(String(Cursor.parse(JSON.parse(JSON.stringify(c)))), row.text);
  }
});

test("cursor vectors: the invalid ones are refused with the field named", () => {
  for (const row of vectors.invalid) {
    assert.throws(() => Cursor.parse(row.text), (e) => e instanceof ConfigError && e.message.includes(row.error), row.text);
  }
  assert.throws(() => Cursor.parse(null), ConfigError);
  assert.throws(() => Cursor.parse({ stream: "s", seq: -1, digest: "0".repeat(32), epoch: "e" }), /bad seq/);
});
