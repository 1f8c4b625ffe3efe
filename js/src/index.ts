/**
 * unbroken-client: the browser (and Node) client of the unbroken protocol (v2, v1).
 * Streamed agent answers that survive the network, verified by a BLAKE2b chain.
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
export { Backoff, BackoffPolicy, Reconnects, seededRng } from "./backoff.js";
export type { BackoffPolicyOptions, GiveUp, Reconnect, Rng } from "./backoff.js";
export { Liveness, MAX_RTO, BULK } from "./liveness.js";
export type { Check } from "./liveness.js";
export { ClientSession, ConsumedCursor, ClientStream, endError } from "./session.js";
export { Cursor } from "./session.js";
export type { AskToken, ClientOutput, CursorLike, ErrorAction } from "./session.js";
export { FATAL_CLOSE, HARMLESS_ERROR, REFRESH_ATTEMPTS, RETRYABLE_START, TOKEN_ATTEMPTS, causeOf, closeError, fatalError, refreshDelay, shouldRetry, statusIsRetryable } from "./retry.js";
export { ChainVerifier, fromHex, payload, seed, stepEvent, stepInput, toHex } from "./digest.js";
export {
  CAP_BATCH,
  CAP_REFRESH,
  CAP_STREAMS,
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
export { CAP_ZLIB, CLIENT_TAGS, SERVER_TAGS, decodeServerV2, encodeV2, eventsOfV2, frameOf, framesOfV2, inflate, isZlib } from "./frames2.js";
export type { Carried } from "./frames2.js";
export { pack, unpack, Reader } from "./msgpack.js";
export * from "./errors.js";
export const VERSION = "0.1.0";
