/**
 * `dist/unbroken-v1.js`: protocol v1's JSON codec for the page bundle (loaded by
 * `codecs.ts` when a connection chose v1). Its errors are the page bundle's own
 * classes (imported from `./unbroken.js`), so `instanceof` holds across both.
 */
import { decodeServer, encode, eventsOf } from "./frames.js";
import type { V1Codec } from "./codecs.js";

export const v1: V1Codec = { decodeServer, encode, eventsOf };
