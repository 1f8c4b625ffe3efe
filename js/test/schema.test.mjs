// JSON parts checked against the schema their part_start declared, as the Python
// client does (unbroken/client/response.py): with the `validator` option
// (unbroken-client/schema), a value that does not match fails the part, never the
// stream; without one, a JSON part is only checked to parse.
import assert from "node:assert/strict";
import { test as _test } from "node:test";
import { existsSync } from "node:fs";
import { Answer, Client, Kind, PartEnded, PartStarted, makeEvent } from "../dist/testing.js";

// dist/schema.js needs @cfworker/json-schema in node_modules (npm ci); under CI its
// absence fails the run instead of skipping it
const built = existsSync(new URL("../dist/schema.js", import.meta.url));
if (!built && process.env.CI === "true") throw new Error("dist/schema.js is not built (npm ci && npm run build)");
const { jsonSchema } = built ? await import("../dist/schema.js") : {};
const test = (name, fn) => (built ? _test(name, fn) : _test(name, { skip: "dist/schema.js not built: npm ci && npm run build" }, fn));

const SCHEMA = JSON.stringify({
  type: "object",
  properties: { rows: { type: "array", items: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] } } },
  required: ["rows"],
});

function fold(answer, body, schema = SCHEMA) {
  const evs = [
    makeEvent(1, Kind.PART_START, { part: "j", partKind: "json", schema }),
    ...body.map((b, i) => makeEvent(i + 2, Kind.JSON, { part: "j", body: b })),
    makeEvent(body.length + 2, Kind.PART_END, { part: "j" }),
  ];
  return evs.map((ev) => answer.apply(ev, ""));
}

const withValidator = () => {
  const a = new Answer("s");
  a.validator = jsonSchema;
  return a;
};

test("a JSON part that matches its schema ends without error", () => {
  const out = fold(withValidator(), ['{"rows": [{"n"', ': 1}, {"n": 2}]}']);
  assert.ok(out[0] instanceof PartStarted);
  assert.equal(out[0].schema.type, "object");
  const end = out.at(-1);
  assert.ok(end instanceof PartEnded);
  assert.equal(end.error, "");
});

test("a JSON part that does not match fails the part, naming where", () => {
  const answer = withValidator();
  const end = fold(answer, ['{"rows": [{"n": 1}, {"n": "two"}]}']).at(-1);
  assert.match(end.error, /^schema validation failed: .*integer.*\(at #\/rows\/1\/n\)/);
  assert.equal(answer.parts.get("j").error, end.error);
  assert.equal(fold(withValidator(), ['{"cols": []}']).at(-1).error.includes("rows"), true);
});

test("invalid JSON, a schema that is not JSON, or not a schema: the part fails, the answer goes on", () => {
  assert.match(fold(withValidator(), ['{"rows": [']).at(-1).error, /^invalid JSON: /);
  assert.match(fold(withValidator(), ["{}"], "{nope").at(-1).error, /^schema is not JSON: /);
  assert.match(fold(withValidator(), ["{}"], "42").at(-1).error, /^invalid schema: /);
  const answer = withValidator();
  fold(answer, ['{"rows": 1}']);
  answer.apply(makeEvent(4, Kind.END, { status: "completed", count: 4 }), "d");
  assert.equal(answer.status, "completed");
});

test("drafts by $schema; boolean schemas", () => {
  const d4 = JSON.stringify({ $schema: "http://json-schema.org/draft-04/schema#", type: "integer", maximum: 3, exclusiveMaximum: true });
  assert.match(fold(withValidator(), ["3"], d4).at(-1).error, /schema validation failed/);
  assert.equal(fold(withValidator(), ["2"], d4).at(-1).error, "");
  assert.match(fold(withValidator(), ["1"], "false").at(-1).error, /schema validation failed/);
  assert.equal(fold(withValidator(), ["1"], "true").at(-1).error, "");
});

test("without a validator only the JSON is checked; the option reaches every stream's answer", () => {
  assert.equal(fold(new Answer("s"), ['{"rows": "x"}']).at(-1).error, "");
  const client = new Client("ws://a/ws", { WebSocket: class {}, storage: null, lifecycle: false, validator: jsonSchema });
  assert.equal(client.validator, jsonSchema);
});
