/**
 * unbroken-client/ai-sdk: a Vercel AI SDK `ChatTransport` over unbroken, for
 * `useChat` (React, Vue, Svelte) or any `AbstractChat`. A separate entry point
 * (dist/ai-sdk.js), so the core bundle does not grow. It imports nothing of the core
 * at run time: it works with the classes of the `client` it is given (a page that
 * loads the core under another URL, `unbroken.js?v=<hash>`, gets no second copy).
 *
 * ```ts
 * import { Client } from "unbroken-client";
 * import { UnbrokenChatTransport } from "unbroken-client/ai-sdk";
 * const client = new Client("wss://example.com/ws", { token: getToken });
 * const { messages, sendMessage } = useChat({
 *   transport: new UnbrokenChatTransport({ client, agent: "chat" }),
 *   resume: true, // after a reload: the answer in flight, replayed and verified
 * });
 * ```
 *
 * The agent's parts become UI message chunks: a text part → `text-start`,
 * `text-delta`…, `text-end`; a JSON part → `data-<part>` chunks carrying the
 * partial value as it grows (at most every `partialEvery` ms) and the final value;
 * a data part → one `data-<part>` chunk with its value at its end. The stream ends
 * with `finish` (completed), `abort` (cancelled) or `error` (failed, or a typed
 * error of the client: `StreamGone`, `IntegrityError`, `AuthError`…). Drops are
 * the client's business: the stream never breaks on one, it pauses and goes on
 * exactly where it was.
 */
import type { ChatTransport, UIMessage, UIMessageChunk } from "ai";
import { CORE, type CoreHelpers } from "./core-key.js";
import type { Client, PartStarted, Stream, StreamEnded, StreamEvent } from "./core.js";
import { partInfo } from "./roles.js";

/** What `sendMessages` hands the agent as its input (the default `input`). */
export interface ChatInput<M extends UIMessage = UIMessage> {
  chatId: string;
  trigger: "submit-message" | "regenerate-message";
  messageId: string | undefined;
  messages: M[];
  body?: object;
  metadata?: unknown;
}

export interface UnbrokenChatTransportOptions<M extends UIMessage = UIMessage> {
  /** the unbroken client (one per page; it keeps the connection and the cursors) */
  client: Client;
  /** the agent to start for each message */
  agent: string;
  /** the agent's input from the chat request (default: the `ChatInput` itself) */
  input?: (request: ChatInput<M>) => unknown;
  /** milliseconds between partial values of a growing JSON part (default 50) */
  partialEvery?: number;
}

const REQ_PREFIX = "chat:";

/** The request id of a chat's answer: the chat id is found in it after a reload. */
function reqFor(chatId: string): string {
  const rand = Math.random().toString(36).slice(2, 10);
  return `${REQ_PREFIX}${chatId.slice(0, 100)}:${rand}`;
}

function chatOf(req: string): string | null {
  if (!req.startsWith(REQ_PREFIX)) return null;
  const rest = req.slice(REQ_PREFIX.length);
  return rest.slice(0, rest.lastIndexOf(":"));
}

/** A `ChatTransport` whose answers survive the network (see the module's text). */
export class UnbrokenChatTransport<M extends UIMessage = UIMessage> implements ChatTransport<M> {
  /** `reconnectToStream` replays the answer from its first event (verified). */
  readonly resumeStreamIsReplay = true;
  private readonly client: Client;
  private readonly agent: string;
  private readonly input: (request: ChatInput<M>) => unknown;
  private readonly partialEvery: number;

  constructor(options: UnbrokenChatTransportOptions<M>) {
    this.client = options.client;
    this.agent = options.agent;
    this.input = options.input ?? ((r) => r);
    this.partialEvery = options.partialEvery ?? 50;
  }

  async sendMessages(options: Parameters<ChatTransport<M>["sendMessages"]>[0]): Promise<ReadableStream<UIMessageChunk>> {
    const { chatId, trigger, messageId, messages, abortSignal, body, metadata } = options;
    const request: ChatInput<M> = { chatId, trigger, messageId, messages };
    if (body !== undefined) request.body = body;
    if (metadata !== undefined) request.metadata = metadata;
    const st = await this.client.start(this.agent, this.input(request), { req: reqFor(chatId) });
    return this.chunks(st, abortSignal);
  }

  /** The answer of `chatId` still in flight (saved by this or an earlier page),
   * replayed from its start; `null` when there is none (it ended, or never began). */
  async reconnectToStream(
    options: Parameters<ChatTransport<M>["reconnectToStream"]>[0],
  ): Promise<ReadableStream<UIMessageChunk> | null> {
    const saved = this.client.savedStreams().find((s) => chatOf(s.req) === options.chatId);
    if (saved === undefined) return null;
    let st: Stream;
    if (saved.cursor === null) {
      // started, its answer not heard yet: the same request id, so no second run
      st = await this.client.start(saved.agent, saved.input, { req: saved.req });
    } else {
      const { stream, epoch } = saved.cursor;
      const { seed, toHex, ready } = (this.client.constructor as unknown as { [CORE]: CoreHelpers })[CORE];
      await ready();
      st = await this.client.resume({ stream, epoch, seq: 0, digest: toHex(seed(stream, epoch)) }, { req: saved.req, agent: saved.agent });
    }
    return this.chunks(st, options.abortSignal);
  }

  /** The UI message chunks of one answer. */
  private chunks(st: Stream, abortSignal: AbortSignal | undefined): ReadableStream<UIMessageChunk> {
    const events = st[Symbol.asyncIterator]();
    const every = this.partialEvery;
    const lastPartial = new Map<string, number>();
    const roles = new Map<string, PartStarted>(); // the parts' starts: their roles
    let begun = false;
    let over = false;
    const onAbort = () => void st.cancel().catch(() => undefined);
    abortSignal?.addEventListener("abort", onAbort, { once: true });
    const finish = (controller: ReadableStreamDefaultController<UIMessageChunk>, chunk: UIMessageChunk | null) => {
      if (over) return;
      over = true;
      abortSignal?.removeEventListener("abort", onAbort);
      if (chunk !== null) controller.enqueue(chunk);
      controller.close();
    };
    return new ReadableStream<UIMessageChunk>({
      pull: async (controller) => {
        if (!begun) {
          begun = true;
          controller.enqueue({ type: "start", messageId: st.id || undefined });
        }
        for (;;) {
          let next: IteratorResult<StreamEvent>;
          try {
            next = await events.next();
          } catch (e) {
            const err = e as Error;
            finish(controller, { type: "error", errorText: `${err?.name ?? "Error"}: ${err?.message ?? String(e)}` });
            return;
          }
          if (next.done) {
            finish(controller, { type: "finish" });
            return;
          }
          const out = this.map(next.value, lastPartial, every, roles);
          if (out === "end") {
            const end = next.value as StreamEnded;
            if (end.status === "completed") {
              const reason = end.finishReason ? (FINISH[end.finishReason] ?? "other") : undefined;
              finish(controller, (reason ? { type: "finish", finishReason: reason } : { type: "finish" }) as UIMessageChunk);
            }
            else if (end.status === "cancelled") finish(controller, { type: "abort", reason: end.error || "cancelled" });
            else finish(controller, { type: "error", errorText: end.error || `the answer ${end.status}` });
            return;
          }
          if (out !== null) {
            controller.enqueue(out);
            return;
          }
        }
      },
      cancel: async () => {
        over = true;
        abortSignal?.removeEventListener("abort", onAbort);
        await st.cancel().catch(() => undefined);
      },
    });
  }

  private map(
    ev: StreamEvent,
    lastPartial: Map<string, number>,
    every: number,
    roles: Map<string, PartStarted>,
  ): UIMessageChunk | "end" | null {
    if (ev.type === "text_delta") {
      const reasoning = roles.get(ev.part)?.role === "reasoning";
      return { type: reasoning ? "reasoning-delta" : "text-delta", id: ev.part, delta: ev.text };
    }
    if (ev.type === "part_started") {
      roles.set(ev.part, ev);
      if (ev.kind === "text") return { type: ev.role === "reasoning" ? "reasoning-start" : "text-start", id: ev.part };
      if (ev.role === "tool-call" && ev.kind === "json") {
        return { type: "tool-input-start", toolCallId: ev.call, toolName: ev.tool || "tool" };
      }
      return null;
    }
    const started = roles.get((ev as { part?: string }).part ?? "");
    if (ev.type === "json_fragment") {
      if (started?.role === "tool-call") {
        return ev.fragment ? { type: "tool-input-delta", toolCallId: started.call, inputTextDelta: ev.fragment } : null;
      }
      if (started?.role === "tool-result" || started?.role === "metadata") return null; // whole at the end
      const t = performance.now();
      if (t - (lastPartial.get(ev.part) ?? -Infinity) < every) return null;
      lastPartial.set(ev.part, t);
      return dataChunk(dataName(ev.part, started), ev.part, ev.partial());
    }
    if (ev.type === "part_ended") {
      const r = ev.result;
      if (r.kind === "text") return { type: r.role === "reasoning" ? "reasoning-end" : "text-end", id: ev.part };
      let value: unknown;
      try {
        value = r.value;
      } catch {
        value = r.text; // (a JSON part that did not parse: its text)
      }
      if (started?.role === "tool-call" && r.kind === "json") {
        const id = started.call;
        const toolName = started.tool || "tool";
        return ev.error
          ? { type: "tool-input-error", toolCallId: id, toolName, input: r.text, errorText: ev.error }
          : { type: "tool-input-available", toolCallId: id, toolName, input: value };
      }
      const call = started?.call ?? "";
      if (started?.role === "tool-result" && [...roles.values()].some((s) => s.role === "tool-call" && s.call === call)) {
        return ev.error
          ? { type: "tool-output-error", toolCallId: call, errorText: ev.error }
          : { type: "tool-output-available", toolCallId: call, output: value };
      }
      if (started?.role === "metadata" && !ev.error && value !== null && typeof value === "object") {
        return { type: "message-metadata", messageMetadata: value };
      }
      if (ev.error) return dataChunk(dataName(ev.part, started), ev.part, { error: ev.error, partial: r.text });
      return dataChunk(dataName(ev.part, started), ev.part, value instanceof Uint8Array ? r.text : value);
    }
    if (ev.type === "stream_ended") return "end";
    // (a data_chunk: its part's value comes whole at its end)
    return null;
  }
}

/** A provider's finish reason as the AI SDK names it. */
const FINISH: Record<string, string> = {
  stop: "stop", end_turn: "stop", completed: "stop", stop_sequence: "stop",
  length: "length", max_tokens: "length", max_output_tokens: "length",
  tool_calls: "tool-calls", tool_use: "tool-calls", function_call: "tool-calls",
  content_filter: "content-filter", refusal: "content-filter",
};

const dataName = (part: string, started: PartStarted | undefined): string =>
  (started && partInfo(part, started.kind, started.mime).name) || part;

function dataChunk(name: string, part: string, data: unknown): UIMessageChunk {
  return { type: `data-${name}`, id: part, data } as UIMessageChunk;
}
