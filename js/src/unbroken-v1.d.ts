// The type of dist/unbroken-v1.js (built from v1.ts) as codecs.ts imports it: the
// page bundle's sibling, loaded at run time (external to esbuild).
import type { V1Codec } from "./codecs.js";
export declare const v1: V1Codec;
