// The type of dist/unbroken-v1.js (built from v1.ts) as codecs.ts imports it: the
// page bundle's sibling, loaded at run time (external to esbuild).
import type { V1Codec } from "./codecs.js";
import type { ProtocolError } from "./errors.js";
export declare function v1(protocolError: typeof ProtocolError): V1Codec;
