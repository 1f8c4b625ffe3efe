/**
 * The errors of `dist/unbroken-v1.js`: the core's own classes, given to it by the
 * core when it loads the module (`v1.ts`'s `v1()`), never imported. (An import of
 * `./unbroken.js` would load a second copy of the core whenever the page loaded it
 * under another URL, `unbroken.js?v=<hash>` or a renamed file: its errors would not be
 * the page's classes.) build.mjs points `frames.ts`'s `./errors.js` here for that
 * bundle only.
 */
import type { ProtocolError as CoreProtocolError } from "./errors.js";

/** What the v1 codec throws: the core's `ProtocolError`. */
export let ProtocolError: typeof CoreProtocolError;

/** Take the core's `ProtocolError` (once, at load). */
export function useErrors(protocolError: typeof CoreProtocolError): void {
  ProtocolError = protocolError;
}
