/**
 * One error hierarchy for everything a user of the client can catch (mirrors
 * `unbroken/errors.py`). Every error says what happened and what to do about it.
 * Catch `UnbrokenError` to catch them all.
 */

export type GoneReason = "unknown" | "expired" | "epoch" | "diverged" | "forbidden";

const GONE_ADVICE: Record<string, string> = {
  unknown: "unknown id; check it",
  expired: "past the retention TTL; raise the TTL",
  epoch: "the server's log was restarted or lost; start the request again",
  diverged: "your events differ from the server's log; start the request again",
  forbidden: "another principal's; use the credentials that started it",
};

/** Base class of every error raised by the client. */
export class UnbrokenError extends Error {
}

/** A frame broke the wire protocol; `closeCode` is the WebSocket close code it means. */
export class ProtocolError extends UnbrokenError {
  readonly closeCode: number;
  constructor(message: string, closeCode = 4000) {
    super(message);
    this.closeCode = closeCode;
  }
}

/** Client and server share no protocol version (close 4005); retrying will not help.
 * `clientVersions` and `serverVersions` (e.g. `["v1"]`) say what each side speaks:
 * upgrade the older side, or offer a version the server speaks (the `protocols`
 * option). */
export class UnsupportedVersion extends ProtocolError {
  readonly clientVersions: string[];
  readonly serverVersions: string[];
  constructor(clientVersions: readonly string[], serverVersions: readonly string[], detail = "") {
    let text = `no common protocol version: this client speaks ${clientVersions.join(", ") || "none"}, the server speaks ${serverVersions.join(", ") || "unknown"}`;
    if (detail) text += ` [${detail}]`;
    super(text, 4005);
    this.clientVersions = [...clientVersions];
    this.serverVersions = [...serverVersions];
  }
}

/** The versions a 4005 close reason lists (`"no common protocol version; server
 * speaks v2,v1"` → `["v2", "v1"]`; an older server's `"… unbroken.v1"` → `["v1"]`). */
export function serverVersions(reason: string): string[] {
  const m = /server speaks ([A-Za-z0-9.,]+)/.exec(reason);
  if (m === null) return [...reason.matchAll(/unbroken\.(v\d+)/g)].map((x) => x[1]);
  return m[1].split(",").map((n) => n.trim().replace(/^unbroken\./, "")).filter(Boolean);
}

/** The stream cannot be resumed; `reason` says why and the message what to do. */
export class StreamGone extends UnbrokenError {
  readonly stream: string;
  readonly reason: GoneReason;
  constructor(stream: string, reason: GoneReason, detail = "") {
    let text = `stream ${stream} is gone (${reason}): ${GONE_ADVICE[reason] ?? "start the request again"}`;
    if (detail) text += ` [${detail}]`;
    super(text);
    this.stream = stream;
    this.reason = reason;
  }
}

/** The events received do not match the server's digest chain. */
export class IntegrityError extends UnbrokenError {
  readonly stream: string;
  readonly seq: number;
  constructor(stream: string, seq: number, detail: string) {
    super(
      `stream ${stream}: integrity check failed at seq ${seq}: ${detail}`,
    );
    this.stream = stream;
    this.seq = seq;
  }
}

/** Raised by the chain verifier at the first event that does not fit the chain. */
export class ChainMismatch extends UnbrokenError {
  readonly seq: number;
  readonly detail: string;
  constructor(seq: number, detail: string) {
    super(`seq ${seq}: ${detail}`);
    this.seq = seq;
    this.detail = detail;
  }
}

/** The client gave up reconnecting: attempts or time budget used up. */
export class ReconnectExhausted extends UnbrokenError {
  readonly attempts: number;
  readonly elapsed: number;
  readonly lastError: unknown;
  /** The URLs tried when the client never connected (empty after a connection). */
  readonly neverConnected: readonly string[];
  constructor(attempts: number, elapsed: number, lastError: unknown, neverConnected: readonly string[] = []) {
    const last = lastError ? `${errorName(lastError)}: ${errorMessage(lastError)}` : "none";
    const gave = `gave up after ${attempts} attempts in ${elapsed.toFixed(1)}s (last error: ${last}); `;
    super(
      neverConnected.length
        ? // (closed with a code: the server refused each; else nothing answered there)
          `could not connect to ${neverConnected.join(", ")}: ${gave}${typeof (lastError as { code?: unknown } | null)?.code === "number" ? "the server closed every attempt: its log says why" : "check the URL and that the server is running"}`
        : `${gave}the stream can still be resumed from its cursor while the server retains it`,
    );
    this.attempts = attempts;
    this.elapsed = elapsed;
    this.lastError = lastError;
    this.neverConnected = neverConnected;
  }
}

/** The server refused the credentials; retrying with the same token will not help. */
export class AuthError extends UnbrokenError {}

/** The principal may not do this (for example connect, or cancel another's stream). */
export class Forbidden extends UnbrokenError {}

/** The server is full; try again after `retryAfter` seconds. */
export class Overloaded extends UnbrokenError {
  readonly retryAfter: number;
  constructor(message: string, retryAfter: number) {
    super(`${message}; retry after ${retryAfter.toFixed(3)}s`);
    this.retryAfter = retryAfter;
  }
}

/** The agent's run ended `failed` or `cancelled`; the partial answer is on the stream's `result`. */
export class StreamFailed extends UnbrokenError {
  readonly stream: string;
  readonly status: string;
  readonly error: string;
  constructor(stream: string, status: string, error: string) {
    super(
      `stream ${stream} ended ${status}: ${error || "no detail"}` +
        // (the server's default redaction: say where the rest is, as the Python client does)
        (error.includes("internal error in agent")
          ? ` (the server's log has its message and traceback: \`agent failed stream=${stream}\`; in development, Unbroken(redact=reveal_exception) sends them to clients)`
          : ""),
    );
    this.stream = stream;
    this.status = status;
    this.error = error;
  }
}

/** The server did not answer a start or resume within `timeout` seconds on a live link. */
export class RequestTimeout extends UnbrokenError {
  readonly timeout: number;
  constructor(what: string, timeout: number) {
    super(`no answer to ${what} within ${timeout.toFixed(1)}s`);
    this.timeout = timeout;
  }
}

/** A setting or argument is invalid. */
export class ConfigError extends UnbrokenError {}

/** The connection dropped; `code` is the close code when there was one. */
export class ConnectionLost extends UnbrokenError {
  readonly code: number | null;
  readonly retryAfter: number | null;
  constructor(message: string, code: number | null = null, retryAfter: number | null = null) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The server refused a request (e.g. unknown agent); `code` says why. */
export class RequestRefused extends UnbrokenError {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/** A stream's log stayed unreachable on the server (`error unavailable`, e.g. its Redis
 * Cluster master down) through the whole reconnect policy: `attempts` resumes over
 * `elapsed` seconds. The answer is not lost: resume the stream's cursor later. */
export class LogUnavailable extends RequestRefused {
  readonly stream: string;
  readonly attempts: number;
  readonly elapsed: number;
  /** a start's request id when its log stayed unreachable before the stream was
   * created (`stream` is then ""): a start with the same `req` gets it later */
  readonly req: string;
  constructor(stream: string, message: string, attempts: number, elapsed: number, req = "") {
    super("unavailable", `log of ${stream || `start ${req}`} unreachable (${attempts} ${stream ? "resumes" : "starts"}, ${elapsed.toFixed(1)}s): ${message}`);
    this.stream = stream;
    this.req = req;
    this.attempts = attempts;
    this.elapsed = elapsed;
  }
}

// Names survive minification (a class's own name would not): `error.name` is the
// class name, as in the Python client.
const NAMES = "UnbrokenError ProtocolError UnsupportedVersion StreamGone IntegrityError ChainMismatch ReconnectExhausted AuthError Forbidden Overloaded StreamFailed RequestTimeout ConfigError ConnectionLost RequestRefused LogUnavailable".split(" ");
[UnbrokenError, ProtocolError, UnsupportedVersion, StreamGone, IntegrityError, ChainMismatch, ReconnectExhausted, AuthError, Forbidden, Overloaded, StreamFailed, RequestTimeout, ConfigError, ConnectionLost, RequestRefused, LogUnavailable].forEach((cls, i) => {
  cls.prototype.name = NAMES[i];
});

export function errorName(e: unknown): string {
  return e instanceof Error ? e.name : typeof e;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
