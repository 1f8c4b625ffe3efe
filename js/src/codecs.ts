/**
 * Protocol v1's JSON codec, apart from the page bundle: a server that answers in v1
 * (one that predates v2, or a client pinned to it) is rare, so `dist/unbroken.js`
 * loads `dist/unbroken-v1.js` (`v1.ts`) from next to itself only when a connection
 * chose v1, before its `hello`. `dist/testing.js` holds it from the start.
 */
import { ConfigError, ProtocolError } from "./errors.js";
import type { decodeServer, encode, eventsOf } from "./frames.js";

/** What the session needs of v1 (frames.ts). */
export interface V1Codec {
  decodeServer: typeof decodeServer;
  encode: typeof encode;
  eventsOf: typeof eventsOf;
}

/** The v1 codec once loaded (`null` before). */
export let v1: V1Codec | null = null;

export function useV1(codec: V1Codec): void {
  v1 = codec;
}

/** Load the v1 codec (once); `ConfigError` when its module cannot be loaded. The
 * specifier is the built file's sibling (external to esbuild; `unbroken-v1.d.ts`
 * types it), literal so that an app's bundler follows it too. */
export async function loadV1(): Promise<void> {
  if (v1 !== null) return;
  try {
    // (the module imports nothing: it throws this bundle's own ProtocolError)
    useV1((await import("./unbroken-v1.js")).v1(ProtocolError));
  } catch (e) {
    throw new ConfigError(`protocol v1 needs unbroken-v1.js beside unbroken.js (${(e as Error)?.message ?? e})`);
  }
}
