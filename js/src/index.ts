/**
 * unbroken-client: the browser (and Node) client of the unbroken protocol (v2, v1).
 * Streamed agent answers that survive the network, verified by a BLAKE2b chain.
 * Everything of `unbroken-client/core` (core.ts), with a `Client` that has every
 * feature: in-band token refresh, `zlib`, `client.streams()`, `join`, `read`,
 * `connectionEvents()`. This is the page bundle (dist/unbroken.js). The public API
 * only: the internals are exported by `testing.ts` (dist/testing.js).
 */
export * from "./core.js";
import { Client as CoreClient, type ClientOptions, type ConnectionEvent, type LiveStreamInfo, type Stream } from "./client.js";
import { TokenRefresh, StreamListing, Zlib, connectionEvents, join, read, streams } from "./plugins.js";
import type { Answer } from "./response.js";

/** A resilient unbroken client with every feature (`unbroken-client/core`'s `Client`
 * with the `TokenRefresh`, `StreamListing` and `Zlib` plugins, and `streams`, `join`, `read`,
 * `connectionEvents` as methods). `await client.connect()` (optional: `start`
 * connects), `await client.start(agent, input)`, `await client.close()`. */
export class Client extends CoreClient {
  constructor(urls: string | string[], options: ClientOptions = {}) {
    // (its own plugins, and any other given: the core installs each once)
    super(urls, { ...options, plugins: [TokenRefresh, StreamListing, Zlib, ...(options.plugins ?? [])] });
  }

  /** This principal's live streams (`streams` of `unbroken-client/core`). */
  streams(): Promise<LiveStreamInfo[]> {
    return streams(this);
  }

  /** Follow the answer `stream` from its first event (`join` of `unbroken-client/core`). */
  join(stream: string, options: { epoch?: string } = {}): Promise<Stream> {
    return join(this, stream, options);
  }

  /** The whole answer `stream`, verified end to end (`read` of `unbroken-client/core`). */
  read(stream: string, options: { epoch?: string } = {}): Promise<Answer> {
    return read(this, stream, options);
  }

  /** Connection events from now on, as an async iterator. */
  connectionEvents(): AsyncIterableIterator<ConnectionEvent> {
    return connectionEvents(this);
  }
}

/** One-shot helper: start `agent` and return its verified `Answer`. */
export async function streamAnswer(urls: string | string[], agent: string, input: unknown = null, options: ClientOptions = {}): Promise<Answer> {
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
