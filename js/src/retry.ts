/**
 * The client's retry table (pure): which failures a reconnect can cure.
 * Network errors, timeouts, restart or overload closes are retried; auth,
 * forbidden, version and protocol failures are fatal. Mirrors
 * `unbroken/protocol/retry.py`. (A browser never sees the HTTP status of a refused
 * upgrade: a refused handshake is a dropped connection, retried.)
 */
import {
  AuthError,
  ConnectionLost,
  Forbidden,
  IntegrityError,
  ProtocolError,
  UnbrokenError,
  UnsupportedVersion,
  errorMessage,
  serverVersions,
  errorName,
} from "./errors.js";
import { CLOSE_CODE_MEANING, CloseCode } from "./frames.js";

type ErrorClass = new (message: string) => UnbrokenError;

/** Close codes after which reconnecting cannot help, and the error each becomes. */
export const FATAL_CLOSE: ReadonlyMap<number, ErrorClass> = new Map<number, ErrorClass>([
  [CloseCode.AUTH_REQUIRED, AuthError],
  [CloseCode.AUTH_FAILED, AuthError],
  [CloseCode.FORBIDDEN, Forbidden],
  [CloseCode.UNSUPPORTED_VERSION, ProtocolError],
  [CloseCode.BAD_FRAME, ProtocolError],
  [CloseCode.TOO_BIG, ProtocolError],
  [CloseCode.INVALID_DATA, ProtocolError],
]);

/** `error` codes after which the same start may be sent again later. */
export const RETRYABLE_START: ReadonlySet<string> = new Set(["overloaded", "rate_limited", "shutting_down"]);

/** `error` codes that concern one frame only and leave the stream as it was. */
export const HARMLESS_ERROR: ReadonlySet<string> = new Set(["bad_ack", "unsupported"]);

/** Refreshes refused in a row (or provider failures while refreshing) after which a
 * client stops asking and lets the connection expire (4010, then a reconnect). */
export const REFRESH_ATTEMPTS = 3;

/** Times in a row a token provider may fail (throw, or give no token) when a
 * connection is being opened before the client gives up with `AuthError`. */
export const TOKEN_ATTEMPTS = 3;

/** Seconds before asking for a token again after `failures` failures in a row (1, 2,
 * …): 0.1, 0.2, 0.4 … capped at 2 s. */
export function refreshDelay(failures: number): number {
  return Math.min(2, 0.1 * 2 ** Math.max(0, failures - 1));
}

/** HTTP statuses of a refused upgrade worth another attempt (5xx and 429). */
export function statusIsRetryable(status: number): boolean {
  return ![401, 403, 404].includes(status) && !(status >= 400 && status < 500 && status !== 429);
}

/** The retry table. (A browser never sees the HTTP status of a refused upgrade:
 * `statusIsRetryable` is the Python client's rule for it, kept for tools.) */
export function shouldRetry(exc: unknown): boolean {
  if (exc instanceof AuthError || exc instanceof Forbidden || exc instanceof ProtocolError || exc instanceof IntegrityError) {
    return false;
  }
  if (exc instanceof ConnectionLost) return exc.code === null || !FATAL_CLOSE.has(exc.code);
  // anything the transport throws (a failed socket, a timeout) is worth another attempt;
  // other errors of this library (a refused request) are not
  return !(exc instanceof UnbrokenError);
}

/** What a user sees when `error` ended the client: a typed error (`versions`: the
 * protocol versions offered; close 4005 becomes `UnsupportedVersion`). */
export function fatalError(error: unknown, versions: readonly string[] | null = null): UnbrokenError {
  if (error instanceof UnbrokenError && !(error instanceof ConnectionLost)) return error;
  // close 4005 names the versions the server speaks: say which each side speaks
  if (error instanceof ConnectionLost && error.code === CloseCode.UNSUPPORTED_VERSION && versions !== null) {
    return new UnsupportedVersion(versions, serverVersions(error.message), error.message);
  }
  if (error instanceof ConnectionLost && error.code !== null && FATAL_CLOSE.has(error.code)) {
    const Cls = FATAL_CLOSE.get(error.code)!;
    return new Cls(error.message);
  }
  if (error instanceof ConnectionLost) return error;
  return new ConnectionLost(`${errorName(error)}: ${errorMessage(error)}`);
}

/** The error a closed connection means, from the close received (`null`: the socket
 * dropped without one, 1006) and the close this client sent (`null`: none). */
export function closeError(
  received: [number, string] | null,
  sent: [number, string] | null,
): ProtocolError | ConnectionLost {
  if (received === null && sent !== null && (sent[0] === CloseCode.INVALID_DATA || sent[0] === CloseCode.TOO_BIG)) {
    return new ProtocolError(
      `frame refused (close ${sent[0]}: ${sent[1] || CLOSE_CODE_MEANING[sent[0]] || ""})`,
    );
  }
  return closedBy(received);
}

/** `closeError` when this client sent no close (the client's case: the core's
 * bundle leaves the rest out). */
export function closedBy(received: [number, string] | null): ConnectionLost {
  if (received === null) return new ConnectionLost("connection dropped");
  const [code, reason] = received;
  return new ConnectionLost(reason || "connection closed", code, code === CloseCode.OVERLOADED ? shedWait(reason) : null);
}

/** The `retry_after_ms` a close 4008's reason carries, in seconds (null: not there).
 * The server puts it in the reason too: a client that never read the `error
 * overloaded` before the close still waits that long. */
export function shedWait(reason: string): number | null {
  const m = /retry_after_ms=(\d{1,9})(?!\d)/.exec(reason);
  return m === null ? null : Number(m[1]) / 1000;
}

/** One line saying why a connection ended, for events and logs. */
export function causeOf(error: unknown): string {
  if (error instanceof ConnectionLost && error.code !== null) {
    return `close ${error.code}: ${CLOSE_CODE_MEANING[error.code] ?? ""} (${error.message})`;
  }
  return `${errorName(error)}: ${errorMessage(error)}`;
}
