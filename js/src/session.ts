/**
 * The client's session state machine (sans-I/O): what a server frame means, what
 * to send. Mirrors `unbroken/protocol/client_session.py`.
 *
 * `IDLE → AWAIT_WELCOME → READY → IDLE` (connection lost) `… → CLOSED`.
 * Per stream: `STARTING → ATTACHED → ENDED`, or `DETACHED`/`RESUMING` across a
 * reconnect, or `GONE`. Illegal transitions throw; the client only moves bytes and
 * time. Time (seconds) is always an argument.
 */
import { Backoff, BackoffPolicy, type Rng } from "./backoff.js";
import { ChainVerifier, fromHex, seed, stepEvent, toHex } from "./digest.js";
import {
  ChainMismatch,
  ConfigError,
  IntegrityError,
  LogUnavailable,
  Overloaded,
  ProtocolError,
  RequestRefused,
  StreamFailed,
  UnbrokenError,
} from "./errors.js";
import {
  CAP_BATCH,
  CAP_REFRESH,
  CAP_STREAMS,
  CloseCode,
  DEFAULT_MAX_FRAME,
  Kind,
  type Ack,
  type Cancel,
  type ClientFrame,
  type ErrorFrame,
  type Event,
  type Events,
  type Hello,
  type List,
  type LiveStream,
  type Refresh,
  type Resume,
  type ServerFrame,
  type Start,
  type Welcome,
} from "./frames.js";
import { v1 } from "./codecs.js";
import { CAP_ZLIB, decodeServerV2, encodeClientV2, eventsOfV2, type Carried } from "./frames2.js";
import { Liveness, type Check } from "./liveness.js";
import { HARMLESS_ERROR, REFRESH_ATTEMPTS, RETRYABLE_START, refreshDelay } from "./retry.js";

export type ClientState = "idle" | "await_welcome" | "ready" | "closed";
export type StreamState = "starting" | "attached" | "detached" | "resuming" | "ended" | "gone";

/** A cursor's four fields, as saved (JSON) or typed by hand. */
export interface CursorLike {
  stream: string;
  seq: number;
  digest: string;
  epoch: string;
}

const CURSOR_TAG = "ub1";
const CURSOR_ID = /^[A-Za-z0-9_-]{1,64}$/;
const CURSOR_SEQ = /^(0|[1-9][0-9]{0,15})$/;
const CURSOR_DIGEST = /^[0-9a-f]{32}$/;
const cut = (text: string) => JSON.stringify(text.length > 80 ? text.slice(0, 79) + "…" : text);

/** Where a client is in a stream: enough to resume it later, anywhere.
 * `String(cursor)` is a compact, URL-safe string (`ub1.<stream>.<seq>.<digest>.<epoch>`,
 * the same as Python's `str(cursor)`) to keep in a cookie, `localStorage` or a
 * database; `Cursor.parse` turns it back into the same cursor. */
export class Cursor implements CursorLike {
  constructor(
    readonly stream: string,
    readonly seq: number,
    readonly digest: string,
    readonly epoch: string,
  ) {}

  toString(): string {
    return `${CURSOR_TAG}.${this.stream}.${this.seq}.${this.digest}.${this.epoch}`;
  }

  /** The cursor `String(cursor)` gave, or a saved one's fields (checked the same
   * way); `ConfigError` when it is not one (the message says which field is wrong). */
  static parse(text: string | CursorLike): Cursor {
    if (typeof text === "object" && text !== null) {
      const c = text as Partial<CursorLike>;
      text = `${CURSOR_TAG}.${c.stream}.${c.seq}.${c.digest}.${c.epoch}`;
    }
    if (typeof text !== "string") throw new ConfigError(`a cursor is a string, got ${text === null ? "null" : typeof text}`);
    const fields = text.split(".");
    if (fields.length !== 5 || fields[0] !== CURSOR_TAG) {
      throw new ConfigError(`not a cursor: ${cut(text)}`);
    }
    const [, stream, seq, digest, epoch] = fields;
    for (const [name, value, pattern] of [
      ["stream id", stream, CURSOR_ID],
      ["seq", seq, CURSOR_SEQ],
      ["digest", digest, CURSOR_DIGEST],
      ["epoch", epoch, CURSOR_ID],
    ] as const) {
      if (!pattern.test(value)) throw new ConfigError(`cursor ${cut(text)}: bad ${name} ${JSON.stringify(value)}`);
    }
    if (BigInt(seq) > 2n ** 53n) throw new ConfigError(`cursor ${cut(text)}: seq ${seq} is out of range`);
    return new Cursor(stream, Number(seq), digest, epoch);
  }
}

/** Client-side state of one stream (or of a start not yet answered). */
export class ClientStream {
  stream = "";
  epoch = "";
  state: StreamState = "starting";
  verifier: ChainVerifier | null = null;
  readonly partKinds = new Map<string, string>();
  acked = 0;
  unackedBytes = 0;
  ackedAt = 0;
  startAttempts = 0;
  /** its log unreachable (`error unavailable`): the resumes' backoff since the first
   * such answer (cleared by the next events) */
  outage: Backoff | null = null;
  /** v2: the current part carried from frame to frame (reset at started/resumed) */
  carried: Carried = { part: "", kind: 0 };
  constructor(
    readonly req: string,
    readonly agent = "",
    readonly input: unknown = null,
  ) {}

  get seq(): number {
    return this.verifier ? this.verifier.seq : 0;
  }

  cursor(): Cursor | null {
    if (!this.stream || this.verifier === null) return null;
    return new Cursor(this.stream, this.verifier.seq, toHex(this.verifier.digest), this.epoch);
  }
}

/** How far a consumer has read a stream: the last verified digest it passed and the
 * events consumed since; the cursor is computed only when asked for. */
export class ConsumedCursor {
  stream = "";
  epoch = "";
  private _anchor: [number, Uint8Array] | null = null;
  private since: Event[] = [];

  began(stream: string, epoch: string, seq = 0, digest: Uint8Array | null = null): void {
    this.stream = stream;
    this.epoch = epoch;
    if (this._anchor === null) this._anchor = [seq, digest === null ? seed(stream, epoch) : digest];
  }

  verified(seq: number, digest: Uint8Array): void {
    this._anchor = [seq, digest];
    this.since = [];
  }

  consumed(ev: Event): void {
    this.since.push(ev);
  }

  cursor(): Cursor | null {
    if (this._anchor === null) return null;
    let [seq, digest] = this._anchor;
    for (const ev of this.since) {
      digest = stepEvent(digest, ev);
      seq = ev.seq;
    }
    return new Cursor(this.stream, seq, toHex(digest), this.epoch);
  }
}

/** What an `end` event means to the user: success (`completed`, or `cancelled`
 * after the user's own cancel), else the failure. */
export function endError(stream: string, status: string, error: string, cancelled: boolean): StreamFailed | null {
  if (status === "completed" || (status === "cancelled" && cancelled)) return null;
  return new StreamFailed(stream, status, error);
}

// Actions of ClientSession.serverError
export type ErrorAction =
  | { kind: "retry_start"; req: string; at: number }
  | { kind: "retry_resume"; req: string; at: number }
  | { kind: "fail_stream"; req: string; error: UnbrokenError };

// Outputs of ClientSession.receive
export type ClientOutput =
  | { kind: "welcomed"; welcome: Welcome }
  | { kind: "started"; req: string; stream: string; epoch: string }
  | { kind: "events"; stream: string; events: Event[]; digest: Uint8Array; nbytes: number }
  | { kind: "resumed"; stream: string; fromSeq: number; head: number; status: string }
  | { kind: "gone"; stream: string; reason: string; message: string }
  | { kind: "error"; error: ErrorFrame }
  | { kind: "heartbeat" }
  | { kind: "pong"; n: number }
  /** The credentials expire in `inMs`; `ask`: get a new token (`null`: this client
   * cannot refresh in-band; it reconnects after close 4010). */
  | { kind: "auth_expiring"; inMs: number; ask: AskToken | null }
  /** A refresh was accepted: the credentials now expire at `exp` (`null`: never). */
  | { kind: "refreshed"; exp: number | null }
  /** The answer to `list` number `n`: the principal's live streams (cap `streams`). */
  | { kind: "streams"; n: number; items: LiveStream[] };

/** Ask the token provider at `at` (seconds, the session's clock; 0: at once) and hand
 * its token to `ClientSession.refresh` with this `connection` number (an answer for a
 * connection that is gone by then is dropped). `attempt` counts from 1. */
export interface AskToken {
  kind: "ask_token";
  at: number;
  attempt: number;
  connection: number;
}

interface EventsV2 {
  t: "events";
  handle: number;
  seq: number;
  items: unknown[];
  h: Uint8Array;
}

/** Why a message of the other type is refused on a `v2` (else v1) connection. */
export const wrongMessage = (v2: boolean): string => (v2 ? "text message (not part of protocol v2)" : "binary message (not part of protocol v1)");

const LIVE: ReadonlySet<StreamState> = new Set(["starting", "attached", "resuming"]);

/** A v2 frame of a message: the unpacked value and its size in bytes. */
export type FrameV2 = [value: unknown, nbytes: number];

export class ClientSession {
  state: ClientState = "idle";
  /** The protocol version of the current connection ("v1", "v2"). */
  version = "v1";
  /** v2: the `zlib` cap is in force on this connection (a message may come deflated). */
  zlib = false;
  /** v2: stream handles given by `started`/`resumed` on this connection. */
  private readonly handles = new Map<number, ClientStream>();
  readonly caps: string[];
  maxFrame: number;
  welcome: Welcome | null = null;
  readonly byReq = new Map<string, ClientStream>();
  readonly byStream = new Map<string, ClientStream>();
  ackEvery = 256 * 1024;
  ackMin = 16 * 1024;
  ackAfter = 1.0;
  batch = false;
  anon: string | null = null;
  readonly liveness: Liveness;
  hbSeen = false;
  startAttempts: number;
  /** In-band refresh is in force on this connection (both sides listed the cap). */
  refreshAgreed = false;
  /** Listing live streams is in force on this connection (both sides listed the cap). */
  streamsAgreed = false;
  /** When this connection's credentials expire (unix seconds; `null`: never). */
  authExp: number | null = null;
  /** Refreshes refused (or provider failures) in a row since the last success; at
   * `refreshAttempts` the client stops asking and lets the connection expire (4010). */
  refreshFailures = 0;
  refreshAttempts = REFRESH_ATTEMPTS;
  private _connection = 0;
  /** Numbers the connections (`AskToken.connection`). */
  get connection(): number {
    return this._connection;
  }

  /** how long a stream whose log is unreachable (`error unavailable`) is resumed
   * again before it fails with `LogUnavailable` (the client's reconnect policy) */
  readonly outagePolicy: BackoffPolicy;
  private readonly rng: Rng;

  constructor(o: { caps?: string[]; maxFrame?: number; liveness?: Liveness; startAttempts?: number; outagePolicy?: BackoffPolicy; rng?: Rng } = {}) {
    this.caps = [...(o.caps ?? [])];
    this.outagePolicy = o.outagePolicy ?? new BackoffPolicy();
    this.rng = o.rng ?? Math.random;
    this.maxFrame = o.maxFrame ?? DEFAULT_MAX_FRAME;
    this.liveness = o.liveness ?? new Liveness();
    this.startAttempts = o.startAttempts ?? 12;
  }

  /** The frames of one WebSocket message (several lines with the `batch` cap). */
  framesOf(message: string): string[] {
    if (this.batch && message.includes("\n")) return message.split("\n");
    return [message];
  }

  // ---- connection lifecycle
  connect(token: string | null = null, version = "v1"): Hello {
    if (this.state === "closed") throw new ProtocolError("session is closed", CloseCode.NORMAL);
    if (this.state !== "idle") throw new ProtocolError(`connect in state ${this.state}`);
    this.state = "await_welcome";
    this._connection += 1;
    this.version = version;
    this.handles.clear();
    // (zlib is a v2 cap: not offered to a v1 server)
    const caps = version === "v2" ? this.caps : this.caps.filter((c) => c !== CAP_ZLIB);
    return { t: "hello", caps, token, anon: this.anon };
  }

  private _resume(cs: ClientStream): Resume {
    cs.state = "resuming";
    const v = cs.verifier!;
    return { t: "resume", stream: cs.stream, after: v.seq, epoch: cs.epoch, h: toHex(v.digest) };
  }

  /** Frames to send right after `hello`, before `welcome` (§2, pipelined: the
   * server handles frames in order, so this saves a round trip on every reconnect):
   * `resume` for every detached stream. */
  resumes(): ClientFrame[] {
    const out: ClientFrame[] = [];
    for (const cs of this.byReq.values()) if (cs.state === "detached") out.push(this._resume(cs));
    return out;
  }

  /** Frames to send once welcomed: retry unanswered starts, resume every open
   * stream not resumed yet (`resumes` sends them sooner). */
  afterWelcome(): ClientFrame[] {
    const out: ClientFrame[] = [];
    for (const cs of this.byReq.values()) {
      if (cs.state === "starting") out.push({ t: "start", req: cs.req, agent: cs.agent, input: cs.input });
      else if (cs.state === "detached") out.push(this._resume(cs));
    }
    return out;
  }

  connected(): void {
    this.hbSeen = false;
    this.liveness.connecting();
  }

  connectionLost(): void {
    if (this.state === "closed") return;
    this.state = "idle";
    this.welcome = null;
    this.refreshAgreed = false;
    this.streamsAgreed = false;
    this.zlib = false;
    this.handles.clear();
    this.authExp = null;
    this.refreshFailures = 0;
    for (const cs of this.byReq.values()) {
      if (cs.state === "attached" || cs.state === "resuming") cs.state = "detached";
      else if (cs.state === "ended" && cs.verifier !== null) {
        // the end was received: an ack would only reach a connection that never had
        // the stream (answered `bad_ack`); nothing is left to acknowledge
        cs.acked = cs.verifier.seq;
        cs.unackedBytes = 0;
      }
    }
  }

  close(): void {
    this.state = "closed";
  }

  expectingFrames(): boolean {
    for (const cs of this.byReq.values()) if (LIVE.has(cs.state)) return true;
    return false;
  }

  check(now: number, due: number): Check {
    this.liveness.ahead = this.bytesAhead();
    return this.liveness.check(now, due, this.expectingFrames());
  }

  /** Event bytes that may be on their way now (ahead of a ping sent now): each live
   * stream's flow window less what arrived unacked, and a quarter window more (a
   * frame's own bytes may overrun the window's budget). 0 before `welcome`. */
  bytesAhead(): number {
    if (this.welcome === null) return 0;
    const window = this.welcome.limits.window;
    let ahead = 0;
    for (const cs of this.byReq.values()) {
      if (LIVE.has(cs.state)) ahead += Math.max(0, window - cs.unackedBytes) + Math.floor(window / 4);
    }
    return ahead;
  }

  // ---- requests
  start(req: string, agent: string, input: unknown): Start | null {
    if (this.byReq.has(req)) throw new ProtocolError(`request id ${JSON.stringify(req)} already used`);
    const frame: Start = { t: "start", req, agent, input };
    if (this.welcome !== null) {
      const size = this.version === "v2" ? encodeClientV2(frame).length : new TextEncoder().encode(v1!.encode(frame)).length;
      const limit = this.welcome.limits.max_client_frame;
      if (size > limit) {
        throw new RequestRefused(
          "too_big",
          `start frame of ${size} bytes; limit ${limit}`,
        );
      }
    }
    this.byReq.set(req, new ClientStream(req, agent, input));
    return this.state === "ready" ? frame : null;
  }

  adopt(req: string, cursor: CursorLike): Resume | null {
    if (this.byStream.has(cursor.stream)) throw new ProtocolError(`stream ${cursor.stream} is already open`);
    const cs = new ClientStream(req);
    cs.stream = cursor.stream;
    cs.epoch = cursor.epoch;
    cs.verifier = new ChainVerifier(cursor.stream, cursor.epoch, cursor.seq, fromHex(cursor.digest));
    cs.acked = cursor.seq;
    cs.state = "detached";
    this.byReq.set(req, cs);
    this.byStream.set(cursor.stream, cs);
    if (this.state === "ready") {
      cs.state = "resuming";
      return { t: "resume", stream: cursor.stream, after: cursor.seq, epoch: cursor.epoch, h: cursor.digest };
    }
    return null;
  }

  resendStart(req: string): Start | null {
    const cs = this.byReq.get(req);
    if (cs === undefined || cs.state !== "starting" || this.state !== "ready") return null;
    return { t: "start", req: cs.req, agent: cs.agent, input: cs.input };
  }

  /** The resume of `req` to send again now (after `retry_resume`), or `null` when it
   * was resumed, ended or forgotten meanwhile, or waits for the next connection. */
  resendResume(req: string): Resume | null {
    const cs = this.byReq.get(req);
    if (cs === undefined || cs.state !== "detached" || this.state !== "ready") return null;
    return this._resume(cs);
  }

  /** What an `error` frame means for its request or stream. A stream whose log is
   * unreachable (`unavailable`, sent only with that cap offered) goes back to
   * detached and is resumed after a backoff whose floor is the server's
   * `retry_after_ms`, within `outagePolicy`; past it, `LogUnavailable`. */
  serverError(error: ErrorFrame, now: number): ErrorAction | AskToken | null {
    if (error.code === "auth_failed" && error.req === null && error.stream === null) return this.refreshFailed(now);
    let cs: ClientStream | undefined;
    if (error.req !== null) cs = this.byReq.get(error.req);
    else if (error.stream !== null) cs = this.byStream.get(error.stream);
    if (cs === undefined) return null;
    if (RETRYABLE_START.has(error.code) && error.req !== null && !cs.stream) {
      cs.startAttempts += 1;
      const wait = (error.retry_after_ms ?? 1000) / 1000;
      if (cs.startAttempts >= this.startAttempts) {
        this.forget(cs.req);
        return { kind: "fail_stream", req: cs.req, error: new Overloaded(error.message || error.code, wait) };
      }
      return { kind: "retry_start", req: cs.req, at: now + wait };
    }
    if (error.code === "unavailable" && error.stream !== null && cs.verifier !== null && (cs.state === "attached" || cs.state === "resuming" || cs.state === "detached")) {
      cs.outage ??= new Backoff(this.outagePolicy, now, this.rng);
      const delay = cs.outage.nextDelay(now, (error.retry_after_ms ?? 1000) / 1000);
      if (delay === null) {
        const out = cs.outage;
        this.forget(cs.req);
        return { kind: "fail_stream", req: cs.req, error: new LogUnavailable(cs.stream, error.message, out.attempts, out.elapsed(now)) };
      }
      cs.state = "detached";
      return { kind: "retry_resume", req: cs.req, at: now + delay };
    }
    if (HARMLESS_ERROR.has(error.code)) return null;
    this.forget(cs.req);
    return { kind: "fail_stream", req: cs.req, error: new RequestRefused(error.code, error.message) };
  }

  // ---- in-band token refresh (cap "refresh", §18)
  /** The `refresh` frame carrying the provider's `token` (asked for on `connection`),
   * or `null`: the connection is gone (the next `hello` carries a fresh token
   * anyway), or there is no token (report that with `refreshFailed`). */
  refresh(token: string | null | undefined, connection: number): Refresh | null {
    if (!token || connection !== this._connection || this.state !== "ready" || !this.refreshAgreed) return null;
    return { t: "refresh", token };
  }

  /** A refresh failed (`auth_failed`, or the provider raised or gave nothing): ask
   * again after a backoff, at most `refreshAttempts` times in a row; then `null`
   * (stop asking: the server closes 4010 at expiry and the client reconnects). */
  refreshFailed(now: number): AskToken | null {
    if (!this.refreshAgreed || this.state !== "ready") return null;
    this.refreshFailures += 1;
    if (this.refreshFailures >= this.refreshAttempts) return null;
    return { kind: "ask_token", at: now + refreshDelay(this.refreshFailures), attempt: this.refreshFailures + 1, connection: this._connection };
  }

  /** The `list` frame number `n` to send now, or `null` while not welcomed with the
   * `streams` cap (send it again after the next welcome). */
  listStreams(n: number): List | null {
    if (this.state !== "ready" || !this.streamsAgreed) return null;
    return { t: "list", n };
  }

  cancel(stream: string): Cancel {
    return { t: "cancel", stream };
  }

  forget(req: string): void {
    const cs = this.byReq.get(req);
    if (cs === undefined) return;
    this.byReq.delete(req);
    if (cs.stream) this.byStream.delete(cs.stream);
  }

  /** Acks due now (cumulative): after every `ackEvery` bytes, at the end, or
   * `ackAfter` seconds after the last one with `ackMin` bytes unacked. */
  takeAcks(now = 0): Ack[] {
    const out: Ack[] = [];
    for (const cs of this.byStream.values()) {
      if (cs.verifier === null || cs.verifier.seq <= cs.acked) continue;
      const n = cs.unackedBytes;
      if (n >= this.ackEvery || cs.state === "ended" || (n >= this.ackMin && now - cs.ackedAt >= this.ackAfter)) {
        cs.acked = cs.verifier.seq;
        cs.unackedBytes = 0;
        cs.ackedAt = now;
        if (this.state === "ready") out.push({ t: "ack", stream: cs.stream, seq: cs.acked });
      }
    }
    return out;
  }

  /** Acks to answer an `hb` with: every attached stream's, sent again. */
  heartbeatAcks(now = 0): Ack[] {
    if (this.state !== "ready") return [];
    const out: Ack[] = [];
    for (const cs of this.byStream.values()) {
      if (cs.state === "attached" && cs.verifier !== null && cs.verifier.seq > 0) {
        cs.acked = cs.verifier.seq;
        cs.unackedBytes = 0;
        cs.ackedAt = now;
        out.push({ t: "ack", stream: cs.stream, seq: cs.acked });
      }
    }
    return out;
  }

  /** Frames to send once a whole message was handled: the acks due (after an `hb`,
   * every attached stream's), then a ping when none is out. */
  afterMessage(now: number): ClientFrame[] {
    let acks = this.takeAcks(now);
    if (this.hbSeen) {
      this.hbSeen = false;
      acks = this.heartbeatAcks(now);
    } else if (acks.length === 0) return acks;
    const live = this.liveness;
    if (live.awaitingPong) return acks;
    live.ahead = this.bytesAhead();
    return [...acks, live.ping(now)];
  }

  /** `frame` as this connection's version sends it: v1 text, v2 bytes. */
  wire(frame: ClientFrame): string | Uint8Array {
    return this.version === "v2" ? encodeClientV2(frame) : v1!.encode(frame);
  }

  // ---- input
  /** Decode and apply one server frame: v1 text, or a v2 frame (`framesOfV2`). */
  receive(data: string | FrameV2): ClientOutput {
    const v2 = typeof data !== "string";
    if (v2 !== (this.version === "v2")) {
      throw new ProtocolError(wrongMessage(!v2));
    }
    if (this.state === "ready") {
      if (v2) {
        const frame = decodeServerV2(data[0]);
        if (frame.t === "events") return this.events2(frame as unknown as EventsV2, data[1]);
        return this.apply(frame as unknown as ServerFrame);
      }
      const frame = v1!.decodeServer(data, this.maxFrame);
      if (frame.t === "events") return this.events(frame, data.length);
      return this.apply(frame);
    }
    if (this.state !== "await_welcome") throw new ProtocolError(`frame received in state ${this.state}`);
    const frame = v2 ? (decodeServerV2(data[0]) as unknown as ServerFrame) : v1!.decodeServer(data, this.maxFrame);
    if (frame.t === "welcome") {
      this.welcome = frame;
      this.state = "ready";
      if (frame.anon !== null) this.anon = frame.anon;
      this.batch = this.caps.includes(CAP_BATCH) && frame.caps.includes(CAP_BATCH);
      this.refreshAgreed = this.caps.includes(CAP_REFRESH) && frame.caps.includes(CAP_REFRESH);
      this.streamsAgreed = this.caps.includes(CAP_STREAMS) && frame.caps.includes(CAP_STREAMS);
      this.zlib = this.version === "v2" && this.caps.includes(CAP_ZLIB) && frame.caps.includes(CAP_ZLIB);
      this.authExp = frame.auth_exp;
      this.refreshFailures = 0;
      this.ackEvery = Math.max(1, Math.min(this.ackEvery, Math.floor(frame.limits.window / 4)));
      this.ackMin = Math.max(1, Math.min(this.ackMin, Math.floor(frame.limits.window / 64)));
      this.ackAfter = Math.max(0.001, frame.heartbeat_ms / 1000);
      return { kind: "welcomed", welcome: frame };
    }
    if (frame.t === "error") return { kind: "error", error: frame };
    throw new ProtocolError(`expected welcome, got ${frame.t}`);
  }

  private apply(frame: ServerFrame): ClientOutput {
    switch (frame.t) {
      case "hb":
        this.hbSeen = true;
        return { kind: "heartbeat" };
      case "pong":
        return { kind: "pong", n: frame.n };
      case "started": {
        const cs = this.byReq.get(frame.req);
        if (cs === undefined) throw new ProtocolError(`started for unknown request ${JSON.stringify(frame.req)}`);
        if (cs.state !== "starting") {
          throw new ProtocolError(`started twice for ${JSON.stringify(frame.req)}`);
        }
        cs.stream = frame.stream;
        cs.epoch = frame.epoch;
        cs.verifier = new ChainVerifier(frame.stream, frame.epoch);
        this.byStream.set(frame.stream, cs);
        cs.state = "attached";
        this.attach(frame, cs);
        return { kind: "started", req: frame.req, stream: frame.stream, epoch: frame.epoch };
      }
      case "resumed": {
        const cs = this.stream(frame.stream);
        if (cs.state !== "resuming") throw new ProtocolError(`resumed for stream ${frame.stream} not resuming`);
        if (frame.from !== cs.seq) throw new ProtocolError(`resumed from ${frame.from}, but the client is at ${cs.seq}`);
        cs.state = "attached";
        this.attach(frame, cs);
        return { kind: "resumed", stream: frame.stream, fromSeq: frame.from, head: frame.head, status: frame.status };
      }
      case "gone": {
        const cs = this.stream(frame.stream);
        cs.state = "gone";
        return { kind: "gone", stream: frame.stream, reason: frame.reason, message: frame.message };
      }
      case "resync":
        throw new ProtocolError("unexpected resync");
      case "error":
        return { kind: "error", error: frame };
      case "auth_expiring": {
        let ask: AskToken | null = null;
        if (this.refreshAgreed) {
          this.refreshFailures = 0; // a new expiry: a fresh budget of attempts
          ask = { kind: "ask_token", at: 0, attempt: 1, connection: this._connection };
        }
        return { kind: "auth_expiring", inMs: frame.in_ms, ask };
      }
      case "refreshed":
        if (!this.refreshAgreed) throw new ProtocolError("refreshed without the refresh cap");
        this.refreshFailures = 0;
        this.authExp = frame.exp;
        return { kind: "refreshed", exp: frame.exp };
      case "streams":
        if (!this.streamsAgreed) throw new ProtocolError("streams without the streams cap");
        return { kind: "streams", n: frame.n, items: frame.items };
      default:
        throw new ProtocolError(`unexpected ${frame.t} frame`);
    }
  }

  /** v2: `started`/`resumed` gave the stream a handle; its current part starts unset. */
  private attach(frame: { handle?: number }, cs: ClientStream): void {
    cs.carried = { part: "", kind: 0 };
    if (frame.handle !== undefined) this.handles.set(frame.handle, cs);
  }

  private events2(frame: EventsV2, nbytes: number): ClientOutput {
    const cs = this.handles.get(frame.handle);
    if (cs === undefined) throw new ProtocolError(`events for unknown stream handle ${frame.handle}`);
    return this.verify(cs, nbytes, frame.h, (cs) => {
      const events = eventsOfV2(frame.seq, frame.items, cs.partKinds, cs.carried);
      if (events[events.length - 1].kind === Kind.END && frame.h.length !== 16) throw new ProtocolError(`stream ${cs.stream}: end without all 16 bytes of h`);
      return events;
    });
  }

  /** The events `decode` gives of an attached stream's frame, verified against `h`
   * (all or nothing: `IntegrityError`), counted for acks and liveness. */
  private verify(cs: ClientStream, nbytes: number, h: Uint8Array | string, decode: (cs: ClientStream) => Event[]): ClientOutput {
    if (cs.state !== "attached" || cs.verifier === null) {
      throw new ProtocolError(`events for stream ${cs.stream} in state ${cs.state}`);
    }
    const events = decode(cs);
    const v = cs.verifier;
    try {
      v.extend(events, h);
    } catch (e) {
      if (e instanceof ChainMismatch) throw new IntegrityError(cs.stream, e.seq, e.detail);
      throw e;
    }
    cs.unackedBytes += nbytes;
    cs.outage = null; // its log answers again: a later outage gets a new budget
    this.liveness.eventsHeard(nbytes);
    if (events[events.length - 1].kind === Kind.END) cs.state = "ended";
    return { kind: "events", stream: cs.stream, events, digest: v.digest, nbytes };
  }

  private stream(stream: string): ClientStream {
    const cs = this.byStream.get(stream);
    if (cs === undefined) throw new ProtocolError(`frame for unknown stream ${stream}`);
    return cs;
  }

  private events(frame: Events, nbytes: number): ClientOutput {
    const cs = this.byStream.get(frame.stream);
    if (cs === undefined) throw new ProtocolError(`events for unknown stream ${frame.stream}`);
    return this.verify(cs, nbytes, frame.h, (cs) => v1!.eventsOf(frame, cs.partKinds));
  }
}
