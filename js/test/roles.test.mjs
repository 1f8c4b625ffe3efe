// Part roles (docs/reference/protocol.md §6.3) in the JS answer: text without the
// reasoning, tool calls with their parsed arguments and results, metadata merged,
// usage summed; the digest vectors' part-roles stream read as the Python client reads it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { readFileSync } from "node:fs";
import { Answer, Kind, PartStarted, StreamEnded, makeEvent, mimeParams, partInfo } from "../dist/testing.js";

const vectors = JSON.parse(readFileSync(new URL("../../tests/vectors/digest.json", import.meta.url), "utf8"));
const KINDS = { text: Kind.TEXT, json: Kind.JSON, data: Kind.DATA, part_start: Kind.PART_START, part_end: Kind.PART_END, end: Kind.END };

function fold(events) {
  const a = new Answer("s");
  const typed = events.map((e) => a.apply(e, "d"));
  return [a, typed];
}

test("the vectors' part-roles stream: an answer that keeps text, reasoning, calls and metadata apart", () => {
  const s = vectors.streams.find((x) => x.name.startsWith("part roles"));
  const events = s.events.map((e) =>
    makeEvent(e.seq, KINDS[e.kind], { part: e.part, body: e.body, partKind: e.part_kind, mime: e.mime, schema: e.schema, status: e.status, error: e.error, count: e.count }),
  );
  const [a, typed] = fold(events);
  assert.equal(a.text, "21 °C in Paris.");
  assert.equal(a.reasoning, "Paris first.");
  assert.deepEqual(
    a.toolCalls.map((c) => [c.id, c.name, c.args, c.result, c.hasResult]),
    [["call_1", "get_weather", { city: "Paris" }, { temp: 21 }, true]],
  );
  assert.equal(a.finishReason, "stop");
  assert.deepEqual(a.usage, { output_tokens: 9 });
  const start = typed.find((e) => e instanceof PartStarted && e.part === "tool-call_1");
  assert.deepEqual([start.role, start.tool, start.call], ["tool-call", "get_weather", "call_1"]);
  const end = typed.at(-1);
  assert.ok(end instanceof StreamEnded);
  assert.equal(end.finishReason, "stop");
});

test("usage adds up over metadata parts; earlier forms read the same", () => {
  let seq = 0;
  const ev = (kind, fields) => makeEvent(++seq, kind, fields);
  const meta = (part, body, mime = "application/json; role=metadata") => [
    ev(Kind.PART_START, { part, partKind: "json", mime }),
    ev(Kind.JSON, { part, body }),
    ev(Kind.PART_END, { part }),
  ];
  const [a] = fold([
    ev(Kind.PART_START, { part: "tool-c1", partKind: "json", mime: 'application/json; tool="f"' }),
    ev(Kind.JSON, { part: "tool-c1", body: "{" }),
    ev(Kind.PART_END, { part: "tool-c1" }),
    ...meta("meta", '{"usage":{"in":1,"d":{"x":2}},"finish_reason":"tool_use"}', "application/json; role=meta"),
    ...meta("metadata", '{"usage":{"in":4,"d":{"x":1}},"finish_reason":"end_turn"}'),
  ]);
  const [call] = a.toolCalls;
  assert.equal(call.id, "c1");
  assert.equal(call.args, undefined); // not JSON: its part failed
  assert.match(call.error, /invalid JSON/);
  assert.deepEqual(a.usage, { in: 5, d: { x: 3 } });
  assert.equal(a.finishReason, "end_turn");
  assert.deepEqual(mimeParams('a/b; x="1;2"; y=3 ; bad; z="q\\""'), { x: "1;2", y: "3", z: 'q"' });
  // (the edges, as the Python parser reads them)
  assert.deepEqual(mimeParams('a/b; X = "v"junk; y="open;z=1'), { x: "v", y: "open;z=1" });
  assert.deepEqual(mimeParams("a/b;=1; k=\tv ;;e=; t=\"a\\\\\""), { k: "v", e: "", t: "a\\" });
  assert.deepEqual(mimeParams('a/b; t="x\\'), { t: "x\\" });
  assert.deepEqual(mimeParams("text/plain"), {});
  assert.deepEqual(partInfo("r", "json", "application/json; role=reasoning").role, "");
});
