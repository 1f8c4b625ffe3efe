// In-process fake WebSockets for the client tests in test/ (kept out of test/: `node
// --test test/` runs every module there as a test file). The real thing (a Python
// server, a fault proxy, Chromium) is tests/browser/.
import assert from "node:assert/strict";
import { decodeClient, encode } from "../dist/testing.js";

/** A fake WebSocket class and what it saw. Each `new WS(url, protocols)` is kept in
 * `sockets` (with its `url` and `protocols`) and opens `openDelay` ms later with the
 * subprotocol `protocol`. What the client sends must go over an open socket; it is
 * decoded (`decode`) into `ws.sent`, then handed to `onFrame(ws, frame)` on a later
 * tick if the socket is still open (a scripted server's answer). `ws.push(frame)`
 * delivers a server message (a string or bytes as they are, an object `encode`d);
 * `ws.close(code, reason)` closes as a browser does: `ws.closed`, `onclose` on a
 * later tick, once. `until(f)` resolves with `f()`'s first truthy value, checked
 * now and at every frame the client sends. */
export function fakeSockets({ protocol = "unbroken.v1", openDelay = 0, decode = decodeClient, encode: encodeFrame = encode, onFrame = null } = {}) {
  const sockets = [];
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      const v = w[0]();
      if (v) {
        waiters.splice(waiters.indexOf(w), 1);
        w[1](v);
      }
    }
  };
  class WS {
    constructor(url, protocols) {
      Object.assign(this, { url, protocols, readyState: 0, protocol: "", sent: [], closed: null });
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = protocol;
        this.onopen?.({});
      }, openDelay);
    }
    send(data) {
      assert.equal(this.readyState, 1, "sent over an open socket");
      const f = decode(data);
      this.sent.push(f);
      check();
      if (onFrame)
        setTimeout(() => {
          if (this.readyState === 1) onFrame(this, f);
        }, 0);
    }
    push(frame) {
      this.onmessage?.({ data: typeof frame === "object" && !ArrayBuffer.isView(frame) && !(frame instanceof ArrayBuffer) ? encodeFrame(frame) : frame });
    }
    close(code = 1000, reason = "") {
      if (this.readyState >= 2) return;
      this.closed = { code, reason };
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  const until = (f) => new Promise((r) => (waiters.push([f, r]), check()));
  return { WS, sockets, until };
}
