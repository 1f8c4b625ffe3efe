/**
 * JSON Schema validation of JSON parts, for the client's `validator` option:
 *
 * ```js
 * import { Client } from "unbroken-client";
 * import { jsonSchema } from "unbroken-client/schema";
 * const client = new Client(url, { validator: jsonSchema });
 * ```
 *
 * A JSON part whose `part_start` declared a schema then ends with
 * `PartEnded.error` "schema validation failed: …" when its value does not match, as
 * in the Python client. Drafts 4, 7, 2019-09 and 2020-12 (by the schema's `$schema`;
 * default 2020-12), by `@cfworker/json-schema` (no code generation: fine under a
 * strict Content-Security-Policy), bundled into this module (dist/schema.js), so
 * the core bundle does not grow.
 */
import { Validator, type Schema, type SchemaDraft } from "@cfworker/json-schema";
import type { SchemaValidator } from "./core.js";

const DRAFTS: [string, SchemaDraft][] = [
  ["draft-04", "4"],
  ["draft-07", "7"],
  ["2019-09", "2019-09"],
  ["2020-12", "2020-12"],
];

const cache = new WeakMap<object, Validator>();

function validatorOf(schema: unknown): Validator {
  if (typeof schema === "boolean") return new Validator(schema, "2020-12");
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw new Error("a schema is an object or a boolean");
  let v = cache.get(schema);
  if (v === undefined) {
    const declared = (schema as { $schema?: unknown }).$schema;
    const draft = typeof declared === "string" ? (DRAFTS.find(([k]) => declared.includes(k))?.[1] ?? "2020-12") : "2020-12";
    v = new Validator(schema as Schema, draft, false);
    cache.set(schema, v);
  }
  return v;
}

/** JSON Schema checks for `new Client(url, { validator: jsonSchema })`. */
export const jsonSchema: SchemaValidator = {
  checkSchema(schema: unknown): string {
    validatorOf(schema);
    return "";
  },
  validate(value: unknown, schema: unknown): string {
    const result = validatorOf(schema).validate(value);
    if (result.valid) return "";
    // the most specific error: the one at the deepest instance location
    let best = result.errors[0];
    for (const e of result.errors) if (e.instanceLocation.length > best.instanceLocation.length) best = e;
    return `${best.error} (at ${best.instanceLocation})`;
  },
};
