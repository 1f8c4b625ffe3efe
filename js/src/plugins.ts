/**
 * The client's opt-in features (`unbroken-client/core`): each is imported only by
 * the apps that use it, so an app's bundler leaves the others out. The `Client` of
 * `unbroken-client` has them all (index.ts).
 *
 * - `TokenRefresh`: in-band token refresh (protocol §18): with a token provider, the
 *   `refresh` cap; on `auth_expiring` the provider is asked and its token sent as
 *   `refresh`, the connection and its streams going on. Without it, the server
 *   closes 4010 at the expiry and the client reconnects with a fresh token from the
 *   provider and resumes exactly: the same guarantees, one reconnect per expiry.
 * - `StreamListing`: `streams(client)`, this principal's live streams (the `streams` cap).
 * - `Zlib`: the `zlib` cap (v2: a large message may come deflated; the `compression`
 *   option turns it off).
 * - `join(client, id)`, `read(client, id)`, `connectionEvents(client)`: functions,
 *   no plugin needed.
 */
import { Client, Hook, inSeconds, type ConnectionEvent, type LiveStreamInfo, type Plugin } from "./client.js";
import { ready as digestReady } from "./blake2b.js";
import { seed, toHex } from "./digest.js";
import { ConfigError, ConnectionLost, ProtocolError, RequestTimeout, errorMessage } from "./errors.js";
import { CAP_REFRESH, CAP_STREAMS, type ErrorFrame } from "./frames.js";
import { CAP_ZLIB, inflate } from "./frames2.js";
import type { Answer } from "./response.js";
import { REFRESH_ATTEMPTS, refreshDelay } from "./retry.js";
import { Cursor } from "./session.js";
import type { Stream } from "./client.js";

const bad = (what: string): ProtocolError => new ProtocolError(`unexpected ${what}`);

/** In-band token refresh (protocol §18), offered when `token` is a function: on
 * `auth_expiring` the provider is asked and its token sent as `refresh`; `refreshed`
 * keeps the connection; `auth_failed` (or a provider that throws or gives nothing)
 * is asked again at 0.1 s, 0.2 s, three times in a row at most, then the server's
 * close 4010 at the expiry means a new token, a reconnect and an exact resume. */
export const TokenRefresh: Plugin = {
  name: "refresh",
  _install(c) {
    if (typeof c.token !== "function") return; // (a fixed token cannot be refreshed)
    c._caps.push(CAP_REFRESH);
    /** refreshes failed in a row on this connection */
    let failures = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const on = () => c._has(CAP_REFRESH) && c._ready;
    // Ask the provider for a token `delay` s from now and send it as `refresh`.
    const ask = (delay: number): void => {
      const conn = c._conn;
      const run = async () => {
        const provider = c.token;
        if (typeof provider !== "function" || c._closed) return;
        let token: string | null | undefined = null;
        let cause = "the token provider gave no token";
        try {
          token = await provider();
        } catch (e) {
          cause = `the token provider failed: ${errorMessage(e)}`;
        }
        // (a connection gone meanwhile: the next hello carries a fresh token anyway)
        if (conn !== c._conn || !c._ready) return;
        if (token) c._send({ t: "refresh", token });
        else failed(cause);
      };
      clearTimeout(timer);
      if (delay > 0) timer = setTimeout(() => void run(), delay * 1000);
      else void run();
    };
    // A refresh failed: asked again after a backoff, at most REFRESH_ATTEMPTS times in a row.
    const failed = (cause: string): void => {
      console.warn(`unbroken: refresh failed: ${cause}`);
      const live = on();
      if (live) failures++;
      c._emit("refresh_failed", { cause, attempt: failures });
      if (live && failures < REFRESH_ATTEMPTS) ask(refreshDelay(failures));
    };
    c._on.auth_expiring = () => {
      if (!on()) return;
      failures = 0; // a new expiry: a fresh budget of attempts
      ask(0);
    };
    c._on.refreshed = () => {
      if (!c._has(CAP_REFRESH)) throw bad("refreshed without the refresh cap");
      failures = 0;
      clearTimeout(timer);
      c._emit("refreshed");
    };
    c._on.auth_failed = (e: ErrorFrame) => failed(`new token refused: ${e.message}`);
    c._hooks.push((what) => {
      if (what === Hook.ENDED) clearTimeout(timer);
      else failures = 0;
    });
  },
};

const noStreamsCap = (): ConfigError => new ConfigError("this server predates the 'streams' capability");

/** The `streams` cap: `streams(client)` lists this principal's live streams. */
export const StreamListing: Plugin = {
  name: "streams",
  _install(c) {
    c._caps.push(CAP_STREAMS);
    // (`list` requests awaiting their answer, by number: on the client, so the
    // `streams()` of either entry finds them; sent again after a reconnect)
    const lists: NonNullable<Client["_lists"]>["lists"] = new Map();
    c._lists = { lists, n: 0 };
    const reject = (error: unknown) => {
      for (const pending of lists.values()) pending[1](error);
      lists.clear();
    };
    c._on.streams = (f: { n: number; items: { stream: string; agent: string; epoch: string; head: number; status: string; h: string }[] }) => {
      if (!c._has(CAP_STREAMS)) throw bad("streams without the streams cap");
      lists.get(f.n)?.[0](f.items.map((i) => ({ stream: i.stream, agent: i.agent, epoch: i.epoch, head: i.head, status: i.status, cursor: new Cursor(i.stream, i.head, i.h, i.epoch) })));
    };
    c._hooks.push((what, error) => {
      if (what === Hook.ENDED) reject(error);
      else if (what === Hook.WELCOMED) {
        if (!c._has(CAP_STREAMS)) reject(noStreamsCap());
        // lists asked while no connection was up, or unanswered when the last one died
        for (const n of lists.keys()) c._send({ t: "list", n });
      }
    });
  },
};

/** This principal's live streams: the runs it started that have not ended, oldest
 * first, each with a `cursor` at its `head` (`client.resume(item.cursor)` follows it
 * from now, `join(client, item.stream, { epoch: item.epoch })` from its first event).
 * Connects first if needed; a list unanswered when the connection drops is asked
 * again on the next one. Only the node this client is connected to answers (behind a
 * load balancer, that node's runs). Needs the `StreamListing` plugin. A server without the
 * `streams` capability rejects with `ConfigError`; no answer within `requestTimeout`:
 * `RequestTimeout`. */
export async function streams(client: Client): Promise<LiveStreamInfo[]> {
  const listing = client._lists;
  if (listing === undefined) throw new ConfigError("streams() needs the StreamListing plugin (plugins: [StreamListing])");
  client._checkUsable();
  let cancel: (() => void) | undefined;
  const timeout = new Promise<never>((_, rej) => {
    if (client.requestTimeout < Infinity) cancel = inSeconds(() => rej(new RequestTimeout("list of live streams", client.requestTimeout)), client.requestTimeout);
  });
  const n = ++listing.n;
  const lists = listing.lists;
  try {
    await Promise.race([client.connect(), timeout]);
    if (client._closed) throw new ConnectionLost("client closed");
    if (client._ready && !client._has(CAP_STREAMS)) throw noStreamsCap();
    const answer = new Promise<LiveStreamInfo[]>((resolve, reject) => lists.set(n, [resolve, reject]));
    client._send({ t: "list", n }); // (else sent after the next welcome)
    return await Promise.race([answer, timeout]);
  } finally {
    lists.delete(n);
    cancel?.();
  }
}

/** Follow the answer `stream` from its first event: a `Stream` that replays what the
 * log holds and then goes on live while the run goes on (another tab, another
 * device, a page reloaded without its cursor). Every event is verified from the
 * chain's seed, so `answer.complete` can be true. Only the principal that started it
 * may read it (otherwise `StreamGone` `forbidden`). `epoch`: the log's generation
 * the stream was started in (default: the server's, from `welcome`). */
export async function join(client: Client, stream: string, options: { epoch?: string } = {}): Promise<Stream> {
  client._checkUsable();
  let epoch = options.epoch;
  if (epoch === undefined) {
    if (client._epoch === null) await client.connect();
    epoch = client._epoch ?? "";
  }
  await digestReady();
  return client.resume(new Cursor(stream, 0, toHex(seed(stream, epoch)), epoch));
}

/** The whole answer `stream`, verified end to end: `join` read to its end (waits
 * while the run goes on). Rejects with `StreamFailed` when the run ended `failed` or
 * `cancelled`, `StreamGone` when it cannot be read. */
export async function read(client: Client, stream: string, options: { epoch?: string } = {}): Promise<Answer> {
  const st = await join(client, stream, options);
  for await (const _ of st) {
    /* drain */
  }
  return st.wait();
}

/** The client's connection events from now on, as an async iterator (`onEvent` and
 * `client.history` have them too). */
export function connectionEvents(client: Client): AsyncIterableIterator<ConnectionEvent> {
  const queue: ConnectionEvent[] = [];
  let wake: (() => void) | null = null;
  const sub = (e: ConnectionEvent) => {
    queue.push(e);
    wake?.();
  };
  const subscribers = client._subscribers;
  subscribers.add(sub);
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

/** The `zlib` cap (v2: a large message may come deflated, inflated by the platform's
 * `DecompressionStream`), offered when the platform has one and the `compression`
 * option is not false. */
export const Zlib: Plugin = {
  name: "zlib",
  _install(c, options) {
    if (options.compression === false || typeof (globalThis as { DecompressionStream?: unknown }).DecompressionStream !== "function") return;
    c._caps.push(CAP_ZLIB);
    c._inflate = inflate;
  },
};
