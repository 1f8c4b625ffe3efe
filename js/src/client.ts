/**
 * The client: one logical session over as many WebSocket connections as it takes.
 * Mirrors `unbroken/client/client.py` (same names, camelCase; times in seconds).
 *
 * It notices drops (close frames, socket errors, in-band silence), reconnects with
 * the protocol's backoff (rotating through URLs), resumes every open stream from
 * its last seq and digest, and yields each event exactly once, verified. In a
 * browser it also listens to the Page Lifecycle and network: on `freeze` and
 * `pagehide` it saves every open stream's cursor (in `sessionStorage`, so a reload
 * picks the answer up with `restore()`); on `resume`, `pageshow`, `online` and
 * `visibilitychange → visible` it reconnects at once instead of waiting out the
 * backoff (never under a server's `retry_after` floor).
 */
import { Backoff, BackoffPolicy, seededRng, type BackoffPolicyOptions, type Rng } from "./backoff.js";
import { CORE, type CoreHelpers } from "./core-key.js";
import { ChainVerifier, fromHex, seed, stepEvent, toHex } from "./digest.js";
import { ready as digestReady } from "./blake2b.js";
import {
  AuthError,
  ChainMismatch,
  ConfigError,
  ConnectionLost,
  IntegrityError,
  LogUnavailable,
  Overloaded,
  ReconnectExhausted,
  ProtocolError,
  RequestRefused,
  RequestTimeout,
  StreamFailed,
  StreamGone,
  errorMessage,
  errorName,
  type GoneReason,
} from "./errors.js";
import { CAP_BATCH, CAP_UNAVAILABLE, CloseCode, DEFAULT_MAX_FRAME, Kind, VERSIONS, type ClientFrame, type ErrorFrame, type Event, type ServerFrame, type Welcome } from "./frames.js";
import { loadV1, v1 } from "./codecs.js";
import { CAP_ZLIB, decodeServerV2, encodeClientV2, eventsOfV2, framesOfV2, isZlib, type Carried } from "./frames2.js";
import { LATE_RUN, Liveness, MAX_CHECK_EVERY } from "./liveness.js";
import { Answer, StreamEnded, type SchemaValidator, type StreamEvent } from "./response.js";
import { HARMLESS_ERROR, RETRYABLE_START, TOKEN_ATTEMPTS, causeOf, closedBy, fatalError, refreshDelay, shouldRetry as defaultRetryTable } from "./retry.js";
import { Cursor, type CursorLike } from "./session.js";

/** A v2 frame of a message: the unpacked value and its size in bytes. */
export type FrameV2 = [value: unknown, nbytes: number];

/** Something that happened to the connection, with a monotonic timestamp `at`
 * (seconds). `kind`: connected, disconnected, reconnecting, resumed, gone, exhausted;
 * and with a token provider: auth_expiring (`delay`: seconds left), refreshed,
 * refresh_failed (`cause`; `attempt`: the failures in a row). */
export interface ConnectionEvent {
  kind:
    | "connected"
    | "disconnected"
    | "reconnecting"
    | "resumed"
    | "gone"
    | "exhausted"
    | "auth_expiring"
    | "refreshed"
    | "refresh_failed"
    /** a `stream`'s log is unreachable on the server: resumed again after `delay` s */
    | "unavailable";
  at: number;
  url: string;
  /** why: a `disconnected`'s error; on `reconnecting`, what cut its backoff wait
   * short (`wake()`'s trigger: "online", "resume", "pageshow", "visible", "wake"; its
   * `delay` is then 0, the attempt made at once), "" when it waits its `delay` */
  cause: string;
  code: number | null;
  attempt: number;
  /** seconds until the next attempt (`reconnecting`) */
  delay: number;

  stream: string;
  fromSeq: number;
  head: number;
  reason: string;
  /** the protocol version a `connected` connection speaks ("v2", "v1") */
  version: string;
  /** on `disconnected`: the server's wait (seconds) when it shed this reader or
   * refused it for load (`error overloaded` + `retry_after_ms`, close 4008): the next
   * attempt waits at least that long; else null */
  retryAfter: number | null;
}

/** A run of this principal that has not ended (`client.streams()`): its stream id,
 * agent, epoch, `head` (the last event the log held when asked), `status`
 * (`running`) and a `cursor` at `head` (`client.resume(item.cursor)` follows it from
 * there; `client.join(item.stream, { epoch: item.epoch })` from its first event). */
export interface LiveStreamInfo {
  stream: string;
  agent: string;
  epoch: string;
  head: number;
  status: string;
  cursor: Cursor;
}

/** A token: a fixed string, or a function (sync or async) asked for a fresh one on
 * every (re)connect and, in-band, when the server says the current one expires. */
export type TokenProvider = string | null | (() => string | null | undefined | Promise<string | null | undefined>);

/** The WebSocket class to use (the browser's, or any with the same shape). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType?: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** A Web Storage (`sessionStorage`) or anything with its three methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** a string, or a function (sync or async) asked on every (re)connect (sent in
   * `hello`; nothing: no token) and when the server announces the expiry (sent
   * in-band as `refresh`); a function that throws 3 times in a row ends the streams
   * with `AuthError` */
  token?: TokenProvider;
  /** reconnect backoff (seconds): base 0.1, cap 10, multiplier 2, maxAttempts 12, deadline 60 */
  policy?: BackoffPolicy | BackoffPolicyOptions;
  /** overrides the retry table: true / false, or null/undefined to keep the default */
  shouldRetry?: (error: unknown) => boolean | null | undefined;
  /** called with every connection event */
  onEvent?: (event: ConnectionEvent) => void;
  /** heartbeats of silence (plus the RTO) before the link is declared dead (3) */
  silenceFactor?: number;
  /** seconds between pings while a stream is live (0.75) */
  pingEvery?: number;
  /** seconds for one connection attempt: TCP, upgrade and `welcome` (3) */
  openTimeout?: number;
  /** seconds a start or resume may stay unanswered on a live link (30; Infinity: no limit; else a positive number, or `ConfigError`) */
  requestTimeout?: number;
  /** largest frame accepted from the server (16 MiB) */
  maxFrame?: number;
  /** seeds the backoff's jitter */
  seed?: number;
  /** the WebSocket class (default: `globalThis.WebSocket`) */
  WebSocket?: WebSocketConstructor;
  /** where cursors survive a reload (default: `sessionStorage` in a browser; null: nowhere) */
  storage?: StorageLike | null;
  /** the storage key (default "unbroken"): one per client on a page */
  storageKey?: string;
  /** listen to page lifecycle and network events (default: when in a browser) */
  lifecycle?: boolean;
  /** protocol versions to offer, newest first (default `["v2", "v1"]`; pin one to
   * test, e.g. `["v1"]`); a server that speaks none of them ends the client with
   * `UnsupportedVersion` */
  protocols?: string[];
  /** with the `Zlib` plugin: offer the `zlib` cap (v2: a large message may come
   * deflated); default: when the platform has `DecompressionStream` */
  compression?: boolean;
  /** opt-in features (`unbroken-client/core`: `TokenRefresh`, `StreamListing`, `Zlib`); the
   * `Client` of `unbroken-client` has all three */
  plugins?: readonly Plugin[];
  /** checks JSON parts against the schema their start declared (`jsonSchema` of
   * `unbroken-client/schema`); none: a JSON part is only checked to parse */
  validator?: SchemaValidator | null;
}

/** An opt-in feature of the client, given in `plugins`: `TokenRefresh` (in-band token
 * refresh), `StreamListing` (`streams(client)`, the `streams` cap), `Zlib` (the `zlib`
 * cap). The core works without any; the full `Client` of `unbroken-client` has all.
 * Only these three: any other object is refused with `ConfigError` (`unknown
 * plugin`); one given again (the same, or the other entry's) is installed once. */
export interface Plugin {
  readonly name: string;
  /** @internal sets the feature up on a new client (its caps, frame handlers, hooks) */
  _install(client: Client, options: ClientOptions): void;
}

/** @internal What a plugin's hook is told: a connection welcomed (its caps known), that
 * connection lost, the client ended (closed, or failed with `error`). */
export const enum Hook {
  WELCOMED,
  LOST,
  ENDED,
}

/** A stream saved in storage: a cursor to resume, or a start not yet answered. */
export interface SavedStream {
  req: string;
  agent: string;
  input: unknown;
  cursor: CursorLike | null;
}

/** A queued event (with the chain value after it when it ends its frame), or the error that ended the stream. */
type QueueItem = { ev: StreamEvent; raw: Event; h?: Uint8Array } | { error: unknown };
type StreamState = "starting" | "attached" | "detached" | "resuming" | "ended" | "gone";

const now = (): number => performance.now() / 1000;
/** @internal Calls `fn` in `seconds` (finite); returns what cancels it. A timer
 * takes at most 2^31 - 1 ms (~24.8 days; a longer one would fire at once): a longer
 * wait is armed again for the rest when that runs out, not ended early. `unref`:
 * it keeps no Node process alive. */
export function inSeconds(fn: () => void, seconds: number, unref?: boolean): () => void {
  let timer: ReturnType<typeof setTimeout>;
  const arm = (ms: number): void => {
    timer = setTimeout(ms > 2147483647 ? () => arm(ms - 2147483647) : fn, Math.min(ms, 2147483647));
    if (unref) (timer as { unref?(): void }).unref?.();
  };
  arm(seconds * 1000);
  return () => clearTimeout(timer);
}

/** Longest run of frame verification before the client lets the page run (s). */
const SLICE = 0.004;

let _later: ((fn: () => void) => void) | null = null;
/** Run `fn` in a later task (a MessageChannel message: no 4 ms timer clamp; every
 * browser and Node has it). */
function later(fn: () => void): void {
  if (_later === null) {
    const ch = new MessageChannel();
    const queue: (() => void)[] = [];
    ch.port1.onmessage = () => queue.shift()?.();
    (ch.port1 as { unref?(): void }).unref?.(); // (Node: the port keeps no process alive)
    _later = (f) => {
      queue.push(f);
      ch.port2.postMessage(0);
    };
  }
  _later(fn);
}

/** 12 random bytes in hex: a request id. */
const randomId = (): string => toHex(globalThis.crypto.getRandomValues(new Uint8Array(12)));

/** A promise (its rejection handled: the caller may never await it) and its two ends. */
function deferred<T>(): [Promise<T>, (v: T) => void, (e: unknown) => void] {
  let res!: (v: T) => void;
  let rej!: (e: unknown) => void;
  const p = new Promise<T>((a, b) => {
    res = a;
    rej = b;
  });
  p.catch(() => undefined);
  return [p, res, rej];
}

const bad = (what: string): ProtocolError => new ProtocolError(`unexpected ${what}`);

/** Why a message of the other type is refused on a `v2` (else v1) connection. */
const wrongMessage = (v2: boolean): string => (v2 ? "text message (not part of protocol v2)" : "binary message (not part of protocol v1)");

/** One agent answer as the client receives it: `for await (const ev of stream)`
 * yields typed events exactly once across reconnects; `await stream.wait()` is the
 * verified `Answer` (or the typed error that ended it). It is also the client's
 * record of the stream: where the chain is (what arrived, verified) and where the
 * reader is (its cursor). */
export class Stream implements AsyncIterable<StreamEvent> {
  id = "";
  /** The storage generation of the server's log that holds this stream (`""` before
   * the stream started); a resume in another epoch is answered `gone`. */
  epoch = "";
  result: Answer;
  readonly started: Promise<void>;
  /** @internal */
  _state: StreamState = "starting";
  /** @internal the chain of the events received (verified); null before `started` */
  _chain: ChainVerifier | null = null;
  /** @internal part id → kind, for the events' decoding */
  readonly _kinds = new Map<string, string>();
  /** @internal v2: the current part carried from frame to frame (reset at started/resumed) */
  _carried: Carried = { part: "", kind: 0 };
  /** @internal the last seq acked, bytes since, and when */
  _acked = 0;
  _unacked = 0;
  _ackedAt = 0;
  /** @internal starts refused for load */
  _refusals = 0;
  /** @internal its log unreachable (`error unavailable`): the resumes' backoff since
   * the first such answer (cleared by the next events) */
  _outage: Backoff | null = null;
  /** @internal a start the server asked to be sent again later (refused for load, its
   * log unreachable): nothing is due from the server for it until then */
  _resendDue = false;
  /** @internal the user cancelled (a `cancelled` end is then a success) */
  _cancelled = false;
  /** @internal when the start or resume is due its answer (`Client.sinceLate()`: the
   * page's lateness left out): moved on by each answer that has it sent again
   * (`unavailable`, a start refused for load) */
  _answerBy = 0;
  /** a resend is planned (its timer not yet run): its answer is not due yet */
  _againDue = false;
  /** @internal */
  readonly _answered: () => void;
  private readonly _refuse: (e: unknown) => void;
  private readonly _queue: QueueItem[] = [];
  private _waiter: (() => void) | null = null;
  /** the reader's position: the last chain value it passed, and the events read since */
  private _anchor: [number, Uint8Array] | null = null;
  private _since: Event[] = [];
  private readonly _done: Promise<Answer>;
  private readonly _resolve: (a: Answer) => void;
  private readonly _reject: (e: unknown) => void;
  private _finished = false;

  constructor(
    private readonly _client: Client,
    readonly req: string,
    readonly agent: string,
    readonly input: unknown = null,
  ) {
    this.result = new Answer("");
    this.result.validator = _client.validator;
    [this.started, this._answered, this._refuse] = deferred<void>();
    [this._done, this._resolve, this._reject] = deferred<Answer>();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    for (;;) {
      while (this._queue.length === 0) await new Promise<void>((r) => (this._waiter = r));
      const item = this._queue.shift()!;
      if ("error" in item) throw item.error;
      if (item.h) {
        this._anchor = [item.raw.seq, item.h];
        this._since = [];
      } else this._since.push(item.raw);
      yield item.ev;
      if (item.ev instanceof StreamEnded) return;
    }
  }

  /** The verified answer once the stream ends, or the error that ended it. */
  wait(): Promise<Answer> {
    return this._done;
  }

  get done(): boolean {
    return this._finished;
  }

  /** Position of the last event the iterator yielded: save it to pick the answer up
   * later, on any node, with `Client.resume`. `null` before the stream started. */
  get cursor(): Cursor | null {
    if (this._anchor === null) return null;
    let [seq, digest] = this._anchor;
    for (const ev of this._since) {
      digest = stepEvent(digest, ev);
      seq = ev.seq;
    }
    return new Cursor(this.id, seq, toHex(digest), this.epoch);
  }

  /** Stop the agent on the server (idempotent; also after a reconnect). */
  async cancel(): Promise<void> {
    this._cancelled = true;
    if (this.id && !this._finished) this._client._send({ t: "cancel", stream: this.id });
  }

  /** @internal the stream is known: at `started`, or resumed from a cursor */
  _began(stream: string, epoch: string, seq = 0, digest: Uint8Array | null = null): void {
    this.id = this.result.stream = stream;
    this.epoch = epoch;
    const chain = (this._chain = new ChainVerifier(stream, epoch, seq, digest));
    this._anchor = [seq, chain.digest];
    this._acked = seq;
  }

  private _put(item: QueueItem): void {
    this._queue.push(item);
    const w = this._waiter;
    this._waiter = null;
    w?.();
  }

  /** @internal a verified frame's events (`h`: the chain value after the last) */
  _push(events: Event[], h: Uint8Array): void {
    if (this._finished) return;
    const hex = toHex(h);
    const last = events[events.length - 1];
    for (const raw of events) this._put({ ev: this.result.apply(raw, hex), raw, h: raw === last ? h : undefined });
    if (last.kind === Kind.END) {
      const ok = last.status === "completed" || (last.status === "cancelled" && this._cancelled);
      this._finish(ok ? null : new StreamFailed(this.id, last.status, last.error));
    }
  }

  /** @internal */
  _finish(error: unknown): void {
    if (this._finished) return;
    this._finished = true;
    if (error) {
      this._put({ error });
      this._reject(error);
      this._refuse(error);
    } else this._resolve(this.result);
    this._client._finished(this);
  }
}

/** A resilient unbroken client. `await client.connect()` (optional: `start` connects),
 * `await client.start(agent, input)`, `await client.close()`. It is also the protocol's
 * client side: one table of streams (by request id), what a server frame means, what
 * to send. */
export class Client {
  /** @internal what dist/ai-sdk.js takes from the client it is given (core-key.ts) */
  static readonly [CORE]: CoreHelpers = { seed, toHex, ready: digestReady };
  readonly urls: string[];
  token: TokenProvider;
  readonly policy: BackoffPolicy;
  shouldRetry: ClientOptions["shouldRetry"];
  onEvent: ClientOptions["onEvent"];
  openTimeout: number;
  requestTimeout: number;
  readonly maxFrame: number;
  /** checks JSON parts against their schemas (the `validator` option) */
  validator: SchemaValidator | null;
  readonly history: ConnectionEvent[] = [];
  /** protocol versions offered, newest first */
  readonly protocols: string[];
  /** the version the current (or last) connection speaks; `null` before one */
  version: string | null = null;
  /** @internal every stream not forgotten, by request id (a finished one until its
   * message's acks are sent) */
  readonly openStreams = new Map<string, Stream>();
  /** v2: stream handles given by `started`/`resumed` on this connection */
  private readonly _handles = new Map<number, Stream>();
  /** @internal caps offered (the plugins add theirs) */
  readonly _caps: string[];
  /** @internal a plugin's handler of a frame type the core does not apply (and of
   * `auth_expiring`, after the core's event; of a connection's `error auth_failed`) */
  readonly _on: Record<string, (f: any) => void> = {};
  /** @internal the plugins' hooks */
  readonly _hooks: ((what: Hook, error?: unknown) => void)[] = [];
  /** @internal the `StreamListing` plugin's `list` requests awaiting their `streams`
   * answer, by number (on the client, so either entry's `streams()` finds them) */
  _lists?: { lists: Map<number, [resolve: (items: LiveStreamInfo[]) => void, reject: (e: unknown) => void]>; n: number };
  /** @internal the `Zlib` plugin's inflater */
  _inflate: ((message: Uint8Array, maxSize: number) => Promise<Uint8Array>) | null = null;
  private readonly _live: Liveness;
  private readonly _WS: WebSocketConstructor;
  private readonly _storage: StorageLike | null;
  private readonly _storageKey: string;
  /** the reconnect episode under way or last: one begins at the first drop, and again
   * after any connection that made progress (the budget is for one outage) */
  private _backoff: Backoff | null = null;
  private readonly _reconnectRng: Rng;
  private readonly _rng: Rng;
  /** @internal */
  readonly _subscribers = new Set<(e: ConnectionEvent) => void>();
  private _ws: WebSocketLike | null = null;
  /** the current connection's `welcome` (null: none, or not yet) */
  private _welcome: Welcome | null = null;
  /** a connection is up and welcomed */
  /** @internal */
  _ready = false;
  /** when the current connection got its `welcome` (null: not yet) */
  private _welcomedAt: number | null = null;
  private _welcomedOnce = false;
  /** @internal */
  _closed = false;
  private _fatal: unknown = null;
  /** the server's log generation, from the last `welcome` */
  /** @internal */
  _epoch: string | null = null;
  /** the anonymous principal's key, from `welcome` (or storage) */
  private _anon: string | null = null;
  /** caps in force on this connection (both sides listed them) */
  private _batch = false;
  private _zlib = false;
  /** cumulative acks: after `_ackEvery` bytes, or `_ackAfter` s with `_ackMin` bytes unacked */
  private _ackEvery = 1;
  private _ackMin = 1;
  private _ackAfter = 1;
  /** an `hb` arrived in this message: every attached stream's ack goes again */
  private _hbSeen = false;
  /** the wait a shed or refused connection was given (`error` with `retry_after_ms`) */
  private _retryAfter: number | null = null;
  /** numbers the connections (a token asked on one is not sent on another) */
  /** @internal */
  _conn = 0;
  private _running = false;
  private _urlIndex = 0;
  private _progressed = false;
  private _first: [Promise<void>, () => void, (e: unknown) => void] | null = null;
  private _wakeSleep: (() => void) | null = null;
  private _sleepFloor = false;
  /** What `wake()`d the client during the current attempt or backoff wait, if anything. */
  private _wokenBy: string | null = null;
  private _endConnection: ((err: unknown) => void) | null = null;
  /** Set by `freeze()` until `wake()`: no connection is opened meanwhile. */
  private _frozen: (() => void) | null = null;
  private _thawed: Promise<void> | null = null;
  private _frozenError: unknown = null;
  private _forgetSoon: Stream[] = [];
  private readonly _listeners: [EventTarget, string, () => void][] = [];
  /** @internal the lateness ticker's (`lateTick`): the requests awaiting an answer it runs for */
  lateWaits = 0;
  /** @internal its timer */
  lateTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal when its next tick is due (null: not ticking) */
  lateDue: number | null = null;
  /** @internal how late the page ran (s, summed) */
  lateTotal = 0;

  constructor(urls: string | string[], options: ClientOptions = {}) {
    this.urls = typeof urls === "string" ? [urls] : [...urls];
    if (this.urls.length === 0) throw new ConfigError("give at least one URL");
    this.token = options.token ?? null;
    this.policy = options.policy instanceof BackoffPolicy ? options.policy : new BackoffPolicy(options.policy ?? {});
    this.shouldRetry = options.shouldRetry;
    this.onEvent = options.onEvent;
    this.openTimeout = options.openTimeout ?? 3.0;
    const rt = (this.requestTimeout = options.requestTimeout ?? 30.0);
    if (typeof rt != "number" || !(rt > 0)) throw new ConfigError(`requestTimeout ${rt}: need seconds > 0`);
    this.maxFrame = options.maxFrame ?? DEFAULT_MAX_FRAME;
    this.validator = options.validator ?? null;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) throw new ConfigError("no global WebSocket (Node < 22: node --experimental-websocket): pass options.WebSocket");
    this._WS = WS;
    const known = VERSIONS as readonly string[];
    const asked = (options.protocols ?? [...known]).map((p) => p.replace(/^unbroken\./, ""));
    for (const p of asked) if (!known.includes(p)) throw new ConfigError(`unknown protocol version ${JSON.stringify(p)}; known: ${known.join(", ")}`);
    this.protocols = known.filter((v) => asked.includes(v));
    if (this.protocols.length === 0) throw new ConfigError(`give at least one protocol version (${known.join(", ")})`);
    this._caps = [CAP_BATCH, CAP_UNAVAILABLE];
    this._live = new Liveness({ silenceFactor: options.silenceFactor, pingEvery: options.pingEvery });
    this._rng = options.seed === undefined ? Math.random : seededRng(options.seed);
    this._reconnectRng = options.seed === undefined ? Math.random : seededRng(options.seed);
    const g = globalThis as { sessionStorage?: StorageLike; document?: unknown };
    let storage = options.storage;
    if (storage === undefined) {
      try {
        storage = g.sessionStorage ?? null;
      } catch {
        storage = null; // (a sandboxed frame may refuse access)
      }
    }
    this._storage = storage ?? null;
    this._storageKey = options.storageKey ?? "unbroken";
    this._anon = this._readStorage()?.anon ?? null;
    if (options.lifecycle ?? g.document !== undefined) this._listenToLifecycle();
    const names = new Set<string>();
    for (const p of options.plugins ?? []) {
      // (the public type is only `{ name }`: an object of one's own is refused here)
      if (!p._install) throw new ConfigError(`unknown plugin ${p.name}`);
      // each once (the same one, or either entry's, given again)
      if (!names.has(p.name)) p._install(this, options);
      names.add(p.name);
    }
    this._caps.sort(); // (the hello lists them as it always did: by name)
  }

  get silenceFactor(): number {
    return this._live.silenceFactor;
  }
  set silenceFactor(v: number) {
    this._live.silenceFactor = v;
  }
  get pingEvery(): number {
    return this._live.pingEvery;
  }
  set pingEvery(v: number) {
    this._live.pingEvery = v;
  }
  /** Seconds of silence (or of an unanswered ping) after which the link is dead. */
  get silenceLimit(): number {
    return this._live.limit();
  }
  /** The reconnect episode under way or last (its `schedule` of delays). */
  get backoff(): Backoff | null {
    return this._backoff;
  }
  /** Whether a connection is up and welcomed. */
  get connected(): boolean {
    return this._ready;
  }

  // ------------------------------------------------------------ lifecycle
  /** Connect (once); resolves when the first connection is welcomed. */
  connect(): Promise<void> {
    this._checkUsable();
    this._ensureRunning();
    return this._first![0];
  }

  /** Close the connection; streams not finished end with `ConnectionLost`. */
  async close(): Promise<void> {
    if (this._closed) return;
    this.saveCursors();
    this._closed = true;
    for (const [target, type, fn] of this._listeners) target.removeEventListener(type, fn);
    this._listeners.length = 0;
    this._wakeSleep?.();
    this._frozen?.();
    const error = new ConnectionLost("client closed");
    this._endConnection?.(error);
    this._failAll(error);
  }

  // ------------------------------------------------------------ requests
  /** Start an agent run; resolves once the server answered `started`. A start whose
   * answer is lost in a drop is sent again with the same request id. */
  async start(agent: string, input: unknown = null, options: { req?: string } = {}): Promise<Stream> {
    this._checkUsable();
    const req = options.req ?? randomId();
    if (this.openStreams.has(req)) throw new ConfigError(`request id ${JSON.stringify(req)} already used`);
    const st = new Stream(this, req, agent, input);
    const frame: ClientFrame = { t: "start", req, agent, input };
    const welcome = this._welcome;
    if (welcome !== null) {
      const size = this._wire(frame).length;
      const limit = welcome.limits.max_client_frame;
      if (size > limit) throw new RequestRefused("too_big", `start frame of ${size} bytes; limit ${limit}`);
    }
    this.openStreams.set(req, st);
    this._ensureRunning();
    this._send(frame);
    this.saveCursors();
    await this._awaitAnswer(st, "start");
    return st;
  }

  /** Pick up a stream from a saved `Stream.cursor` (this or another node), its
   * string (`String(cursor)`, `Cursor.parse`) or its saved fields. The events after
   * the cursor follow, verified against the chain from the cursor's digest. */
  async resume(cursor: Cursor | CursorLike | string, options: { req?: string; agent?: string } = {}): Promise<Stream> {
    this._checkUsable();
    // a string is parsed; fields are checked the same way (a bad digest would
    // otherwise be a late error, a bad id the server closing 4000)
    const c = Cursor.parse(cursor);
    if (this._find(c.stream)) throw new ConfigError(`stream ${c.stream} is already open on this client`);
    const st = new Stream(this, options.req ?? `resume-${randomId()}`, options.agent ?? "");
    st._began(c.stream, c.epoch, c.seq, fromHex(c.digest));
    st.result = new Answer(c.stream, c.seq);
    st.result.validator = this.validator;
    st._state = "detached";
    this.openStreams.set(st.req, st);
    this._ensureRunning();
    if (this._ready) this._send(this._resume(st));
    await this._awaitAnswer(st, "resume");
    return st;
  }

  /** The streams saved in storage by an earlier page (before a reload). */
  savedStreams(): SavedStream[] {
    const saved = this._readStorage();
    if (!saved) return [];
    return Object.entries(saved.streams).map(([req, s]) => ({ req, ...s }));
  }

  /** Pick up every stream saved by an earlier page: resumed from its cursor, or
   * started again with the same request id (the server returns the same run). */
  async restore(): Promise<Stream[]> {
    const out: Stream[] = [];
    for (const s of this.savedStreams()) {
      if (this.openStreams.has(s.req)) continue;
      out.push(
        await (s.cursor
          ? this.resume(s.cursor, { req: s.req, agent: s.agent })
          : this.start(s.agent, s.input, { req: s.req })),
      );
    }
    return out;
  }

  /** Save every open stream's cursor (done on `pagehide`, `freeze`, a hidden tab,
   * each ack, start and end; call it yourself before anything else that may unload). */
  saveCursors(): void {
    const storage = this._storage;
    if (storage === null || this._closed) return;
    const streams: Record<string, Omit<SavedStream, "req">> = {};
    let any = this._anon !== null;
    for (const st of this.openStreams.values()) {
      if (st.done) continue;
      const cursor = st.cursor;
      streams[st.req] = { agent: st.agent, input: cursor ? null : st.input, cursor };
      any = true;
    }
    try {
      if (any) storage.setItem(this._storageKey, JSON.stringify({ anon: this._anon, streams }));
      else storage.removeItem(this._storageKey);
    } catch {
      /* storage full or refused: cursors are then only in memory */
    }
  }

  /** Reconnect now: cuts a backoff wait short (never a server's `retry_after`; an
   * attempt under way that fails is followed at once), or probes a connection
   * believed alive with a ping. `cause` (what woke it: the page events pass
   * "online", "resume", "pageshow", "visible") is the `reconnecting` event's. */
  wake(cause = "wake"): void {
    if (this._closed) return;
    const thaw = this._frozen;
    if (thaw !== null) {
      this._frozen = null;
      this._thawed = null;
      thaw();
    }
    // a wait cut short, or an attempt under way (it began offline, say): if that
    // fails, the next one is made at once
    if (this._wakeSleep ? !this._sleepFloor : !this._ready && this._running) this._wokenBy = cause;
    if (this._wakeSleep && !this._sleepFloor) this._wakeSleep();
    else if (thaw === null && this._ready && !this._live.awaitingPong) this._send(this._live.ping(now()));
  }

  /** Wait for the answer to a start or resume: `requestTimeout` from the request, or
   * from each time an answer has it sent again (`unavailable`, a start refused for
   * load): a server that keeps answering is not stuck; the policy bounds that wait.
   * Time this page ran late (a busy page, a throttled background tab, a stopped
   * process) is not the server's and does not count, as in the liveness rule: the
   * answer is due that much later. The client's one ticker (`lateTick`, while any
   * request waits) measures it; the deadline (`_answerBy`) is kept on a clock that
   * leaves it out (`sinceLate`), so a resend's new deadline is not moved on again by
   * a stall before it. Each wait keeps one timer, at its deadline (none when that is
   * Infinity), which moves on when it fires after the page ran late (and lets the
   * messages that wait go first, once). */
  private async _awaitAnswer(st: Stream, what: string): Promise<void> {
    st._answerBy = Math.max(st._answerBy, this.sinceLate() + this.requestTimeout);
    if (this.lateWaits++ === 0) this.lateTick();
    let seen = this.lateNow();
    let cancel: (() => void) | undefined;
    // when the timer is due (its own lateness counts too: it may fire before the ticker)
    let at = Infinity;
    let deferred = false;
    const timeout = new Promise<never>((_, rej) => {
      const due = (): void => {
        const t = now();
        const total = this.lateNow();
        const late = Math.max(total - seen, t - at);
        // its own lateness that the ticker did not measure (it fired first)
        st._answerBy += late - total + seen;
        seen = total;
        // seconds left: the deadline is on the clock without the page's lateness
        const left = st._answerBy - t + total;
        // ran late: the messages that wait go first (once); else on to the deadline,
        // moved on (ran late, or sent again); a resend planned but late (a busy page):
        // its timer runs first, then this again
        deferred = late > LATE_RUN && !deferred;
        if (left === Infinity) return;
        if (deferred || left > 0 || st._againDue) {
          const s = deferred ? 0 : Math.max(left, 0.001);
          at = t + s;
          cancel = inSeconds(due, s);
        } else rej(new RequestTimeout(`${what} of ${JSON.stringify(st.agent || st.id || st.req)}`, this.requestTimeout));
      };
      due();
    });
    try {
      await Promise.race([st.started, timeout]);
    } catch (e) {
      if (e instanceof RequestTimeout) this._fail(st, e);
      throw e;
    } finally {
      cancel?.();
      if (--this.lateWaits === 0) {
        clearTimeout(this.lateTimer);
        this.lateDue = null;
      }
    }
  }

  /** @internal How late this page ran (seconds, summed) while answers were awaited, up
   * to now: a tick that is overdue counts as far as now. */
  lateNow(): number {
    const t = now();
    const due = this.lateDue;
    if (due !== null && t > due) {
      this.lateTotal += t - due;
      this.lateDue = t;
    }
    return this.lateTotal;
  }

  /** @internal Now (seconds) on the clock that leaves out how late this page ran. */
  sinceLate(): number {
    return now() - this.lateNow();
  }

  /** @internal The ticker: adds up how late it ran, then ticks again (while a wait is on). */
  lateTick(): void {
    this.lateNow();
    const step = Math.min(this.requestTimeout / 3, MAX_CHECK_EVERY);
    this.lateDue = now() + step;
    this.lateTimer = setTimeout(() => this.lateTick(), step * 1000);
  }

  /** @internal */
  _checkUsable(): void {
    if (this._fatal !== null) throw this._fatal;
    if (this._closed) throw new ConfigError("client is closed: make a new Client");
  }

  /** `frame` as this connection's version sends it: v1 text, v2 bytes. */
  private _wire(frame: ClientFrame): string | Uint8Array {
    return this.version === "v1" ? v1!.encode(frame) : encodeClientV2(frame);
  }

  /** @internal send `frame` on the welcomed connection (none: it goes, or is
   * replaced, after the next welcome) */
  _send(frame: ClientFrame): void {
    const ws = this._ws;
    if (ws !== null && this._ready && ws.readyState === 1) ws.send(this._wire(frame));
  }

  /** An open stream by its id (not one that finished, forgotten once its message is handled). */
  private _find(id: string): Stream | undefined {
    for (const st of this.openStreams.values()) if (st.id === id && !st.done) return st;
  }

  /** The `resume` of a detached stream (now resuming). */
  private _resume(st: Stream): ClientFrame {
    st._state = "resuming";
    const chain = st._chain!;
    return { t: "resume", stream: st.id, after: chain.seq, epoch: st.epoch, h: toHex(chain.digest) };
  }

  /** End `st` with `error` and forget it at once (its later frames are moot). */
  private _fail(st: Stream, error: unknown): void {
    this.openStreams.delete(st.req);
    st._finish(error);
  }

  /** @internal a stream finished: forget it (after this message's acks are sent). */
  _finished(st: Stream): void {
    this._forgetSoon.push(st);
    queueMicrotask(() => this._flushForget());
    this.saveCursors();
  }

  private _flushForget(): void {
    for (const st of this._forgetSoon) if (this.openStreams.get(st.req) === st) this.openStreams.delete(st.req);
    this._forgetSoon = [];
  }

  /** @internal */
  _emit(kind: ConnectionEvent["kind"], kw: Partial<ConnectionEvent> = {}): void {
    const ev: ConnectionEvent = {
      kind,
      at: now(),
      url: "",
      cause: "",
      code: null,
      attempt: 0,
      delay: 0,
      stream: "",
      fromSeq: 0,
      head: 0,
      reason: "",
      version: "",
      retryAfter: null,
      ...kw,
    };
    this.history.push(ev);
    if (this.history.length > 10000) this.history.splice(0, 5000);
    try {
      this.onEvent?.(ev);
    } catch (e) {
      console.error("unbroken: onEvent callback failed", e);
    }
    for (const sub of this._subscribers) sub(ev);
  }

  private _readStorage(): { anon: string | null; streams: Record<string, Omit<SavedStream, "req">> } | null {
    try {
      const raw = this._storage?.getItem(this._storageKey);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }

  private _listenToLifecycle(): void {
    const doc = (globalThis as unknown as { document?: EventTarget & { visibilityState?: string } }).document;
    const win = globalThis as unknown as EventTarget;
    const on = (target: EventTarget | undefined, type: string, fn: () => void) => {
      if (!target || typeof target.addEventListener !== "function") return;
      target.addEventListener(type, fn);
      this._listeners.push([target, type, fn]);
    };
    const save = () => this.saveCursors();
    on(doc, "freeze", () => this.freeze());
    on(win, "pagehide", ((ev: { persisted?: boolean }) => (ev?.persisted ? this.freeze() : save())) as () => void);
    on(doc, "visibilitychange", () => (doc?.visibilityState === "hidden" ? save() : this.wake("visible")));
    for (const type of ["resume", "pageshow", "online"]) on(type === "resume" ? doc : win, type, () => this.wake(type));
  }

  /** The page is frozen (Page Lifecycle `freeze`, or `pagehide` into the
   * back/forward cache): save the cursors and close the socket now, so the server
   * stops sending into a connection nobody reads; open none until `wake()`
   * (`resume`, `pageshow`, `online`, `visibilitychange` → visible), which
   * reconnects at once and resumes every stream exactly. */
  freeze(): void {
    this.saveCursors();
    if (this._closed || this._frozen !== null) return;
    this._thawed = new Promise((resolve) => (this._frozen = resolve));
    this._endConnection?.((this._frozenError = new ConnectionLost("page frozen")));
  }

  // ------------------------------------------------------------ the loop
  private _ensureRunning(): void {
    if (this._running) return;
    this._running = true;
    this._first = deferred<void>();
    void this._supervise();
  }

  private async _supervise(): Promise<void> {
    while (!this._closed) {
      if (this._thawed !== null) {
        await this._thawed;
        if (this._closed) return;
      }
      const url = this.urls[this._urlIndex % this.urls.length];
      this._progressed = false;
      this._wokenBy = null;
      // the first connection may take at most the deadline; failed, its episode
      // counts from when it began (the deadline bounds the first connect too)
      const began = now();
      this._welcomedAt = null;
      const budget = this._backoff === null ? this.policy.deadline : this._backoff.remaining(began);
      let error: unknown;
      try {
        await this._connection(url, budget);
        error = new ConnectionLost("server closed the connection");
      } catch (e) {
        error = e;
      }
      const welcomedAt = this._welcomedAt;
      this._connectionLost();
      if (this._closed) return;
      const shed = (error as { retryAfter?: number | null }).retryAfter;
      this._emit("disconnected", { url, cause: causeOf(error), code: (error as { code?: number | null }).code ?? null, retryAfter: typeof shed === "number" ? shed : null });
      // closed by freeze(): no backoff, no attempt counted; reconnect on wake()
      if (this._thawed !== null || error === this._frozenError) continue;
      let retry = defaultRetryTable(error);
      const decided = this.shouldRetry?.(error);
      if (decided !== null && decided !== undefined) retry = decided;
      if (!retry) {
        this._failAll(fatalError(error, this.protocols));
        return;
      }
      const t = now();
      if (this._progressed || this._backoff === null) this._backoff = new Backoff(this.policy, welcomedAt === null ? began : t, this._reconnectRng);
      // the deadline counts time without a connection: an idle client's hours on a
      // good one are not its outage (maxAttempts still bounds a flapping server)
      else if (welcomedAt !== null) this._backoff.started = Math.min(t, this._backoff.started + (t - welcomedAt));
      const b = this._backoff;
      const delay = b.nextDelay(t, typeof shed === "number" ? shed : null);
      if (delay === null) {
        this._emit("exhausted", { attempt: b.attempts, cause: causeOf(error) });
        // (never welcomed: a wrong URL or a server not up, not a lost link)
        this._failAll(new ReconnectExhausted(b.attempts, b.elapsed(t), error, this._welcomedOnce ? [] : this.urls));
        return;
      }
      this._urlIndex += 1;
      const next = { attempt: b.attempts, url: this.urls[this._urlIndex % this.urls.length] };
      const floor = typeof shed === "number" && shed > 0;
      // woken while this attempt was under way: the next is made now (never before
      // a server's retry_after)
      const woken = floor ? null : this._wokenBy;
      this._emit("reconnecting", { ...next, delay: woken === null ? delay : 0, cause: woken ?? "" });
      if (delay > 0 && woken === null) {
        await this._sleep(delay, floor);
        if (this._wokenBy !== null) this._emit("reconnecting", { ...next, cause: this._wokenBy });
      }
    }
  }

  /** The connection is gone: what was attached waits for the next one. */
  private _connectionLost(): void {
    this._ready = false;
    this._ws = this._welcome = null;
    this._zlib = false;
    this._handles.clear();
    for (const h of this._hooks) h(Hook.LOST);
    // (an ended stream is forgotten once its message is handled: no ack of it goes
    // to a connection that never had it)
    for (const st of this.openStreams.values()) if (st._state === "attached" || st._state === "resuming") st._state = "detached";
  }

  private _sleep(seconds: number, floor: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        cancel();
        this._wakeSleep = null;
        resolve();
      };
      const cancel = inSeconds(done, seconds);
      this._sleepFloor = floor;
      this._wakeSleep = done;
    });
  }

  private _failAll(error: unknown): void {
    if (!this._closed) this._fatal = error;
    this._first?.[2](error);
    for (const st of [...this.openStreams.values()]) st._finish(error);
    for (const h of this._hooks) h(Hook.ENDED, error);
  }

  /** The token for a `hello`: the fixed one, or the provider's (nothing: a hello
   * without one); a provider that throws is asked again after 0.1, 0.2 s, and the
   * third failure in a row is an `AuthError` (fatal: no retry storm). */
  private async _tokenValue(): Promise<string | null> {
    const t = this.token;
    if (typeof t !== "function") return t ?? null;
    for (let failures = 1; ; failures++) {
      let error: unknown;
      try {
        return (await t()) || null; // no token: the hello goes without one
      } catch (e) {
        error = e;
      }
      if (failures >= TOKEN_ATTEMPTS || this._closed) {
        throw new AuthError(`the token provider failed: ${errorName(error)}: ${errorMessage(error)} (${failures} attempts)`);
      }
      await new Promise((r) => setTimeout(r, refreshDelay(failures) * 1000));
    }
  }

  /** Run one connection until it drops; always rejects with why it ended. */
  private async _connection(url: string, budget: number | null): Promise<void> {
    const t0 = now();
    const timeout = budget === null ? this.openTimeout : Math.min(this.openTimeout, budget);
    const token = await this._tokenValue();
    await digestReady(); // (WebAssembly refused: BLAKE2b's JavaScript chunk, before any digest)
    if (this._thawed !== null) throw (this._frozenError = new ConnectionLost("page frozen"));
    const live = this._live;
    let ws: WebSocketLike;
    try {
      ws = new this._WS(url, this.protocols.map((v) => `unbroken.${v}`));
      ws.binaryType = "arraybuffer";
    } catch (e) {
      throw new ConnectionLost(`cannot open ${url}: ${errorMessage(e)}`);
    }
    // the server accepted without a version this client speaks: it closes 4005 (the
    // versions it speaks in the reason); wait for that close
    let noVersion: string | null = null;
    this._ws = ws;
    this._retryAfter = null; // from an `overloaded` error before the close
    let over = false;
    let stopWatch: (() => void) | undefined;
    let due = 0;
    let settle!: (err: unknown) => void;
    const finished = new Promise<void>((_, rej) => (settle = rej));

    const end = (err: unknown, close: [number, string] = [1000, ""]) => {
      if (over) return;
      over = true;
      stopOpen();
      stopWatch?.();
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState <= 1) {
        try {
          ws.close(close[0], close[1].slice(0, 120));
        } catch {
          /* already closing */
        }
      }
      if (this._endConnection === end) this._endConnection = null;
      this._ready = false;
      settle(err);
    };
    this._endConnection = end;
    // (inSeconds: an openTimeout past 2^31-1 ms is armed again, not fired at once)
    const stopOpen = inSeconds(() => end(new ConnectionLost("no welcome in time")), timeout);

    const watch = (at: number) => {
      const delay = Math.max(0, at - now());
      due = now() + delay;
      stopWatch = inSeconds(checkSilence, delay);
    };
    const checkSilence = () => {
      if (over) return;
      let expecting = false;
      // a start to be sent again later awaits nothing yet (the server may fall quiet)
      for (const st of this.openStreams.values()) expecting ||= LIVE.has(st._state) && !st._resendDue;
      live.ahead = this._bytesAhead();
      const check = live.check(now(), due, expecting);
      if (check.dead !== null) {
        end(new ConnectionLost(check.dead, CloseCode.HEARTBEAT_TIMEOUT), [CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"]);
        return;
      }
      if (check.ping !== null) this._send(check.ping);
      watch(check.wakeAt);
    };

    ws.onopen = () => {
      // no subprotocol: a server that predates negotiation (or refuses, then closes 4005)
      const chosen = ws.protocol ? /^unbroken\.(v\d+)$/.exec(ws.protocol)?.[1] ?? "" : "v1";
      if (!this.protocols.includes(chosen)) {
        noVersion = ws.protocol ? `server chose subprotocol ${ws.protocol}` : "no common protocol version";
        return;
      }
      this.version = chosen;
      const hello = () => {
        if (over) return;
        this._hbSeen = false;
        live.connecting();
        this._conn++;
        this._handles.clear();
        // (zlib is a v2 cap: not offered to a v1 server)
        const caps = chosen === "v2" ? this._caps : this._caps.filter((c) => c !== CAP_ZLIB);
        ws.send(this._wire({ t: "hello", caps, token, anon: this._anon }));
        // (pipelined: the server handles frames in order, so every detached stream's
        // resume goes before `welcome`, saving a round trip on every reconnect)
        for (const st of this.openStreams.values()) if (st._state === "detached") ws.send(this._wire(this._resume(st)));
        live.helloSent(now());
      };
      // (v1's codec is a module of its own, loaded when a server first chooses v1)
      if (chosen === "v1" && v1 === null) loadV1().then(hello, end);
      else hello();
    };
    ws.onerror = () => undefined; // onclose follows with the code
    ws.onclose = (ev) => {
      // frames that arrived before the close and wait in the backlog are read first:
      // a shed's `error overloaded` (its retry_after_ms: the floor of the reconnect)
      if (!over && head < backlog.length) {
        closing = true;
        drain(now());
        if (over) return;
      }
      let err: ConnectionLost = closedBy(ev.code === 1006 ? null : [ev.code, ev.reason]);
      if (noVersion !== null) err = new ConnectionLost(ev.code === CloseCode.UNSUPPORTED_VERSION ? ev.reason : noVersion, CloseCode.UNSUPPORTED_VERSION);
      if (err instanceof ConnectionLost && this._retryAfter !== null) err = new ConnectionLost(err.message, err.code, this._retryAfter);
      end(err);
    };
    ws.onmessage = (ev) => {
      if (over) return;
      const data = ev.data;
      const v2 = this.version === "v2";
      const bytes = typeof data === "string" ? null : data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
      if (typeof data === "string" ? v2 : bytes === null || !v2) {
        const what = wrongMessage(v2);
        end(new ProtocolError(what), [CloseCode.BAD_FRAME, what]);
        return;
      }
      const t = now();
      live.bytesHeard(t, bytes === null ? (data as string).length : bytes.length);
      live.messageHeard();
      if (bytes !== null && (inflating !== null || isZlib(bytes))) {
        // a deflated message (cap zlib) inflates asynchronously; later messages wait
        // their turn behind it
        if (!this._zlib && isZlib(bytes)) {
          fail(new ProtocolError("compressed frame without the zlib cap"));
          return;
        }
        const job: Promise<void> = (inflating ?? Promise.resolve())
          .then(async () => {
            const m = isZlib(bytes) ? await this._inflate!(bytes, this.maxFrame) : bytes;
            if (!over) take(framesOfV2(m, this.maxFrame), now());
          })
          .catch((e) => {
            if (!over) fail(e);
          })
          .finally(() => {
            if (inflating === job) inflating = null;
          });
        inflating = job;
        return;
      }
      try {
        if (!this._ready) {
          let one: string | FrameV2 = data as string;
          if (bytes !== null) {
            const frames = framesOfV2(bytes, this.maxFrame);
            if (frames.length !== 1) throw new ProtocolError("expected welcome, got a batch");
            one = frames[0];
          }
          const f = this._decode(one);
          if (f.t === "error") {
            if (RETRYABLE_START.has(f.code)) this._retryAfter = (f.retry_after_ms ?? 0) / 1000 || null;
            else end(new RequestRefused(f.code, f.message));
            return;
          }
          if (f.t !== "welcome") throw new ProtocolError(`expected welcome, got ${f.t}`);
          stopOpen();
          this._welcomed(f);
          live.welcomed(t, f.heartbeat_ms, t - t0);
          this._emit("connected", { url, version: this.version! });
          this._first![1]();
          this._welcomedOnce = true;
          for (const st of this.openStreams.values()) {
            if (st._state === "starting") {
              st._resendDue = false;
              ws.send(this._wire(startFrame(st)));
            }
            else if (st._state === "detached") ws.send(this._wire(this._resume(st)));
          }
          for (const h of this._hooks) h(Hook.WELCOMED);
          watch(live.firstCheck(now()));
          return;
        }
        take(bytes !== null ? framesOfV2(bytes, this.maxFrame) : this._batch && (data as string).includes("\n") ? (data as string).split("\n") : [data as string], t);
      } catch (e) {
        fail(e);
      }
    };
    let inflating: Promise<void> | null = null;
    const take = (frames: (string | FrameV2)[], t: number) => {
      if (backlog.length === 0) backlog = frames;
      else for (const one of frames) backlog.push(one);
      if (!deferred) drain(t);
    };
    // The frames of the messages received, applied in order by `drain`. A batched
    // message may carry several frames (a catch-up after a resume: 16 KiB, then
    // 32, 64… KiB); `drain` lets the page see the first frame's events before it
    // verifies the rest (and yields every few ms), the rest in a later task.
    let backlog: (string | FrameV2)[] = [];
    let head = 0;
    let deferred = false;
    let firstEvents = true;
    let closing = false; // the close came: read the rest at once, send nothing
    const fail = (e: unknown) => {
      if (e instanceof ProtocolError) end(e, [e.closeCode >= 3000 ? e.closeCode : 4000, e.message]);
      else end(e);
    };
    const drain = (t: number) => {
      deferred = false;
      const t0 = now();
      try {
        while (head < backlog.length) {
          if (over) return;
          const out = this._apply(backlog[head++]);
          if (out === INTEGRITY) {
            // the stream failed; its further frames are moot: resume the others afresh
            end(new ConnectionLost("integrity error"));
            return;
          }
          if (out) this._progressed = true;
          if (out === EVENTS) {
            const pause = !closing && (firstEvents || now() - t0 > SLICE);
            firstEvents = false;
            if (pause && head < backlog.length) {
              deferred = true;
              later(() => {
                if (!over) drain(now());
              });
              break;
            }
          }
        }
        if (head >= backlog.length) {
          backlog = [];
          head = 0;
        }
        const acked = closing || this._sendAcks(t);
        this._flushForget();
        if (acked) this.saveCursors();
      } catch (e) {
        fail(e);
      }
    };
    return finished;
  }

  private _decode(one: string | FrameV2): ServerFrame {
    return (typeof one === "string" ? v1!.decodeServer(one, this.maxFrame) : decodeServerV2(one[0])) as ServerFrame;
  }

  /** `welcome` came: the caps in force on this connection, the acks' pace. */
  private _welcomed(w: Welcome): void {
    this._welcome = w;
    const has = (cap: string) => this._has(cap);
    this._epoch = w.epoch;
    if (w.anon !== null) this._anon = w.anon;
    this._batch = has(CAP_BATCH);
    this._zlib = this.version === "v2" && has(CAP_ZLIB);
    const window = w.limits.window;
    this._ackEvery = Math.max(1, Math.min(256 * 1024, Math.floor(window / 4)));
    this._ackMin = Math.max(1, Math.min(16 * 1024, Math.floor(window / 64)));
    this._ackAfter = Math.max(0.001, w.heartbeat_ms / 1000);
    this._ready = true;
    this._welcomedAt = now();
  }

  /** @internal both sides listed `cap` on this connection */
  _has(cap: string): boolean {
    return this._caps.includes(cap) && !!this._welcome?.caps.includes(cap);
  }

  /** Event bytes that may be on their way now (ahead of a ping sent now): each live
   * stream's flow window less what arrived unacked, and a quarter window more (a
   * frame's own bytes may overrun the window's budget). 0 before `welcome`. */
  private _bytesAhead(): number {
    const window = this._welcome?.limits.window ?? 0;
    let ahead = 0;
    for (const st of this.openStreams.values()) if (LIVE.has(st._state)) ahead += Math.max(0, window - st._unacked) + Math.floor(window / 4);
    return ahead;
  }

  /** Send what a whole message made due: the acks (cumulative: after every
   * `window / 4` bytes, at the end, or a heartbeat after the last one with
   * `window / 64` bytes unacked; after an `hb`, every attached stream's again), then a
   * ping when none is out. Whether an ack went. */
  private _sendAcks(t: number): boolean {
    const hb = this._hbSeen;
    this._hbSeen = false;
    let acked = false;
    for (const st of this.openStreams.values()) {
      const seq = st._chain?.seq ?? 0;
      const n = st._unacked;
      const due = seq > st._acked && (n >= this._ackEvery || st._state === "ended" || (n >= this._ackMin && t - st._ackedAt >= this._ackAfter));
      if (due || (hb && st._state === "attached" && seq > 0)) {
        st._acked = seq;
        st._unacked = 0;
        st._ackedAt = t;
        this._send({ t: "ack", stream: st.id, seq });
        acked = true;
      }
    }
    const live = this._live;
    if ((acked || hb) && !live.awaitingPong) {
      live.ahead = this._bytesAhead();
      this._send(live.ping(t));
    }
    return acked;
  }

  /** Apply one frame of a welcomed connection: `EVENTS` (events delivered),
   * `PROGRESS` (a stream moved), `INTEGRITY` (a stream failed its digest), else 0. */
  private _apply(one: string | FrameV2): number {
    const f = this._decode(one);
    switch (f.t) {
      case "events": {
        const v2 = typeof one !== "string";
        const handle = (f as { handle?: number }).handle;
        const st = v2 ? this._handles.get(handle!) : this._find(f.stream);
        if (st === undefined) throw new ProtocolError(`events for unknown stream ${v2 ? `handle ${handle}` : f.stream}`);
        if (st._state !== "attached") throw bad(`events for stream ${st.id}`);
        const h = f.h as string | Uint8Array;
        const events = v2 ? eventsOfV2(f.seq, f.items, st._kinds, st._carried) : v1!.eventsOf(f, st._kinds);
        const end = events[events.length - 1].kind === Kind.END;
        if (v2 && end && h.length !== 16) throw new ProtocolError(`stream ${st.id}: end without all 16 bytes of h`);
        let digest: Uint8Array;
        try {
          digest = st._chain!.extend(events, h);
        } catch (e) {
          if (!(e instanceof ChainMismatch)) throw e;
          console.error(`unbroken: integrity error stream=${st.id} seq=${e.seq}`);
          this._fail(st, new IntegrityError(st.id, e.seq, e.detail));
          return INTEGRITY;
        }
        const nbytes = v2 ? one[1] : one.length;
        st._unacked += nbytes;
        st._outage = null; // its log answers again: a later outage gets a new budget
        this._live.eventsHeard(nbytes);
        if (end) st._state = "ended";
        st._push(events, digest);
        return EVENTS;
      }
      case "started": {
        const st = this.openStreams.get(f.req);
        if (st?._state !== "starting") throw bad(`started for ${JSON.stringify(f.req)}`);
        st._began(f.stream, f.epoch);
        this._attach(f, st);
        st._answered();
        this.saveCursors();
        return PROGRESS;
      }
      case "resumed": {
        const st = this._find(f.stream);
        if (st?._state !== "resuming" || f.from !== st._chain!.seq) throw bad(`resumed for ${f.stream} from ${f.from}`);
        this._attach(f, st);
        this._emit("resumed", { stream: f.stream, fromSeq: f.from, head: f.head });
        st._answered();
        return PROGRESS;
      }
      case "gone": {
        const st = this._find(f.stream);
        if (st === undefined) throw bad(`gone for ${f.stream}`);
        st._state = "gone";
        this._emit("gone", { stream: f.stream, reason: f.reason });
        st._finish(new StreamGone(f.stream, f.reason as GoneReason, f.message));
        return PROGRESS;
      }
      case "hb":
        this._hbSeen = true;
        break;
      case "pong":
        this._live.pong(now(), f.n);
        break;
      case "error":
        this._serverError(f);
        break;
      case "auth_expiring":
        this._emit("auth_expiring", { delay: f.in_ms / 1000 });
        this._on.auth_expiring?.(f);
        break;
      default: {
        // (a plugin's: `refreshed`, `streams`; each checks its cap was agreed)
        const on = this._on[f.t];
        if (!on) throw bad(`${f.t} frame`);
        on(f);
      }
    }
    return 0;
  }

  /** `started`/`resumed`: the stream is attached; v2: under the handle given, its current part unset. */
  private _attach(f: { handle?: number }, st: Stream): void {
    st._state = "attached";
    st._carried = { part: "", kind: 0 };
    if (f.handle !== undefined) this._handles.set(f.handle, st);
  }

  /** What an `error` frame means for its request or stream. A start refused for load
   * is sent again after the server's `retry_after_ms` (`Overloaded` after the
   * policy's attempts). A stream whose log is unreachable (`unavailable`, sent only
   * with that cap offered) goes back to detached and is resumed after a backoff whose
   * floor is the server's `retry_after_ms`, within the policy; past it,
   * `LogUnavailable`. A start whose log is unreachable is sent again the same way. */
  private _serverError(e: ErrorFrame): void {
    console.warn(`unbroken: server error code=${e.code} message=${e.message}`);
    if (e.req === null && e.stream === null) {
      // about the connection: a shed's wait, or a refresh refused
      if (e.retry_after_ms !== null) this._retryAfter = e.retry_after_ms / 1000;
      if (e.code === "auth_failed") this._on.auth_failed?.(e);
      return;
    }
    const st = e.req !== null ? this.openStreams.get(e.req) : this._find(e.stream!);
    if (st === undefined || st.done) return;
    const t = now();
    const wait = (e.retry_after_ms ?? 1000) / 1000;
    let delay: number | null = wait;
    // a start not yet answered `started` (else a stream's resume)
    const start = e.req !== null && !st.id;
    const again = (): void => {
      st._againDue = false;
      if (start) {
        // not when a welcome sent it meanwhile (that start is still unanswered)
        if (!st._resendDue) return;
        st._resendDue = false;
      }
      if (!st.done && (start ? st._state === "starting" : st._state === "detached" && this._ready)) {
        this._send(start ? startFrame(st) : this._resume(st));
        // its answer is due `requestTimeout` after it went, not after it was planned (a
        // late timer: a busy or throttled page)
        st._answerBy = Math.max(st._answerBy, this.sinceLate() + this.requestTimeout);
      }
    };
    if (e.req !== null && e.stream === null && st.id && (RETRYABLE_START.has(e.code) || e.code === "unavailable")) {
      // a stale answer to a start already answered `started` (protocol §9): nothing to do
      return;
    }
    if (RETRYABLE_START.has(e.code) && start) {
      if (++st._refusals >= (this.policy.maxAttempts ?? 12)) return this._fail(st, new Overloaded(e.message || e.code, wait));
      st._resendDue = true;
    } else if (e.code === "unavailable" && (start || (e.stream !== null && st._chain !== null))) {
      // a start's: the log its stream is to be created in; the same start (same req)
      // goes again later, within the policy (the server creates one stream, runs one
      // agent). A stream's: resumed later.
      const outage = (st._outage ??= new Backoff(this.policy, t, this._rng));
      delay = outage.nextDelay(t, wait);
      if (delay === null) return this._fail(st, new LogUnavailable(st.id, e.message, outage.attempts, outage.elapsed(t), start ? st.req : ""));
      if (start) st._resendDue = true;
      else st._state = "detached";
      this._emit("unavailable", { stream: st.id, delay, cause: e.message });
    } else {
      if (!HARMLESS_ERROR.has(e.code)) this._fail(st, new RequestRefused(e.code, e.message));
      return;
    }
    // sent again after `delay`: its answer is due `requestTimeout` after that
    st._answerBy = Math.max(st._answerBy, this.sinceLate() + delay + this.requestTimeout);
    st._againDue = true;
    // (its timer keeps no Node process alive: a connection or its reconnect does, and
    // after close it is moot)
    inSeconds(again, delay, true);
  }
}

const LIVE: ReadonlySet<StreamState> = new Set(["starting", "attached", "resuming"]);
/** A stream's `start` frame (its request id, agent and input). */
const startFrame = (st: Stream): ClientFrame => ({ t: "start", req: st.req, agent: st.agent, input: st.input });
const PROGRESS = 1;
const EVENTS = 2;
const INTEGRITY = 3;

export { defaultRetryTable as defaultShouldRetry };
