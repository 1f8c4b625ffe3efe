/**
 * unbroken-client: the browser (and Node) client of the unbroken protocol (v2, v1).
 * Streamed agent answers that survive the network, verified by a BLAKE2b chain.
 * The public API only: the internals (session, frame codecs, MessagePack, digest
 * chain, liveness, retry table) are exported by `testing.ts` (dist/testing.js), so
 * the page bundle keeps only what `Client` uses.
 */
export { Client, Stream, streamAnswer, defaultShouldRetry } from "./client.js";
export type {
  ClientOptions,
  ConnectionEvent,
  LiveStreamInfo,
  SavedStream,
  StorageLike,
  TokenProvider,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Answer, DataChunk, JsonFragment, PartEnded, PartResult, PartStarted, StreamEnded, TextDelta, parsePartialJson } from "./response.js";
export type { SchemaValidator, StreamEvent, ToolCall } from "./response.js";
export { mimeParams, partInfo } from "./roles.js";
export type { PartInfo, Role } from "./roles.js";
export { Backoff, BackoffPolicy } from "./backoff.js";
export type { BackoffPolicyOptions, GiveUp, Reconnect, Rng } from "./backoff.js";
export { Cursor } from "./session.js";
export type { CursorLike } from "./session.js";
// (the chain's seed, for `resume` from the first event with a known epoch)
export { seed, toHex } from "./digest.js";
// (resolves once the chain can be computed: at once where WebAssembly works; a
// `Client` awaits it before it connects)
export { ready as digestReady } from "./blake2b.js";
export {
  AuthError,
  ConfigError,
  ConnectionLost,
  Forbidden,
  IntegrityError,
  LogUnavailable,
  Overloaded,
  ProtocolError,
  ReconnectExhausted,
  RequestRefused,
  RequestTimeout,
  StreamFailed,
  StreamGone,
  UnbrokenError,
  UnsupportedVersion,
} from "./errors.js";
export type { GoneReason } from "./errors.js";
export const VERSION = "0.1.0";
