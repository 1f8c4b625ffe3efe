/**
 * What a server, a test or a tool needs of protocol v2 beyond a client (`dist/testing.js`
 * only; the page bundle has `frames2.ts`): the client frames' tags and checks, and
 * the encoder of any frame, either side. Mirrors `unbroken/protocol/frames_v2.py`.
 */
import { ProtocolError } from "./errors.js";
import { CLIENT_FRAMES, DEFAULT_LIMITS, F, LIMIT_FIELDS, REQUIRED, type ClientFrame, type Field } from "./frames.js";
import { SERVER_TAGS, fromHexBytes } from "./frames2.js";
import { pack } from "./msgpack.js";

const isBin16 = (v: unknown) => v instanceof Uint8Array && v.length === 16;

/** The fields of v1's client frame `t`, in the v2 order `names`, some replaced. */
function C(t: string, names: string, extra: Record<string, Field> = {}): [string, readonly Field[]] {
  return [t, names.split(" ").map((n) => extra[n] ?? CLIENT_FRAMES[t].find((f) => f[0] === n)!)];
}

/** Client → server frames by tag (§19.2). */
export const CLIENT_TAGS: Record<number, [string, readonly Field[]]> = {
  16: C("hello", "caps token anon"),
  17: C("start", "req agent input", { input: F("input", (v) => typeof v === "string" && v.length > 0, "null") }),
  18: C("resume", "stream after epoch h", { h: F("h", (v) => v === null || isBin16(v), null) }),
  19: C("ack", "stream seq"),
  20: C("cancel", "stream"),
  21: C("refresh", "token"),
  22: C("ping", "n"),
  23: C("list", "n"),
};

function isDefault(v: unknown, dflt: unknown): boolean {
  return v === dflt || (Array.isArray(v) && Array.isArray(dflt) && v.length === 0 && dflt.length === 0);
}

/** A frame (either side, v1 field names; `started`/`resumed`/`events` with their
 * `handle`) as the bytes of a v2 message: trailing fields equal to their default
 * left out (except `ping`/`pong`'s `n`), as the Python encoder does. */
export function encodeV2(frame: ClientFrame | Record<string, unknown>): Uint8Array {
  const f = frame as Record<string, unknown>;
  let tag = -1;
  for (const table of [SERVER_TAGS, CLIENT_TAGS]) for (const [k, [t]] of Object.entries(table)) if (t === f.t) tag = +k;
  if (tag < 0) throw new ProtocolError(`cannot encode frame type ${String(f.t)}`);
  const fields = (SERVER_TAGS[tag] ?? CLIENT_TAGS[tag])[1];
  const out: unknown[] = [tag];
  for (const [wire, , dflt] of fields) {
    let v = f[wire] === undefined && dflt !== REQUIRED ? dflt : f[wire];
    if (wire === "limits") {
      const lim: Record<string, unknown> = {};
      for (const k of LIMIT_FIELDS) {
        const x = (v as Record<string, unknown> | undefined)?.[k];
        if (x !== undefined && x !== DEFAULT_LIMITS[k]) lim[k] = x;
      }
      v = lim;
    } else if (f.t === "start" && wire === "input") v = JSON.stringify(f.input ?? null);
    else if (wire === "h" && typeof v === "string") v = fromHexBytes(v);
    else if (f.t === "streams" && wire === "items") {
      v = (v as Record<string, unknown>[]).map((i) => [i.stream, i.agent, i.epoch, i.head, fromHexBytes(i.h as string), i.status ?? "running"]);
    }
    out.push(v);
  }
  if (f.t !== "ping" && f.t !== "pong" && f.t !== "events") {
    let n = out.length;
    while (n > 1) {
      const [wire, , dflt] = fields[n - 2];
      const v = out[n - 1];
      const isDflt = wire === "limits" ? Object.keys(v as object).length === 0 : wire === "input" ? v === "null" : dflt !== REQUIRED && isDefault(v, dflt);
      if (!isDflt) break;
      n--;
    }
    out.length = n;
  }
  return pack(out);
}
