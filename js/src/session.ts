/**
 * Cursors: where a client is in a stream, enough to resume it anywhere (the
 * protocol's client side itself is `Client`, client.ts). Mirrors the cursor of
 * `unbroken/client`.
 */
import { ConfigError } from "./errors.js";

/** A cursor's four fields, as saved (JSON) or typed by hand. */
export interface CursorLike {
  stream: string;
  seq: number;
  digest: string;
  epoch: string;
}

const CURSOR_TAG = "ub1";
const CURSOR_ID = /^[A-Za-z0-9_-]{1,64}$/;
const CURSOR_SEQ = /^(0|[1-9][0-9]{0,15})$/;
const CURSOR_DIGEST = /^[0-9a-f]{32}$/;
const cut = (text: string) => JSON.stringify(text.length > 80 ? text.slice(0, 79) + "…" : text);

/** Where a client is in a stream: enough to resume it later, anywhere.
 * `String(cursor)` is a compact, URL-safe string (`ub1.<stream>.<seq>.<digest>.<epoch>`,
 * the same as Python's `str(cursor)`) to keep in a cookie, `localStorage` or a
 * database; `Cursor.parse` turns it back into the same cursor. */
export class Cursor implements CursorLike {
  constructor(
    readonly stream: string,
    readonly seq: number,
    readonly digest: string,
    readonly epoch: string,
  ) {}

  toString(): string {
    return `${CURSOR_TAG}.${this.stream}.${this.seq}.${this.digest}.${this.epoch}`;
  }

  /** The cursor `String(cursor)` gave, or a saved one's fields (checked the same
   * way); `ConfigError` when it is not one (the message says which field is wrong). */
  static parse(text: string | CursorLike): Cursor {
    if (typeof text === "object" && text !== null) {
      const c = text as Partial<CursorLike>;
      text = `${CURSOR_TAG}.${c.stream}.${c.seq}.${c.digest}.${c.epoch}`;
    }
    if (typeof text !== "string") throw new ConfigError(`a cursor is a string, got ${text === null ? "null" : typeof text}`);
    const fields = text.split(".");
    if (fields.length !== 5 || fields[0] !== CURSOR_TAG) {
      throw new ConfigError(`not a cursor: ${cut(text)}`);
    }
    const [, stream, seq, digest, epoch] = fields;
    for (const [name, value, pattern] of [
      ["stream id", stream, CURSOR_ID],
      ["seq", seq, CURSOR_SEQ],
      ["digest", digest, CURSOR_DIGEST],
      ["epoch", epoch, CURSOR_ID],
    ] as const) {
      if (!pattern.test(value)) throw new ConfigError(`cursor ${cut(text)}: bad ${name} ${JSON.stringify(value)}`);
    }
    if (BigInt(seq) > 2n ** 53n) throw new ConfigError(`cursor ${cut(text)}: seq ${seq} is out of range`);
    return new Cursor(stream, Number(seq), digest, epoch);
  }
}
