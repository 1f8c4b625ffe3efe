/**
 * `dist/unbroken-v1.js`: protocol v1's JSON codec for the page bundle (loaded by
 * `codecs.ts` when a connection chose v1). It imports nothing: the core passes it its
 * own `ProtocolError` (`v1(ProtocolError)`), so `instanceof` holds whatever URL the
 * core was loaded from (see `v1-errors.ts`).
 */
import { decodeServer, encode, eventsOf } from "./frames.js";
import { useErrors } from "./v1-errors.js";
import type { V1Codec } from "./codecs.js";
import type { ProtocolError } from "./errors.js";

/** The codec, throwing the given `ProtocolError` (the loading core's class). Each
 * call takes its caller's class first: two copies of the core on one page share this
 * module, and each gets its own errors. */
export function v1(protocolError: typeof ProtocolError): V1Codec {
  const own = <A extends unknown[], R>(f: (...a: A) => R) => (...a: A): R => (useErrors(protocolError), f(...a));
  return { decodeServer: own(decodeServer), encode: own(encode), eventsOf: own(eventsOf) };
}
