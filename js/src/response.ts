/**
 * What a client user sees: typed events, and the assembled, verified answer.
 * Mirrors `unbroken/client/response.py`. A JSON part is checked when it ends: its
 * text must parse, and, with a `SchemaValidator` (the client's `validator` option;
 * `unbroken-client/schema` has one), match the schema its `part_start` declared.
 * A failed check fails the part (`PartEnded.error`), never the stream or the client.
 */
import { Kind, type Event } from "./frames.js";
import { PLAIN, partInfo, type PartInfo } from "./roles.js";

/** A part opened: `kind` is text, json or data; `role` what it is in the answer
 * (`reasoning`, `tool-call`, `tool-result`, `metadata`, or "": answer text, JSON, data);
 * `tool`, `call`: a tool call's (or result's) tool name and call id. */
export class PartStarted {
  readonly type = "part_started";
  constructor(
    readonly seq: number,
    readonly part: string,
    readonly kind: string,
    readonly mime: string,
    readonly schema: unknown,
    readonly role: string = "",
    readonly tool: string = "",
    readonly call: string = "",
  ) {}
}

/** A piece of a text part. */
export class TextDelta {
  readonly type = "text_delta";
  constructor(
    readonly seq: number,
    readonly part: string,
    readonly text: string,
  ) {}
}

/** A piece of a JSON part; `partial()` parses the part's text so far. */
export class JsonFragment {
  readonly type = "json_fragment";
  constructor(
    readonly seq: number,
    readonly part: string,
    readonly fragment: string,
    private readonly result: PartResult,
    private readonly count: number,
  ) {}

  /** The part's JSON text up to and including this fragment. */
  get textSoFar(): string {
    return this.result.chunks.slice(0, this.count).join("");
  }

  /** Best-effort value of the JSON received so far. */
  partial(): unknown {
    return parsePartialJson(this.textSoFar);
  }
}

/** A piece of a data component (components arrive whole in `PartEnded`). */
export class DataChunk {
  readonly type = "data_chunk";
  constructor(
    readonly seq: number,
    readonly part: string,
    readonly body: string,
  ) {}
}

/** A part closed; `error` is non-empty if it is invalid. */
export class PartEnded {
  readonly type = "part_ended";
  constructor(
    readonly seq: number,
    readonly part: string,
    readonly error: string,
    readonly result: PartResult,
  ) {}
}

/** The final event: status, error and the verified digest (hex); with the answer's
 * finish reason, usage and metadata as its metadata parts gave them. */
export class StreamEnded {
  readonly type = "stream_ended";
  constructor(
    readonly seq: number,
    readonly status: string,
    readonly error: string,
    readonly digest: string,
    readonly finishReason: string = "",
    readonly usage: Record<string, unknown> = {},
    readonly metadata: Record<string, unknown> = {},
  ) {}
}

/** A tool call in an answer, with its result when the agent wrote one. `args`: the
 * parsed arguments (undefined until its part ended, or when they are not JSON). */
export interface ToolCall {
  id: string;
  name: string;
  part: string;
  arguments: string;
  args: unknown;
  ended: boolean;
  error: string;
  hasResult: boolean;
  result: unknown;
  resultError: string;
  resultPart: string;
}

export type StreamEvent = PartStarted | TextDelta | JsonFragment | DataChunk | PartEnded | StreamEnded;

/** One part of an answer. */
export class PartResult {
  readonly chunks: string[] = [];
  ended = false;
  error = "";
  constructor(
    readonly part: string,
    readonly kind: string,
    readonly mime = "",
    readonly schema: unknown = null,
    /** what its mime says it is (docs/reference/protocol.md §6.3) */
    readonly info: PartInfo = PLAIN,
  ) {}

  get text(): string {
    return this.chunks.join("");
  }

  /** `reasoning`, `tool-call`, `tool-result`, `metadata` or "". */
  get role(): string {
    return this.info.role;
  }

  /** Parsed value: JSON for json parts (and JSON data), bytes for base64 data, else text. */
  get value(): unknown {
    const raw = this.text;
    const base = this.mime.split(";")[0];
    if (this.kind === "json" || (this.kind === "data" && base.includes("json"))) return JSON.parse(raw);
    if (this.kind === "data" && this.mime.endsWith(";base64")) {
      const bin = atob(raw);
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out;
    }
    return raw;
  }
}

/** Checks JSON parts against the JSON Schema their `part_start` declared (the
 * client's `validator` option). Each returns why not ("" when fine). */
export interface SchemaValidator {
  /** why `schema` cannot be used (checked when the part starts; optional) */
  checkSchema?(schema: unknown): string;
  /** why `value` (the part's parsed text) does not match `schema` */
  validate(value: unknown, schema: unknown): string;
}

/** Everything received for a stream, assembled part by part. */
export class Answer {
  /** checks JSON parts against their schemas (none: only that they parse) */
  validator: SchemaValidator | null = null;
  readonly parts = new Map<string, PartResult>();
  readonly order: string[] = [];
  status = "running";
  error = "";
  digest = "";
  events = 0;
  constructor(
    public stream: string,
    /** above 0 when picked up from a saved cursor (earlier events absent) */
    readonly fromSeq = 0,
  ) {}

  /** The answer's text: its text parts (reasoning left out), in the order they started. */
  get text(): string {
    let s = "";
    for (const p of this.order) {
      const pr = this.parts.get(p)!;
      if (pr.kind === "text" && pr.info.role === "") s += pr.text;
    }
    return s;
  }

  /** The model's reasoning: the text parts with role `reasoning`, in order. */
  get reasoning(): string {
    let s = "";
    for (const p of this.order) {
      const pr = this.parts.get(p)!;
      if (pr.info.role === "reasoning") s += pr.text;
    }
    return s;
  }

  /** The tool calls in the order they started, each with its result (by call id). */
  get toolCalls(): ToolCall[] {
    const found: ToolCall[] = [];
    const byId = new Map<string, ToolCall>();
    const make = (id: string, name: string, part: string): ToolCall => {
      const c: ToolCall = {
        id, name, part, arguments: "", args: undefined, ended: false, error: "",
        hasResult: false, result: undefined, resultError: "", resultPart: "",
      };
      byId.set(id, c);
      found.push(c);
      return c;
    };
    for (const p of this.order) {
      const pr = this.parts.get(p)!;
      const { role, call: id, tool } = pr.info;
      if (role === "tool-call") {
        let c = byId.get(id);
        if (c === undefined || c.part) c = make(id, tool, pr.part);
        c.part = pr.part;
        c.name = tool || c.name;
        c.arguments = pr.text;
        c.ended = pr.ended;
        c.error = pr.error;
        if (pr.ended && !pr.error) {
          try {
            c.args = c.arguments.trim() ? JSON.parse(c.arguments) : {};
          } catch {
            c.args = undefined;
          }
        }
      } else if (role === "tool-result" && pr.ended) {
        const c = byId.get(id) ?? make(id, tool, "");
        c.hasResult = true;
        c.resultPart = pr.part;
        c.resultError = pr.error;
        try {
          c.result = pr.value;
        } catch {
          c.result = pr.text;
        }
      }
    }
    return found;
  }

  /** Every ended metadata part's fields, merged in order. */
  get metadata(): Record<string, unknown> {
    return Object.assign({}, ...this.metadataParts());
  }

  /** Why the model stopped, as the last metadata part says ("" when unsaid). */
  get finishReason(): string {
    const r = this.metadata.finish_reason;
    return typeof r === "string" ? r : "";
  }

  /** Tokens used, summed over every metadata part's `usage`. */
  get usage(): Record<string, unknown> {
    const total: Record<string, unknown> = {};
    for (const m of this.metadataParts()) {
      const u = m.usage;
      if (u !== null && typeof u === "object" && !Array.isArray(u)) addUsage(total, u as Record<string, unknown>);
    }
    return total;
  }

  private metadataParts(): Record<string, unknown>[] {
    const found: Record<string, unknown>[] = [];
    for (const p of this.order) {
      const pr = this.parts.get(p)!;
      if (pr.info.role !== "metadata" || !pr.ended || pr.error) continue;
      try {
        const v = pr.value;
        if (v !== null && typeof v === "object" && !Array.isArray(v)) found.push(v as Record<string, unknown>);
      } catch {
        // not JSON: left out
      }
    }
    return found;
  }

  /** True once the stream ended `completed` and was verified end to end. */
  get complete(): boolean {
    return this.status === "completed" && this.fromSeq === 0;
  }

  json(part: string): unknown {
    return this.parts.get(part)?.value;
  }

  /** Fold one protocol event into the answer; returns the typed event. */
  apply(ev: Event, digestHex: string): StreamEvent {
    this.events = ev.seq;
    switch (ev.kind) {
      case Kind.TEXT:
        this.part(ev.part, "text").chunks.push(ev.body);
        return new TextDelta(ev.seq, ev.part, ev.body);
      case Kind.JSON: {
        const pr = this.part(ev.part, "json");
        pr.chunks.push(ev.body);
        return new JsonFragment(ev.seq, ev.part, ev.body, pr, pr.chunks.length);
      }
      case Kind.DATA:
        this.part(ev.part, "data").chunks.push(ev.body);
        return new DataChunk(ev.seq, ev.part, ev.body);
      case Kind.PART_START: {
        const [schema, badSchema] = schemaOf(ev.schema, this.validator);
        const info = partInfo(ev.part, ev.partKind, ev.mime);
        const pr = new PartResult(ev.part, ev.partKind, ev.mime, schema, info);
        pr.error = badSchema; // a bad schema fails this part, never the client
        if (!this.parts.has(ev.part)) this.order.push(ev.part);
        this.parts.set(ev.part, pr);
        return new PartStarted(ev.seq, ev.part, ev.partKind, ev.mime, schema, info.role, info.tool, info.call);
      }
      case Kind.PART_END: {
        const pr = this.part(ev.part, "");
        pr.ended = true;
        pr.error = ev.error || pr.error || clientCheck(pr, this.validator);
        return new PartEnded(ev.seq, ev.part, pr.error, pr);
      }
      default:
        this.status = ev.status;
        this.error = ev.error;
        this.digest = digestHex;
        return new StreamEnded(ev.seq, ev.status, ev.error, digestHex, this.finishReason, this.usage, this.metadata);
    }
  }

  private part(part: string, kind: string): PartResult {
    let pr = this.parts.get(part);
    if (pr === undefined) {
      pr = new PartResult(part, kind);
      this.parts.set(part, pr);
      this.order.push(part);
    }
    return pr;
  }
}

function addUsage(total: Record<string, unknown>, usage: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(usage)) {
    const have = total[k];
    if (typeof v === "number" && typeof have === "number") total[k] = have + v;
    else if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const sub = have !== null && typeof have === "object" && !Array.isArray(have) ? (have as Record<string, unknown>) : {};
      addUsage(sub, v as Record<string, unknown>);
      total[k] = sub;
    } else total[k] = v;
  }
}

const why = (e: unknown) => String((e as Error)?.message ?? e).split("\n")[0].slice(0, 200);

function schemaOf(text: string, validator: SchemaValidator | null): [unknown, string] {
  if (!text) return [null, ""];
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch (e) {
    return [null, `schema is not JSON: ${why(e)}`];
  }
  if (typeof s !== "object" && typeof s !== "boolean") return [null, "invalid schema: not an object"];
  let bad = "";
  try {
    bad = validator?.checkSchema?.(s) ?? "";
  } catch (e) {
    bad = why(e);
  }
  return bad ? [null, `invalid schema: ${bad}`] : [s, ""];
}

function clientCheck(pr: PartResult, validator: SchemaValidator | null): string {
  if (pr.kind !== "json") return "";
  let value: unknown;
  try {
    value = JSON.parse(pr.text);
  } catch (e) {
    return `invalid JSON: ${why(e)}`;
  }
  if (pr.schema !== null && validator !== null) {
    let bad: string;
    try {
      bad = validator.validate(value, pr.schema);
    } catch (e) {
      bad = why(e);
    }
    if (bad) return `schema validation failed: ${bad}`;
  }
  return "";
}

/** Parse a JSON prefix as far as it goes; `null` if nothing usable yet. Open
 * strings, arrays and objects are closed; a key without a value, a trailing comma
 * or an unfinished literal are dropped. */
export function parsePartialJson(text: string): unknown {
  const n = text.length;
  // the open containers, innermost last: "]" an array, "}" an object, "k" an object
  // expecting a key; the end of the longest prefix that is whole values, and what
  // was open there
  let open = "";
  let safe = 0;
  let safeOpen = "";
  let openString = false;
  const done = (end: number, value = true) => {
    // (a value where a key was due: read on as a value, the next string too)
    if (value && open.endsWith("k")) open = open.slice(0, -1) + "}";
    safe = end;
    safeOpen = open;
  };
  const closers = (s: string) => [...s].reverse().join("").replace(/k/g, "}");
  for (let i = 0; i < n; ) {
    const ch = text[i];
    const top = open[open.length - 1];
    if (ch === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (j >= n) {
        // an unfinished string: a value is closed where it stops, a key dropped
        openString = top !== "k";
        break;
      }
      if (top === "k") open = open.slice(0, -1) + "}";
      else done(j + 1);
      i = j + 1;
    } else if (ch === "[" || ch === "{") {
      open += ch === "[" ? "]" : "k";
      done(++i, false);
    } else if (ch === "]" || ch === "}") {
      open = open.slice(0, -1);
      done(++i);
    } else if (ch === "," || ch === ":" || /\s/.test(ch)) {
      // (after a comma an object expects a key; after a colon, a value)
      if (top === "k" ? ch === ":" : ch === "," && top === "}") open = open.slice(0, -1) + (top === "k" ? "}" : "k");
      i++;
    } else {
      // a number or a literal: whole once a delimiter follows, or if it parses
      let j = i;
      while (j < n && !",]}: \t\r\n".includes(text[j])) j++;
      if (j >= n) {
        try {
          JSON.parse(text.slice(i));
          done(j);
        } catch {
          /* unfinished literal */
        }
        break;
      }
      done((i = j));
    }
  }
  for (const c of [openString ? text.replace(/\\$/, "") + '"' + closers(open) : "", text.slice(0, safe) + closers(safeOpen)]) {
    try {
      if (c) return JSON.parse(c);
    } catch {
      /* next */
    }
  }
  return null;
}
