// Listing live streams (cap `streams`, protocol §2): the client's frames against the
// shared frame vectors, and `client.streams()` over a scripted server (reconnects,
// a server without the cap).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Client, Cursor, decodeClient, encode } from "../dist/testing.js";
import { fakeSockets } from "../test-support/fake-socket.mjs";

const vectors = JSON.parse(readFileSync(new URL("../../tests/vectors/frames.json", import.meta.url), "utf8")).frames;
const vector = (name) => vectors.find((f) => f.name === name);
const EPOCH = "Zm9vYmFy";
const welcome = (caps) => encode({ t: "welcome", session: "s", heartbeat_ms: 1000, epoch: EPOCH, caps });

const ITEM = { stream: "mUlt1PartStream-xyz_42", agent: "report", epoch: EPOCH, head: 7, h: "ba7abf59f2e5310cd9f0b87de4f48e99", status: "running" };

/** A scripted server: welcomes with `caps`, answers `list` with `items` (or drops
 * the connection at the first `dropLists` lists). */
function scripted({ caps = ["batch", "streams"], items = [ITEM], dropLists = 0 } = {}) {
  const seen = { hellos: [], lists: [] };
  const { WS, sockets } = fakeSockets({
    openDelay: 1,
    onFrame(ws, f) {
      if (f.t === "hello") {
        seen.hellos.push(f);
        ws.push(welcome(caps));
      } else if (f.t === "list") {
        seen.lists.push(f.n);
        if (dropLists > 0) {
          dropLists--;
          ws.readyState = 3;
          ws.onclose?.({ code: 1006, reason: "" });
        } else ws.push({ t: "streams", n: f.n, items });
      } else if (f.t === "ping") ws.push({ t: "pong", n: f.n });
    },
  });
  Object.defineProperty(seen, "connections", { get: () => sockets.length });
  return { WS, seen };
}

const options = (WS) => ({ WebSocket: WS, storage: null, lifecycle: false, policy: { base: 0.01, cap: 0.02 } });

test("client.streams(): the live streams with cursors at their heads; connects first", async () => {
  const { WS, seen } = scripted();
  const client = new Client("ws://a/ws", options(WS));
  const items = await client.streams();
  assert.deepEqual(seen.hellos[0].caps, ["batch", "streams", "unavailable"], "the cap is offered");
  assert.equal(items.length, 1);
  const [it] = items;
  const { cursor, ...fields } = it;
  assert.deepEqual(fields, { stream: ITEM.stream, agent: "report", epoch: EPOCH, head: 7, status: "running" });
  assert.ok(cursor instanceof Cursor);
  assert.deepEqual([cursor.stream, cursor.seq, cursor.digest, cursor.epoch], [ITEM.stream, 7, ITEM.h, EPOCH]);
  assert.equal(String(cursor), `ub1.${ITEM.stream}.7.${ITEM.h}.${EPOCH}`, "a cursor resume() takes");
  assert.deepEqual(await client.streams(), items, "asked again: numbered apart");
  assert.deepEqual(seen.lists, [1, 2]);
  await client.close();
});

test("client.streams(): a list unanswered when the connection drops is asked again on the next", async () => {
  const { WS, seen } = scripted({ dropLists: 1, items: [] });
  const client = new Client("ws://a/ws", options(WS));
  await client.connect();
  assert.deepEqual(await client.streams(), []);
  assert.deepEqual(seen.lists, [1, 1], "the same list, sent again after the reconnect");
  assert.equal(seen.connections, 2);
  await client.close();
});

test("client.streams(): a server without the cap is a ConfigError; close() ends a pending list", async () => {
  const { WS, seen } = scripted({ caps: ["batch"] });
  const client = new Client("ws://a/ws", options(WS));
  await assert.rejects(client.streams(), (e) => e.name === "ConfigError" && /predates the 'streams' capability/.test(e.message));
  assert.deepEqual(seen.lists, [], "nothing sent");
  await client.close();

  const never = scripted({ items: [] });
  let listSent;
  const sent = new Promise((r) => (listSent = r));
  const slow = new Client("ws://a/ws", options(class extends never.WS {
    send(data) {
      if (decodeClient(data).t === "list") listSent(); // and never answered
      else super.send(data);
    }
  }));
  const pending = slow.streams();
  await sent;
  await slow.close();
  await assert.rejects(pending, (e) => e.name === "ConnectionLost" && /client closed/.test(e.message));
  // one asked as the client closes ends the same way
  const late = new Client("ws://a/ws", options(never.WS));
  await late.connect();
  const racing = late.streams();
  await late.close();
  await assert.rejects(racing, (e) => e.name === "ConnectionLost");
});

test("list and streams frames follow the vectors; a streams frame without the cap agreed closes 4000", async () => {
  const one = vector("streams (cap streams): one live stream");
  const none = vector("streams, none live");
  const lists = [];
  const { WS } = scripted();
  class Vectors extends WS {
    send(data) {
      const f = decodeClient(data);
      if (f.t !== "list") return super.send(data);
      lists.push(data);
      const answer = f.n === 3 ? one.frame : f.n === 4 ? none.frame : encode({ t: "streams", n: f.n, items: [] });
      setTimeout(() => this.onmessage?.({ data: answer }), 0);
    }
  }
  const client = new Client("ws://a/ws", options(Vectors));
  await client.streams();
  await client.streams();
  const items = await client.streams();
  assert.equal(lists[2], vector("list (cap streams)").frame);
  assert.deepEqual(items.map(({ cursor, ...f }) => ({ ...f, h: cursor.digest })), one.fields.items);
  assert.deepEqual(await client.streams(), []);
  await client.close();

  // the server did not list the cap: a streams frame is a protocol error
  const { WS: Old } = scripted({ caps: ["batch"] });
  let ws;
  let closed;
  const closing = new Promise((r) => (closed = r));
  class Pushy extends Old {
    constructor(...a) {
      super(...a);
      ws = this;
    }
    close(code, reason) {
      closed([code, reason]);
      super.close(code, reason);
    }
  }
  const old = new Client("ws://a/ws", options(Pushy));
  await old.connect();
  ws.onmessage({ data: one.frame });
  const [code, reason] = await closing;
  assert.equal(code, 4000);
  assert.match(reason, /streams cap/);
  await old.close();
});
