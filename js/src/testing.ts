/**
 * Everything of the client, internals included (the liveness rule, frame codecs
 * of both versions, the digest chain, MessagePack), for tests, tools and benchmarks:
 * `dist/testing.js`: the page bundle's exports plus what only a server or a test needs
 * (decoding a client's v2 frames). Pages use `dist/unbroken.js`.
 */
export * from "./index.js";
import { useV1 } from "./codecs.js";
import { v1 } from "./v1.js";
// (the page bundle loads protocol v1's codec when a server speaks v1; here it is built in)
useV1(v1(ProtocolError));
export { loadV1, useV1 } from "./codecs.js";
// the internals (index.ts exports the public API only)
export { seededRng } from "./backoff.js";
export { Liveness, MAX_RTO, BULK } from "./liveness.js";
export type { Check } from "./liveness.js";

export type { FrameV2 } from "./client.js";
export { FATAL_CLOSE, HARMLESS_ERROR, REFRESH_ATTEMPTS, RETRYABLE_START, TOKEN_ATTEMPTS, causeOf, closeError, fatalError, refreshDelay, shouldRetry, statusIsRetryable } from "./retry.js";
export { ChainVerifier, fromHex, payload, stepEvent, stepInput } from "./digest.js";
export {
  CAP_BATCH,
  CAP_REFRESH,
  CAP_STREAMS,
  CAP_UNAVAILABLE,
  CLOSE_CODE_MEANING,
  CloseCode,
  DEFAULT_LIMITS,
  DEFAULT_MAX_FRAME,
  KIND_BY_NAME,
  Kind,
  NAME_BY_KIND,
  SUBPROTOCOLS,
  VERSIONS,
  decodeClient,
  decodeServer,
  encode,
  encodeItems,
  eventsOf,
  makeEvent,
} from "./frames.js";
export type * from "./frames.js";
export { CAP_ZLIB, decodeServerV2, encodeClientV2, eventsOfV2, framesOfV2, inflate, isZlib } from "./frames2.js";
export { CLIENT_TAGS, SERVER_TAGS, encodeV2, frameOf } from "./frames2-peer.js";
export type { Carried } from "./frames2.js";
export { pack, packFrame, unpack, unpackBatch } from "./msgpack.js";
export { ChainMismatch, errorMessage, errorName, serverVersions } from "./errors.js";

import { ProtocolError } from "./errors.js";
import { CLOSE_CODE_MEANING as _meaning, CloseCode, DEFAULT_MAX_FRAME, Kind, NAME_BY_KIND, type ClientFrame, type Event } from "./frames.js";
import { type Carried } from "./frames2.js";
import { CLIENT_TAGS, frameOf } from "./frames2-peer.js";
import { unpack } from "./msgpack.js";
void _meaning;

/** Decode a v2 frame a client sent (what a server does; tests and tools): the v1
 * frame object. `start`'s input is JSON text held to v1's rules (one value, no key
 * repeated in any object). Throws `ProtocolError`. */
export function decodeClientV2(data: Uint8Array, maxSize = DEFAULT_MAX_FRAME): ClientFrame {
  if (data.length > maxSize) throw new ProtocolError(`frame of ${data.length} bytes is over the limit of ${maxSize}`, CloseCode.TOO_BIG);
  const f = frameOf(unpack(data), CLIENT_TAGS, "client");
  if (f.t === "start") {
    const text = f.input as string;
    try {
      f.input = JSON.parse(text);
    } catch (e) {
      throw new ProtocolError(`invalid frame: start input is not JSON: ${(e as Error).message.split("\n")[0]}`);
    }
    const dup = duplicateKey(text);
    if (dup !== null) throw new ProtocolError(`invalid frame: duplicate key ${JSON.stringify(dup).slice(0, 80)} in an object`);
  }
  return f as unknown as ClientFrame;
}

/** The first key repeated in a JSON object of `text` (valid JSON), or `null`. */
export function duplicateKey(text: string): string | null {
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const keys = stack[stack.length - 1]!;
        const k = JSON.parse(text.slice(i, j + 1)) as string;
        if (keys.has(k)) return k;
        keys.add(k);
        expectKey = false;
      }
      i = j;
    } else if (c === "{") {
      stack.push(new Set());
      expectKey = true;
    } else if (c === "[") stack.push(null);
    else if (c === "}" || c === "]") stack.pop();
    else if (c === ",") expectKey = stack[stack.length - 1] != null;
  }
  return null;
}

/** The v2 `items` of `events` after a frame that left `carried` current (updated):
 * what a v2 server sends (tests, tools). */
export function encodeItemsV2(events: readonly Event[], carried: Carried): unknown[] {
  const items: unknown[] = [];
  const chunkOf: Record<string, number> = { text: 1, json: 2, data: 3 };
  for (const ev of events) {
    switch (ev.kind) {
      case Kind.TEXT:
      case Kind.JSON:
      case Kind.DATA:
        if (ev.part === carried.part && ev.kind === carried.kind) items.push(ev.body);
        else {
          items.push([ev.kind, ev.part, ev.body]);
          carried.part = ev.part;
          carried.kind = ev.kind;
        }
        break;
      case Kind.PART_START:
        items.push(ev.schema ? [4, ev.part, ev.partKind, ev.mime, ev.schema] : ev.mime ? [4, ev.part, ev.partKind, ev.mime] : [4, ev.part, ev.partKind]);
        carried.part = ev.part;
        carried.kind = chunkOf[ev.partKind];
        break;
      case Kind.PART_END:
        items.push(ev.error ? [5, ev.part, ev.error] : [5, ev.part]);
        if (carried.part === ev.part) {
          carried.part = "";
          carried.kind = 0;
        }
        break;
      default:
        items.push(ev.error ? [6, ev.status, ev.count, ev.error] : [6, ev.status, ev.count]);
        void NAME_BY_KIND;
    }
  }
  return items;
}
