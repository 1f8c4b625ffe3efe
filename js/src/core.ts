/**
 * unbroken-client/core: the client's core, for apps built with a bundler. Its
 * `Client` keeps every guarantee (verified events exactly once, reconnects with
 * backoff and URL rotation, silence detection, the page lifecycle, cursors kept
 * across a reload, typed errors, cancel, connection events); the features not every
 * app needs are opt-in (plugins.ts: `TokenRefresh`, `StreamListing`, `Zlib` in `plugins`;
 * `streams`, `join`, `read`, `connectionEvents` as functions), so the app's bundle
 * holds only what it imports. `unbroken-client` (index.ts) is the same with all of
 * them in its `Client`. The public API only: the internals are exported by
 * `testing.ts` (dist/testing.js).
 */
export { Client, Stream, defaultShouldRetry } from "./client.js";
export { TokenRefresh, StreamListing, Zlib, connectionEvents, join, read, streams } from "./plugins.js";
export type {
  ClientOptions,
  ConnectionEvent,
  LiveStreamInfo,
  Plugin,
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
