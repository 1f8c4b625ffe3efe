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
import { BackoffPolicy, Reconnects, seededRng, type Backoff, type BackoffPolicyOptions } from "./backoff.js";
import { CORE, type CoreHelpers } from "./core-key.js";
import { fromHex, seed, toHex } from "./digest.js";
import { ready as digestReady } from "./blake2b.js";
import {
  ConfigError,
  ConnectionLost,
  IntegrityError,
  ProtocolError,
  AuthError,
  RequestRefused,
  RequestTimeout,
  StreamGone,
  UnbrokenError,
  type GoneReason,
} from "./errors.js";
import { CAP_BATCH, CAP_REFRESH, CAP_STREAMS, CAP_UNAVAILABLE, CloseCode, DEFAULT_MAX_FRAME, VERSIONS, type ClientFrame, type Event } from "./frames.js";
import { loadV1, v1 } from "./codecs.js";
import { CAP_ZLIB, framesOfV2, inflate, isZlib } from "./frames2.js";
import { Liveness } from "./liveness.js";
import { Answer, StreamEnded, type SchemaValidator, type StreamEvent } from "./response.js";
import { RETRYABLE_START, TOKEN_ATTEMPTS, causeOf, closeError, fatalError, refreshDelay, shouldRetry as defaultRetryTable } from "./retry.js";
import { ClientSession, ConsumedCursor, Cursor, endError, wrongMessage, type AskToken, type ClientOutput, type CursorLike, type FrameV2 } from "./session.js";

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
  /** seconds a start or resume may stay unanswered on a live link (30) */
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
  /** offer the `zlib` cap (v2: a large message may come deflated); default: when the
   * platform has `DecompressionStream` */
  compression?: boolean;
  /** checks JSON parts against the schema their start declared (`jsonSchema` of
   * `unbroken-client/schema`); none: a JSON part is only checked to parse */
  validator?: SchemaValidator | null;
}

/** A stream saved in storage: a cursor to resume, or a start not yet answered. */
export interface SavedStream {
  req: string;
  agent: string;
  input: unknown;
  cursor: CursorLike | null;
}

type QueueItem = { ev: StreamEvent; raw: Event } | { mark: number; digest: Uint8Array } | { error: unknown };

const now = (): number => performance.now() / 1000;

/** Longest run of frame verification before the client lets the page run (s). */
const SLICE = 0.004;

let _later: ((fn: () => void) => void) | null = null;
/** Run `fn` in a later task (a MessageChannel message: no 4 ms timer clamp). */
function later(fn: () => void): void {
  if (_later === null) {
    const MC = (globalThis as { MessageChannel?: new () => { port1: MessagePortLike; port2: MessagePortLike } }).MessageChannel;
    if (typeof MC !== "function") _later = (f) => void setTimeout(f, 0);
    else {
      const ch = new MC();
      const queue: (() => void)[] = [];
      ch.port1.onmessage = () => queue.shift()?.();
      ch.port1.unref?.();
      _later = (f) => {
        queue.push(f);
        ch.port2.postMessage(0);
      };
    }
  }
  _later(fn);
}
interface MessagePortLike {
  onmessage: (() => void) | null;
  postMessage(m: unknown): void;
  unref?(): void;
}

function randomId(): string {
  const b = new Uint8Array(12);
  globalThis.crypto.getRandomValues(b);
  return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** One agent answer as the client receives it: `for await (const ev of stream)`
 * yields typed events exactly once across reconnects; `await stream.wait()` is the
 * verified `Answer` (or the typed error that ended it). */
export class Stream implements AsyncIterable<StreamEvent> {
  id = "";
  result: Answer;
  private readonly _queue: QueueItem[] = [];
  private _waiter: (() => void) | null = null;
  private readonly _consumed = new ConsumedCursor();
  private _startedResolve!: () => void;
  private _startedReject!: (e: unknown) => void;
  readonly started: Promise<void>;
  private _doneResolve!: (a: Answer) => void;
  private _doneReject!: (e: unknown) => void;
  private readonly _donePromise: Promise<Answer>;
  private _finished = false;
  private _startedDone = false;
  /** @internal the user cancelled (a `cancelled` end is then a success) */
  cancelledByUser = false;
  /** @internal when the start or resume is due its answer (`now()`): moved on by
   * each answer that has it sent again (`unavailable`, a start refused for load) */
  _answerBy = 0;

  constructor(
    private readonly _client: Client,
    readonly req: string,
    readonly agent: string,
    readonly input: unknown = null,
  ) {
    this.result = new Answer("");
    this.result.validator = _client.validator;
    this.started = new Promise((res, rej) => {
      this._startedResolve = res;
      this._startedReject = rej;
    });
    this.started.catch(() => undefined);
    this._donePromise = new Promise((res, rej) => {
      this._doneResolve = res;
      this._doneReject = rej;
    });
    this._donePromise.catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    for (;;) {
      while (this._queue.length === 0) await new Promise<void>((r) => (this._waiter = r));
      const item = this._queue.shift()!;
      if ("error" in item) throw item.error;
      if ("mark" in item) {
        this._consumed.verified(item.mark, item.digest);
        continue;
      }
      this._consumed.consumed(item.raw);
      yield item.ev;
      if (item.ev instanceof StreamEnded) return;
    }
  }

  /** The verified answer once the stream ends, or the error that ended it. */
  wait(): Promise<Answer> {
    return this._donePromise;
  }

  get done(): boolean {
    return this._finished;
  }

  /** Position of the last event the iterator yielded: save it to pick the answer up
   * later, on any node, with `Client.resume`. `null` before the stream started. */
  get cursor(): Cursor | null {
    return this._consumed.cursor();
  }

  /** The storage generation of the server's log that holds this stream (`""` before
   * the stream started); a resume in another epoch is answered `gone`. */
  get epoch(): string {
    return this._consumed.epoch;
  }

  /** Stop the agent on the server (idempotent; also after a reconnect). */
  async cancel(): Promise<void> {
    this.cancelledByUser = true;
    if (this.id && !this._finished) this._client._sendFrame(this._client._session.cancel(this.id));
  }

  /** @internal */
  _began(stream: string, epoch: string, seq = 0, digest: Uint8Array | null = null): void {
    this.id = stream;
    this._consumed.began(stream, epoch, seq, digest);
  }

  /** @internal */
  _answered(): void {
    if (!this._startedDone) {
      this._startedDone = true;
      this._startedResolve();
    }
  }

  private _put(item: QueueItem): void {
    this._queue.push(item);
    const w = this._waiter;
    if (w) {
      this._waiter = null;
      w();
    }
  }

  /** @internal */
  _push(ev: StreamEvent, raw: Event): void {
    this._put({ ev, raw });
    if (ev instanceof StreamEnded) this._finish(endError(this.id, ev.status, ev.error, this.cancelledByUser));
  }

  /** @internal */
  _mark(seq: number, digest: Uint8Array): void {
    if (!this._finished) this._put({ mark: seq, digest });
  }

  /** @internal */
  _finish(error: unknown): void {
    if (this._finished) return;
    this._finished = true;
    if (error) {
      this._put({ error });
      this._doneReject(error);
      if (!this._startedDone) {
        this._startedDone = true;
        this._startedReject(error);
      }
    } else {
      this._doneResolve(this.result);
    }
    this._client._finished(this);
  }
}

/** A resilient unbroken client. `await client.connect()` (optional: `start` connects),
 * `await client.start(agent, input)`, `await client.close()`. */
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
  /** @internal */
  readonly _session: ClientSession;
  private readonly _live: Liveness;
  private readonly _WS: WebSocketConstructor;
  private readonly _storage: StorageLike | null;
  private readonly _storageKey: string;
  private readonly openStreams = new Map<string, Stream>();
  private readonly _byId = new Map<string, Stream>();
  private readonly _reconnects: Reconnects;
  private readonly _subscribers = new Set<(e: ConnectionEvent) => void>();
  private _ws: WebSocketLike | null = null;
  private _ready = false;
  private _closed = false;
  private _fatal: unknown = null;
  /** the server's log generation, from the last `welcome` */
  private _epoch: string | null = null;
  private _running = false;
  private _urlIndex = 0;
  private _progressed = false;
  private _first: Promise<void> | null = null;
  private _firstResolve: (() => void) | null = null;
  private _firstReject: ((e: unknown) => void) | null = null;
  private _wakeSleep: (() => void) | null = null;
  private _sleepFloor = false;
  private _endConnection: ((err: unknown) => void) | null = null;
  private _refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** Set by `freeze()` until `wake()`: no connection is opened meanwhile. */
  private _frozen: (() => void) | null = null;
  private _thawed: Promise<void> | null = null;
  private _frozenError: unknown = null;
  private _forgetSoon: string[] = [];
  /** `list` requests awaiting their `streams` answer, by number (sent again after a reconnect). */
  private readonly _lists = new Map<number, { resolve: (items: LiveStreamInfo[]) => void; reject: (e: unknown) => void }>();
  private _listN = 0;
  private readonly _listeners: [EventTarget, string, () => void][] = [];

  constructor(urls: string | string[], options: ClientOptions = {}) {
    this.urls = typeof urls === "string" ? [urls] : [...urls];
    if (this.urls.length === 0) throw new UnbrokenError("give at least one URL");
    this.token = options.token ?? null;
    this.policy = options.policy instanceof BackoffPolicy ? options.policy : new BackoffPolicy(options.policy ?? {});
    this.shouldRetry = options.shouldRetry;
    this.onEvent = options.onEvent;
    this.openTimeout = options.openTimeout ?? 3.0;
    this.requestTimeout = options.requestTimeout ?? 30.0;
    this.maxFrame = options.maxFrame ?? DEFAULT_MAX_FRAME;
    this.validator = options.validator ?? null;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) throw new UnbrokenError("no WebSocket class: pass options.WebSocket");
    this._WS = WS;
    const known = VERSIONS as readonly string[];
    const asked = (options.protocols ?? [...known]).map((p) => p.replace(/^unbroken\./, ""));
    for (const p of asked) if (!known.includes(p)) throw new ConfigError(`unknown protocol version ${JSON.stringify(p)}; known: ${known.join(", ")}`);
    this.protocols = known.filter((v) => asked.includes(v));
    if (this.protocols.length === 0) throw new ConfigError(`give at least one protocol version (${known.join(", ")})`);
    const zlib = (options.compression ?? true) && typeof (globalThis as { DecompressionStream?: unknown }).DecompressionStream === "function";
    this._live = new Liveness({ silenceFactor: options.silenceFactor, pingEvery: options.pingEvery });
    this._session = new ClientSession({
      maxFrame: this.maxFrame,
      caps: [CAP_BATCH, ...(typeof this.token === "function" ? [CAP_REFRESH] : []), CAP_STREAMS, CAP_UNAVAILABLE, ...(zlib ? [CAP_ZLIB] : [])],
      liveness: this._live,
      startAttempts: this.policy.maxAttempts ?? 12,
      outagePolicy: this.policy,
      rng: options.seed === undefined ? Math.random : seededRng(options.seed),
    });
    this._reconnects = new Reconnects(this.policy, options.seed === undefined ? Math.random : seededRng(options.seed));
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
    const saved = this._readStorage();
    if (saved?.anon) this._session.anon = saved.anon;
    if (options.lifecycle ?? g.document !== undefined) this._listenToLifecycle();
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
    return this._reconnects.backoff;
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
    return this._first!;
  }

  /** Close the connection; streams not finished end with `ConnectionLost`. */
  async close(): Promise<void> {
    if (this._closed) return;
    this.saveCursors();
    this._closed = true;
    this._session.close();
    for (const [target, type, fn] of this._listeners) target.removeEventListener(type, fn);
    this._listeners.length = 0;
    this._wakeSleep?.();
    this._frozen?.();
    if (this._refreshTimer !== null) clearTimeout(this._refreshTimer);
    this._endConnection?.(new ConnectionLost("client closed"));
    for (const st of [...this.openStreams.values()]) st._finish(new ConnectionLost("client closed"));
    this._rejectLists(new ConnectionLost("client closed"));
    if (this._firstReject) this._firstReject(new ConnectionLost("client closed"));
  }

  // ------------------------------------------------------------ requests
  /** Start an agent run; resolves once the server answered `started`. A start whose
   * answer is lost in a drop is sent again with the same request id. */
  async start(agent: string, input: unknown = null, options: { req?: string } = {}): Promise<Stream> {
    this._checkUsable();
    const req = options.req ?? randomId();
    const frame = this._session.start(req, agent, input);
    const st = new Stream(this, req, agent, input);
    this.openStreams.set(req, st);
    this._ensureRunning();
    if (frame !== null) this._sendFrame(frame);
    this.saveCursors();
    await this.answered(st, "start");
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
    if (this._byId.has(c.stream)) {
      throw new ConfigError(`stream ${c.stream} is already open on this client`);
    }
    const req = options.req ?? `resume-${randomId()}`;
    const st = new Stream(this, req, options.agent ?? "");
    st._began(c.stream, c.epoch, c.seq, fromHex(c.digest));
    st.result = new Answer(c.stream, c.seq);
    st.result.validator = this.validator;
    const frame = this._session.adopt(req, c);
    this.openStreams.set(req, st);
    this._byId.set(c.stream, st);
    this._ensureRunning();
    if (frame !== null) this._sendFrame(frame);
    await this.answered(st, "resume");
    return st;
  }

  /** Follow the answer `stream` from its first event: a `Stream` that replays what
   * the log holds and then goes on live while the run goes on (another tab, another
   * device, a page reloaded without its cursor). Every event is verified from the
   * chain's seed, so `answer.complete` can be true. Any number of clients may follow
   * one answer at once. Only the principal that started it may read it (otherwise
   * `StreamGone` `forbidden`, as for an unknown id). `epoch`: the log's generation
   * the stream was started in (default: the server's, from `welcome`). */
  async join(stream: string, options: { epoch?: string } = {}): Promise<Stream> {
    this._checkUsable();
    let epoch = options.epoch;
    if (epoch === undefined) {
      if (this._epoch === null) await this.connect();
      epoch = this._epoch ?? "";
    }
    await digestReady();
    return this.resume(new Cursor(stream, 0, toHex(seed(stream, epoch)), epoch));
  }

  /** The whole answer `stream`, verified end to end: `join` read to its end (waits
   * while the run goes on). Rejects with `StreamFailed` when the run ended `failed`
   * or `cancelled`, `StreamGone` when it cannot be read. */
  async read(stream: string, options: { epoch?: string } = {}): Promise<Answer> {
    const st = await this.join(stream, options);
    for await (const _ of st) {
      /* drain */
    }
    return st.wait();
  }

  /** This principal's live streams: the runs it started that have not ended, oldest
   * first, each with a `cursor` at its `head` (`resume(item.cursor)` follows it from
   * now, `join(item.stream, { epoch: item.epoch })` from its first event). Connects
   * first if needed; a list unanswered when the connection drops is asked again on
   * the next one. Only the node this client is connected to answers (behind a load
   * balancer, that node's runs). A server without the `streams` capability rejects
   * with `ConfigError`; no answer within `requestTimeout`: `RequestTimeout`. */
  async streams(): Promise<LiveStreamInfo[]> {
    this._checkUsable();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new RequestTimeout("list of live streams", this.requestTimeout)), this.requestTimeout * 1000);
    });
    const n = ++this._listN;
    try {
      await Promise.race([this.connect(), timeout]);
      if (this._closed) throw new ConnectionLost("client closed");
      if (this._ready && !this._session.streamsAgreed) throw noStreamsCap();
      const answer = new Promise<LiveStreamInfo[]>((resolve, reject) => this._lists.set(n, { resolve, reject }));
      const frame = this._session.listStreams(n);
      if (frame !== null) this._sendFrame(frame); // else sent after the next welcome
      return await Promise.race([answer, timeout]);
    } finally {
      this._lists.delete(n);
      clearTimeout(timer);
    }
  }

  private _rejectLists(error: unknown): void {
    for (const pending of this._lists.values()) pending.reject(error);
    this._lists.clear();
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
    for (const st of this.openStreams.values()) {
      if (st.done) continue;
      const cursor = st.cursor;
      streams[st.req] = { agent: st.agent, input: cursor ? null : st.input, cursor };
    }
    try {
      if (Object.keys(streams).length === 0 && this._session.anon === null) storage.removeItem(this._storageKey);
      else storage.setItem(this._storageKey, JSON.stringify({ anon: this._session.anon, streams }));
    } catch {
      /* storage full or refused: cursors are then only in memory */
    }
  }

  /** Connection events from now on, as an async iterator. */
  connectionEvents(): AsyncIterableIterator<ConnectionEvent> {
    const queue: ConnectionEvent[] = [];
    let wake: (() => void) | null = null;
    const sub = (e: ConnectionEvent) => {
      queue.push(e);
      wake?.();
    };
    this._subscribers.add(sub);
    const subscribers = this._subscribers;
    const it: AsyncIterableIterator<ConnectionEvent> = {
      async next() {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        wake = null;
        return { value: queue.shift()!, done: false };
      },
      async return() {
        subscribers.delete(sub);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  /** Reconnect now: cuts a backoff wait short (never a server's `retry_after`), or
   * probes a connection believed alive with a ping. */
  wake(): void {
    if (this._closed) return;
    const thaw = this._frozen;
    if (thaw !== null) {
      this._frozen = null;
      this._thawed = null;
      thaw();
    }
    if (this._wakeSleep && !this._sleepFloor) this._wakeSleep();
    else if (thaw === null && this._ready && !this._live.awaitingPong) this._sendFrame(this._live.ping(now()));
  }

  /** Wait for the answer to a start or resume: `requestTimeout` from the request, or
   * from each time an answer has it sent again (`unavailable`, a start refused for
   * load): a server that keeps answering is not stuck; the policy bounds that wait. */
  private async answered(st: Stream, what: string): Promise<void> {
    st._answerBy = now() + this.requestTimeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      const due = (): void => {
        const left = st._answerBy - now();
        if (left > 0) timer = setTimeout(due, left * 1000);
        else rej(new RequestTimeout(`${what} of ${JSON.stringify(st.agent || st.id || st.req)}`, this.requestTimeout));
      };
      due();
    });
    try {
      await Promise.race([st.started, timeout]);
    } catch (e) {
      if (e instanceof RequestTimeout) {
        this._session.forget(st.req);
        st._finish(e);
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private _checkUsable(): void {
    if (this._fatal !== null) throw this._fatal;
    if (this._closed) throw new UnbrokenError("client is closed");
  }

  /** @internal */
  _sendFrame(frame: ClientFrame): void {
    const ws = this._ws;
    if (ws === null || !this._ready || ws.readyState !== 1) return; // re-sent after the next welcome
    ws.send(this._session.wire(frame));
  }

  /** @internal a stream finished: forget it (after this message's acks are sent). */
  _finished(st: Stream): void {
    this.openStreams.delete(st.req);
    if (st.id) this._byId.delete(st.id);
    this._forgetSoon.push(st.req);
    queueMicrotask(() => this._flushForget());
    this.saveCursors();
  }

  private _flushForget(): void {
    for (const req of this._forgetSoon) this._session.forget(req);
    this._forgetSoon = [];
  }

  private _emit(kind: ConnectionEvent["kind"], kw: Partial<ConnectionEvent> = {}): void {
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
    if (this._storage === null) return null;
    try {
      const raw = this._storage.getItem(this._storageKey);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }

  private _listenToLifecycle(): void {
    const g = globalThis as unknown as { document?: EventTarget & { visibilityState?: string }; addEventListener?: unknown };
    const doc = g.document;
    const win = globalThis as unknown as EventTarget;
    const on = (target: EventTarget | undefined, type: string, fn: () => void) => {
      if (!target || typeof target.addEventListener !== "function") return;
      target.addEventListener(type, fn);
      this._listeners.push([target, type, fn]);
    };
    const save = () => this.saveCursors();
    const wake = () => this.wake();
    on(doc, "freeze", () => this.freeze());
    on(win, "pagehide", ((ev: { persisted?: boolean }) => (ev?.persisted ? this.freeze() : save())) as () => void);
    on(doc, "visibilitychange", () => (doc?.visibilityState === "hidden" ? save() : wake()));
    on(doc, "resume", wake);
    on(win, "pageshow", wake);
    on(win, "online", wake);
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
    this._first = new Promise((res, rej) => {
      this._firstResolve = res;
      this._firstReject = rej;
    });
    this._first.catch(() => undefined);
    void this.supervise();
  }

  private async supervise(): Promise<void> {
    const reconnects = this._reconnects;
    while (!this._closed) {
      if (this._thawed !== null) {
        await this._thawed;
        if (this._closed) return;
      }
      const url = this.urls[this._urlIndex % this.urls.length];
      this._progressed = false;
      const budget = reconnects.budget(now());
      let error: unknown;
      try {
        await this.connection(url, budget);
        error = new ConnectionLost("server closed the connection");
      } catch (e) {
        error = e;
      }
      this._ready = false;
      this._ws = null;
      this._session.connectionLost();
      if (this._closed) return;
      const shed = (error as { retryAfter?: number | null }).retryAfter;
      this._emit("disconnected", { url, cause: causeOf(error), code: (error as { code?: number | null }).code ?? null, retryAfter: typeof shed === "number" ? shed : null });
      // closed by freeze(): no backoff, no attempt counted; reconnect on wake()
      if (this._thawed !== null || error === this._frozenError) continue;
      let retry = defaultRetryTable(error);
      const decided = this.shouldRetry?.(error);
      if (decided !== null && decided !== undefined) retry = decided;
      if (!retry) {
        this._failAll(fatalError(error, null, this.protocols));
        return;
      }
      const next = reconnects.lost(now(), error, this._progressed);
      if (next.kind === "give_up") {
        this._emit("exhausted", { attempt: next.error.attempts, cause: causeOf(error) });
        this._failAll(next.error);
        return;
      }
      this._urlIndex += 1;
      this._emit("reconnecting", { attempt: next.attempt, delay: next.delay, url: this.urls[this._urlIndex % this.urls.length] });
      if (next.delay > 0) {
        const ra = (error as { retryAfter?: number | null }).retryAfter;
        await this._sleep(next.delay, typeof ra === "number" && ra > 0);
      }
    }
  }

  private _sleep(seconds: number, floor: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this._wakeSleep = null;
        resolve();
      };
      const timer = setTimeout(done, seconds * 1000);
      this._sleepFloor = floor;
      this._wakeSleep = done;
    });
  }

  private _failAll(error: unknown): void {
    this._fatal = error;
    this._firstReject?.(error);
    for (const st of [...this.openStreams.values()]) st._finish(error);
    this._rejectLists(error);
  }

  /** The token for a `hello`: the fixed one, or the provider's (nothing: a hello
   * without one); a provider that throws is asked again after 0.1, 0.2 s, and the
   * third failure in a row is an `AuthError` (fatal: no retry storm). */
  private async tokenValue(): Promise<string | null> {
    const t = this.token;
    if (t === null || t === undefined || typeof t === "string") return t ?? null;
    for (let failures = 1; ; failures++) {
      let error: unknown;
      try {
        return (await t()) || null; // no token: the hello goes without one
      } catch (e) {
        error = e;
      }
      if (failures >= TOKEN_ATTEMPTS || this._closed) {
        const what = `${(error as Error)?.name ?? "Error"}: ${(error as Error)?.message ?? String(error)}`;
        throw new AuthError(`the token provider failed: ${what} (${failures} attempts)`);
      }
      await new Promise((r) => setTimeout(r, refreshDelay(failures) * 1000));
    }
  }

  /** Ask the provider for a token at `ask.at` and send it as `refresh` (in-band, the
   * streams flowing meanwhile); a provider failure is retried with backoff, a few
   * times, then left to the server's close 4010 (a reconnect with a fresh token). */
  private _askToken(ask: AskToken): void {
    const run = async () => {
      this._refreshTimer = null;
      const provider = this.token;
      if (typeof provider !== "function" || this._closed) return;
      let token: string | null | undefined = null;
      let cause = "the token provider gave no token";
      try {
        token = await provider();
      } catch (e) {
        cause = `the token provider failed: ${(e as Error)?.message ?? String(e)}`;
      }
      const frame = this._session.refresh(token, ask.connection);
      if (frame !== null) this._sendFrame(frame);
      else if (!token && ask.connection === this._session.connection) this._refreshFailed(cause);
    };
    if (this._refreshTimer !== null) clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const delay = ask.at - now();
    if (delay <= 0) void run();
    else this._refreshTimer = setTimeout(() => void run(), delay * 1000);
  }

  private _refreshFailed(cause: string): void {
    console.warn(`unbroken: refresh failed: ${cause}`);
    const next = this._session.refreshFailed(now());
    this._emit("refresh_failed", { cause, attempt: this._session.refreshFailures });
    if (next !== null) this._askToken(next);
  }

  /** Run one connection until it drops; always rejects with why it ended. */
  private async connection(url: string, budget: number | null): Promise<void> {
    const t0 = now();
    const timeout = budget === null ? this.openTimeout : Math.min(this.openTimeout, budget);
    const token = await this.tokenValue();
    await digestReady(); // (WebAssembly refused: BLAKE2b's JavaScript chunk, before any digest)
    if (this._thawed !== null) throw (this._frozenError = new ConnectionLost("page frozen"));
    const session = this._session;
    const live = this._live;
    let ws: WebSocketLike;
    try {
      ws = new this._WS(url, this.protocols.map((v) => `unbroken.${v}`));
      ws.binaryType = "arraybuffer";
    } catch (e) {
      throw new ConnectionLost(`cannot open ${url}: ${(e as Error).message}`);
    }
    // the server accepted without a version this client speaks: it closes 4005 (the
    // versions it speaks in the reason); wait for that close
    let noVersion: string | null = null;
    this._ws = ws;
    let over = false;
    let watchdog: ReturnType<typeof setTimeout> | null = null;
    let due = 0;
    let retryAfter: number | null = null; // from an `overloaded` error before the close
    let settle!: (err: unknown) => void;
    const finished = new Promise<void>((_, rej) => (settle = rej));

    const end = (err: unknown, close: [number, string] = [1000, ""]) => {
      if (over) return;
      over = true;
      clearTimeout(openTimer);
      if (watchdog !== null) clearTimeout(watchdog);
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
    const openTimer = setTimeout(() => end(new ConnectionLost("no welcome in time")), timeout * 1000);

    const watch = (at: number) => {
      const delay = Math.max(0, at - now());
      due = now() + delay;
      watchdog = setTimeout(checkSilence, delay * 1000);
    };
    const checkSilence = () => {
      watchdog = null;
      if (over) return;
      const check = session.check(now(), due);
      if (check.dead !== null) {
        end(new ConnectionLost(check.dead, CloseCode.HEARTBEAT_TIMEOUT), [CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"]);
        return;
      }
      if (check.ping !== null) this._sendFrame(check.ping);
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
        session.connected();
        ws.send(session.wire(session.connect(token, chosen)));
        for (const frame of session.resumes()) ws.send(session.wire(frame));
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
      const received: [number, string] | null = ev.code === 1006 ? null : [ev.code, ev.reason];
      let err = closeError(received, null);
      if (noVersion !== null) err = new ConnectionLost(ev.code === CloseCode.UNSUPPORTED_VERSION ? ev.reason : noVersion, CloseCode.UNSUPPORTED_VERSION);
      if (err instanceof ConnectionLost && retryAfter !== null) err = new ConnectionLost(err.message, err.code, retryAfter);
      end(err);
    };
    ws.onmessage = (ev) => {
      if (over) return;
      const data = ev.data;
      const v2 = session.version === "v2";
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
        if (!session.zlib && isZlib(bytes)) {
          fail(new ProtocolError("compressed frame without the zlib cap"));
          return;
        }
        const job: Promise<void> = (inflating ?? Promise.resolve())
          .then(async () => {
            const m = isZlib(bytes) ? await inflate(bytes, session.maxFrame) : bytes;
            if (!over) take(framesOfV2(m, session.maxFrame), now());
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
        if (session.state === "await_welcome") {
          let one: string | FrameV2 = data as string;
          if (bytes !== null) {
            const frames = framesOfV2(bytes, session.maxFrame);
            if (frames.length !== 1) throw new ProtocolError("expected welcome, got a batch");
            one = frames[0];
          }
          const out = session.receive(one);
          if (out.kind === "error") {
            if (RETRYABLE_START.has(out.error.code)) retryAfter = (out.error.retry_after_ms ?? 0) / 1000 || null;
            else end(new RequestRefused(out.error.code, out.error.message));
            return;
          }
          if (out.kind !== "welcomed") return;
          clearTimeout(openTimer);
          live.welcomed(t, out.welcome.heartbeat_ms, t - t0);
          this._epoch = out.welcome.epoch;
          this._ready = true;
          this._emit("connected", { url, version: session.version });
          this._firstResolve?.();
          for (const frame of session.afterWelcome()) ws.send(session.wire(frame));
          if (!session.streamsAgreed) this._rejectLists(noStreamsCap());
          for (const n of this._lists.keys()) {
            // lists asked while no connection was up, or unanswered when the last one died
            const again = session.listStreams(n);
            if (again !== null) ws.send(session.wire(again));
          }
          watch(live.firstCheck(now()));
          return;
        }
        take(bytes !== null ? framesOfV2(bytes, session.maxFrame) : session.framesOf(data as string), t);
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
          const one = backlog[head++];
          const out = this._receiveOne(one);
          if (out === "integrity") {
            // the stream failed; its further frames are moot: resume the others afresh
            end(new ConnectionLost("integrity error"));
            return;
          }
          if (out === "progress") this._progressed = true;
          else if (out === "events") {
            this._progressed = true;
            const pause = !closing && (firstEvents || now() - t0 > SLICE);
            firstEvents = false;
            if (pause && head < backlog.length) {
              deferred = true;
              later(() => {
                if (!over) drain(now());
              });
              break;
            }
          } else if (out !== "none" && out.kind === "error") {
            const e = out.error;
            if (e.req === null && e.stream === null && e.retry_after_ms !== null) retryAfter = e.retry_after_ms / 1000;
            this.serverError(out.error);
          }
        }
        if (head >= backlog.length) {
          backlog = [];
          head = 0;
        }
        let acked = closing;
        if (!closing) for (const frame of session.afterMessage(t)) {
          ws.send(session.wire(frame));
          if (frame.t === "ack") acked = true;
        }
        this._flushForget();
        if (acked) this.saveCursors();
      } catch (e) {
        fail(e);
      }
    };
    return finished;
  }

  /** Apply one frame: "events" when it delivered events, "progress" when it moved a stream, "integrity" when a stream
   * failed its digest, an error output to act on, else "none". */
  private _receiveOne(message: string | FrameV2): "events" | "progress" | "integrity" | "none" | ClientOutput {
    let out: ClientOutput;
    try {
      out = this._session.receive(message);
    } catch (e) {
      if (e instanceof IntegrityError) {
        const st = this._byId.get(e.stream);
        if (st === undefined) throw e;
        console.error(`unbroken: integrity error stream=${e.stream} seq=${e.seq}`);
        this._session.forget(st.req);
        st._finish(e);
        return "integrity";
      }
      throw e;
    }
    switch (out.kind) {
      case "events": {
        const st = this._byId.get(out.stream);
        if (st === undefined) return "progress";
        const digest = toHex(out.digest);
        const result = st.result;
        for (const ev of out.events) st._push(result.apply(ev, digest), ev);
        st._mark(out.events[out.events.length - 1].seq, out.digest);
        return "events";
      }
      case "started": {
        const st = this.openStreams.get(out.req);
        if (st !== undefined) {
          st._began(out.stream, out.epoch);
          st.result.stream = out.stream;
          this._byId.set(out.stream, st);
          st._answered();
          this.saveCursors();
        }
        return "progress";
      }
      case "resumed": {
        this._emit("resumed", { stream: out.stream, fromSeq: out.fromSeq, head: out.head });
        this._byId.get(out.stream)?._answered();
        return "progress";
      }
      case "gone": {
        this._emit("gone", { stream: out.stream, reason: out.reason });
        this._byId.get(out.stream)?._finish(new StreamGone(out.stream, out.reason as GoneReason, out.message));
        return "progress";
      }
      case "pong":
        this._live.pong(now(), out.n);
        return "none";
      case "auth_expiring":
        this._emit("auth_expiring", { delay: out.inMs / 1000 });
        if (out.ask !== null) this._askToken(out.ask);
        return "none";
      case "refreshed":
        if (this._refreshTimer !== null) clearTimeout(this._refreshTimer);
        this._refreshTimer = null;
        this._emit("refreshed");
        return "none";
      case "streams":
        this._lists.get(out.n)?.resolve(out.items.map((i) => ({ stream: i.stream, agent: i.agent, epoch: i.epoch, head: i.head, status: i.status, cursor: new Cursor(i.stream, i.head, i.h, i.epoch) })));
        return "none";
      case "error":
        return out;
      default:
        return "none";
    }
  }

  private serverError(err: { code: string; message: string; req: string | null; stream: string | null; retry_after_ms: number | null; t: "error" }): void {
    console.warn(`unbroken: server error code=${err.code} message=${err.message}`);
    if (err.code === "auth_failed" && err.req === null && err.stream === null) {
      this._refreshFailed(`new token refused: ${err.message}`);
      return;
    }
    const t = now();
    const action = this._session.serverError(err, t);
    if (action === null || action.kind === "ask_token") return;
    const st = this.openStreams.get(action.req);
    if (action.kind === "fail_stream") return st?._finish(action.error);
    // sent again at `at`: its answer is due `requestTimeout` after that
    if (st) st._answerBy = Math.max(st._answerBy, action.at + this.requestTimeout);
    if (action.kind === "retry_resume") {
      this._emit("unavailable", { stream: err.stream ?? "", delay: Math.max(0, action.at - t), cause: err.message });
      setTimeout(() => {
        const frame = this._session.resendResume(action.req);
        if (frame !== null) this._sendFrame(frame);
      }, Math.max(0, action.at - t) * 1000);
    } else if (action.kind === "retry_start") {
      setTimeout(() => {
        const frame = this._session.resendStart(action.req);
        if (frame !== null) this._sendFrame(frame);
      }, Math.max(0, action.at - now()) * 1000);
    }
  }
}

function noStreamsCap(): ConfigError {
  return new ConfigError("this server predates the 'streams' capability");
}

/** One-shot helper: start `agent` and return its verified `Answer`. */
export async function streamAnswer(
  urls: string | string[],
  agent: string,
  input: unknown = null,
  options: ClientOptions = {},
): Promise<Answer> {
  const client = new Client(urls, options);
  try {
    const st = await client.start(agent, input);
    for await (const _ of st) {
      /* drain */
    }
    return await st.wait();
  } finally {
    await client.close();
  }
}

export { defaultRetryTable as defaultShouldRetry };
