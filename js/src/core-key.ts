/**
 * The key under which `Client` (as a static member) holds what modules built apart
 * from the core (`dist/ai-sdk.js`) need of it at run time. They never import the core:
 * a page that loads it under another URL (`unbroken.js?v=<hash>`, a renamed file)
 * would get a second copy, with its own classes. They take it from the `Client` they
 * are given instead. (`Symbol.for`: the same key in every bundle.)
 */
export const CORE = Symbol.for("unbroken-client.core");

/** What the core gives those modules. */
export interface CoreHelpers {
  seed(stream: string, epoch: string): Uint8Array;
  toHex(b: Uint8Array): string;
  /** resolves once `seed` can run (BLAKE2b's JavaScript chunk where WebAssembly is refused) */
  ready(): Promise<void>;
}
