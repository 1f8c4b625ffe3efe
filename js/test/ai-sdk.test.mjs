// The AI SDK ChatTransport (dist/ai-sdk.js) against the real `ai` package: its
// chunks, assembled by ai's own readUIMessageStream, give the agent's answer as a
// UI message, exactly, across a dropped connection and after a page reload.
import assert from "node:assert/strict";
import { test } from "node:test";
import { readUIMessageStream } from "ai";
// (the transport is built over dist/unbroken.js: its Client, with the test tools of dist/testing.js)
import { Client } from "../dist/unbroken.js";
import { ChainVerifier, Kind, encode, encodeItems, makeEvent, toHex } from "../dist/testing.js";
import { UnbrokenChatTransport } from "../dist/ai-sdk.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const EPOCH = "ep0ch";
const STREAM = "S1streamXYZ";
const ROWS = Array.from({ length: 40 }, (_, i) => ({ n: i, s: `row ${i}` }));

/** text "answer", a JSON part "summary" in fragments, a data part "chart" (JSON). */
function answer({ status = "completed" } = {}) {
  const evs = [];
  const add = (kind, fields) => evs.push(makeEvent(evs.length + 1, kind, fields));
  add(Kind.PART_START, { part: "answer", partKind: "text" });
  for (let i = 0; i < 30; i++) add(Kind.TEXT, { part: "answer", body: `word${i} ` });
  add(Kind.PART_END, { part: "answer" });
  add(Kind.PART_START, { part: "summary", partKind: "json" });
  const json = JSON.stringify({ rows: ROWS });
  for (let i = 0; i < json.length; i += 37) add(Kind.JSON, { part: "summary", body: json.slice(i, i + 37) });
  add(Kind.PART_END, { part: "summary" });
  add(Kind.PART_START, { part: "chart", partKind: "data", mime: "application/json" });
  add(Kind.DATA, { part: "chart", body: '{"mark":"bar",' });
  add(Kind.DATA, { part: "chart", body: '"n":3}' });
  add(Kind.PART_END, { part: "chart" });
  if (status === "completed") add(Kind.END, { status, count: evs.length + 1 });
  else add(Kind.END, { status, error: "the model failed", count: evs.length + 1 });
  return evs;
}
const TEXT = Array.from({ length: 30 }, (_, i) => `word${i} `).join("");

class Server {
  constructor(events, { dropAfter = null } = {}) {
    Object.assign(this, { events, dropAfter });
    const v = new ChainVerifier(STREAM, EPOCH);
    this.digests = events.map((ev) => toHex(v.extend([ev])));
    this.starts = [];
    this.resumes = [];
    this.cancels = [];
    const fake = fakeSockets({ openDelay: 1, onFrame: (ws, f) => this.handle(ws, f) });
    this.WebSocket = fake.WS;
    this.sockets = fake.sockets;
  }
  get connections() {
    return this.sockets.length;
  }
  out(ws, f) {
    if (ws.readyState === 1) ws.onmessage?.({ data: encode(f) });
  }
  handle(ws, f) {
    if (ws.readyState !== 1) return;
    if (f.t === "hello") return this.out(ws, { t: "welcome", session: "s", heartbeat_ms: 200, epoch: EPOCH, caps: ["batch"] });
    if (f.t === "start") {
      this.starts.push(f);
      this.out(ws, { t: "started", req: f.req, stream: STREAM, epoch: EPOCH });
      return this.pump(ws, 0);
    }
    if (f.t === "resume") {
      this.resumes.push(f.after);
      this.out(ws, { t: "resumed", stream: f.stream, from: f.after, head: this.events.length, status: "running" });
      return this.pump(ws, f.after);
    }
    if (f.t === "cancel") this.cancels.push(f.stream);
    if (f.t === "ping") this.out(ws, { t: "pong", n: f.n });
  }
  pump(ws, after) {
    const next = (from) => {
      if (ws.readyState !== 1 || from >= this.events.length) return;
      if (this.dropAfter !== null && from >= this.dropAfter) {
        this.dropAfter = null;
        ws.readyState = 3;
        return ws.onclose?.({ code: 1006, reason: "" });
      }
      const batch = this.events.slice(from, from + 3);
      const last = from + batch.length;
      this.out(ws, { t: "events", stream: STREAM, seq: from + 1, items: encodeItems(batch), h: this.digests[last - 1] });
      setTimeout(() => next(last), 1);
    };
    next(after);
  }
}

const memoryStorage = () => {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
};

async function lastMessage(stream) {
  let last = null;
  for await (const m of readUIMessageStream({ stream, terminateOnError: true })) last = m;
  return last;
}

function assertWhole(message) {
  const text = message.parts.filter((p) => p.type === "text");
  assert.deepEqual(text.map((p) => p.text), [TEXT]);
  assert.equal(text[0].state, "done");
  const summary = message.parts.filter((p) => p.type === "data-summary");
  assert.equal(summary.length, 1, "one data part per id: partial values replaced in place");
  assert.deepEqual(summary[0].data, { rows: ROWS });
  assert.deepEqual(message.parts.find((p) => p.type === "data-chart").data, { mark: "bar", n: 3 });
}

test("sendMessages: the answer's parts as UI message chunks, assembled by ai, through a dropped connection", async () => {
  const server = new Server(answer(), { dropAfter: 40 });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false });
  const transport = new UnbrokenChatTransport({ client, agent: "chat", input: (r) => ({ chat: r.chatId, n: r.messages.length }) });
  const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }];
  const stream = await transport.sendMessages({ trigger: "submit-message", chatId: "c1", messageId: undefined, messages, abortSignal: undefined });
  const message = await lastMessage(stream);
  assertWhole(message);
  assert.equal(message.id, STREAM);
  assert.equal(server.starts.length, 1, "the agent ran once");
  assert.deepEqual(server.starts[0].input, { chat: "c1", n: 1 });
  assert.match(server.starts[0].req, /^chat:c1:/);
  assert.deepEqual(server.resumes, [42], "resumed after the drop (frames of 3: at 42), from its cursor");
  await client.close();
});

test("reconnectToStream after a reload: the answer in flight replayed from its start, verified; null once ended", async () => {
  const server = new Server(answer());
  const storage = memoryStorage();
  const a = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage, lifecycle: false });
  const ta = new UnbrokenChatTransport({ client: a, agent: "chat" });
  const first = await ta.sendMessages({ trigger: "submit-message", chatId: "c2", messageId: undefined, messages: [], abortSignal: undefined });
  const reader = first.getReader();
  for (let i = 0; i < 10; i++) await reader.read(); // some chunks shown, then the page goes
  a.saveCursors();
  await a.close();
  const b = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage, lifecycle: false });
  const tb = new UnbrokenChatTransport({ client: b, agent: "chat" });
  assert.equal(tb.resumeStreamIsReplay, true);
  assert.equal(await tb.reconnectToStream({ chatId: "other" }), null);
  const again = await tb.reconnectToStream({ chatId: "c2" });
  assert.ok(again !== null);
  assertWhole(await lastMessage(again));
  assert.equal(server.starts.length, 1, "no second run");
  assert.deepEqual(server.resumes, [0], "a replay from the first event");
  assert.equal(await tb.reconnectToStream({ chatId: "c2" }), null, "ended: nothing to reconnect to");
  await b.close();
});

test("abortSignal cancels the agent run; a failed answer is an error chunk", async () => {
  const server = new Server(answer());
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false });
  const transport = new UnbrokenChatTransport({ client, agent: "chat" });
  const abort = new AbortController();
  const stream = await transport.sendMessages({ trigger: "submit-message", chatId: "c3", messageId: undefined, messages: [], abortSignal: abort.signal });
  const reader = stream.getReader();
  await reader.read();
  abort.abort();
  for (let i = 0; i < 200 && server.cancels.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(server.cancels, [STREAM]);
  await reader.cancel();
  await client.close();

  const failing = new Server(answer({ status: "failed" }));
  const c2 = new Client("ws://a/ws", { WebSocket: failing.WebSocket, storage: null, lifecycle: false });
  const t2 = new UnbrokenChatTransport({ client: c2, agent: "chat" });
  const chunks = [];
  const s2 = await t2.sendMessages({ trigger: "submit-message", chatId: "c4", messageId: undefined, messages: [], abortSignal: undefined });
  for await (const c of s2) chunks.push(c);
  assert.equal(chunks[0].type, "start");
  const last = chunks.at(-1);
  assert.equal(last.type, "error");
  assert.match(last.errorText, /the model failed/);
  await c2.close();
});

test("part roles through ai's reader: reasoning, a tool call with its output, metadata and the finish reason", async () => {
  const evs = [];
  const add = (kind, fields) => evs.push(makeEvent(evs.length + 1, kind, fields));
  const part = (p, partKind, mime, bodies, kind) => {
    add(Kind.PART_START, { part: p, partKind, mime });
    for (const body of bodies) add(kind, { part: p, body });
    add(Kind.PART_END, { part: p });
  };
  part("reasoning", "text", "text/plain; role=reasoning", ["Paris ", "first."], Kind.TEXT);
  const call = 'role=tool-call; tool="get_weather"; call="call_1"';
  part("tool-call_1", "json", `application/json; ${call}`, ['{"city":', ' "Paris"}'], Kind.JSON);
  part("result-call_1", "json", 'application/json; role=tool-result; call="call_1"', ['{"temp":21}'], Kind.JSON);
  part("text", "text", "text/plain", ["21 °C."], Kind.TEXT);
  part("metadata", "json", "application/json; role=metadata", ['{"finish_reason":"stop","usage":{"output_tokens":9}}'], Kind.JSON);
  part("json", "json", 'application/json; name="weather"', ["[1]"], Kind.JSON);
  add(Kind.END, { status: "completed", count: evs.length + 1 });
  const server = new Server(evs, { dropAfter: 8 });
  const client = new Client("ws://a/ws", { WebSocket: server.WebSocket, storage: null, lifecycle: false });
  const transport = new UnbrokenChatTransport({ client, agent: "chat" });
  const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }];
  const stream = await transport.sendMessages({ trigger: "submit-message", chatId: "c2", messageId: undefined, messages, abortSignal: undefined });
  const message = await lastMessage(stream);
  const kinds = message.parts.map((p) => p.type);
  assert.deepEqual(kinds, ["reasoning", "tool-get_weather", "text", "data-weather"]);
  assert.equal(message.parts[0].text, "Paris first.");
  const tool = message.parts[1];
  assert.deepEqual([tool.toolCallId, tool.state, tool.input, tool.output], ["call_1", "output-available", { city: "Paris" }, { temp: 21 }]);
  assert.equal(message.parts[2].text, "21 °C.");
  assert.deepEqual(message.metadata, { finish_reason: "stop", usage: { output_tokens: 9 } });
  assert.ok(server.resumes.length >= 1, "resumed after the drop");
  await client.close();
});

test("ai-sdk.js shares the page's one core: the core loaded under a query string and a hashed name, ai-sdk.js beside it", async () => {
  const { copyFileSync, mkdtempSync, readFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { pathToFileURL } = await import("node:url");
  // ai-sdk.js imports nothing of the core (only `ai`'s types): no second copy can load
  const text = readFileSync(new URL("../dist/ai-sdk.js", import.meta.url), "utf8");
  assert.doesNotMatch(text, /\bimport\b|\}\s*from\s*["']|unbroken\.js/);
  const dir = mkdtempSync(join(tmpdir(), "ub-ai-"));
  for (const name of ["unbroken-v1.js", "unbroken-blake2b.js", "ai-sdk.js"]) copyFileSync(new URL(`../dist/${name}`, import.meta.url), join(dir, name));
  copyFileSync(new URL("../dist/unbroken.js", import.meta.url), join(dir, "unbroken.abc123.js"));
  const page = await import(`${pathToFileURL(join(dir, "unbroken.abc123.js"))}?v=7`);
  const { UnbrokenChatTransport: PageTransport } = await import(pathToFileURL(join(dir, "ai-sdk.js")).href);
  const server = new Server(answer());
  const storage = memoryStorage();
  const a = new page.Client("ws://a/ws", { WebSocket: server.WebSocket, storage, lifecycle: false });
  const first = await new PageTransport({ client: a, agent: "chat" }).sendMessages({ trigger: "submit-message", chatId: "c3", messageId: undefined, messages: [], abortSignal: undefined });
  const reader = first.getReader();
  for (let i = 0; i < 10; i++) await reader.read();
  a.saveCursors();
  await a.close();
  // a reload: the replay from the first event needs the chain's seed, the page core's
  const b = new page.Client("ws://a/ws", { WebSocket: server.WebSocket, storage, lifecycle: false });
  const again = await new PageTransport({ client: b, agent: "chat" }).reconnectToStream({ chatId: "c3" });
  assertWhole(await lastMessage(again));
  assert.deepEqual(server.resumes, [0]);
  // an error of that client reaches the page as the page core's class
  const err = await b.resume("not a cursor").then(() => null, (e) => e);
  assert.ok(err instanceof page.ConfigError && err instanceof page.UnbrokenError, String(err));
  await b.close();
});
