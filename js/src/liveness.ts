/**
 * When is the link dead? The client's liveness rule (pure: time, in seconds, is
 * passed in). Mirrors `unbroken/protocol/liveness.py` line by line.
 *
 * The link is declared dead when nothing arrives for the silence limit, or when a
 * `ping` stays unanswered that long (the client's own frames are then lost). The
 * limit is `silenceFactor` heartbeats plus the RTO, `SRTT + 4·RTTVAR` of the
 * measured round trips (RFC 6298), the RTO term capped at `MAX_RTO`. Time the
 * client's own process ran late (its checks ran behind schedule: a busy page, a
 * throttled background tab, a stopped process) never counts against the link.
 *
 * On a link slower than the stream the backlog may sit between server and client as
 * many small messages, and every pong waits behind it. A pong that came back behind
 * data (`BULK` bytes or more heard between ping and pong) tells how long that queue
 * made it wait; while data keeps arriving ahead of the next pong, that ping may wait
 * that long again, twice over, at most `MAX_QUEUE` more than the limit. A
 * receive-only link is still found: its pongs stop coming, so the last delay seen is
 * the healthy link's round trip.
 *
 * The flow window bounds that queue even before any pong came back: when a ping goes
 * out, at most `ahead` event bytes (each live stream's window less what arrived
 * unacked) can be on their way ahead of its pong; while those still arrive, the ping
 * is judged from the last of them (at most `MAX_AHEAD` after the spell's first ping). A 5 KB/s link against
 * a 16 KiB window (a 3 s queue) is not cut on its first ping; a link whose upstream
 * died gets no more than that bound, then only `hb`. The allowance applies once
 * `AHEAD_MIN` event bytes arrived since the ping (a slow trickle is judged at the limit).
 */
import type { Ping } from "./frames.js";

/** the most the round trip may add to the silence limit (seconds) */
export const MAX_RTO = 2.0;
/** bytes of one message that make a late pong "queued behind data", not lost */
export const BULK = 4096;
/** the most a ping may wait beyond the limit because its pong queues behind data (seconds) */
export const MAX_QUEUE = 10.0;
/** how many times the last queued pong's delay the next ping may wait while data arrives */
export const QUEUE_GROWTH = 2.0;
/** the most the flow window's allowance may move the judging of an unanswered ping,
 * from the first ping of the spell (seconds): a 5 KB/s link against a 16 KiB window
 * (3.4 s ahead) is kept; a receive-only failure under a fast trickle is found this
 * much later than the limit at most */
export const MAX_AHEAD = 3.0;
/** event bytes a ping must have seen arrive before the flow window's allowance applies
 * to it: a link carrying a slow trickle (a few tokens a second) is judged at the limit */
export const AHEAD_MIN = 2048;
/** a check that ran this much behind schedule lets the reader go first (seconds) */
export const LATE_RUN = 0.05;
/** the heartbeat a server may ask for is clamped to this range (seconds) */
export const MIN_HEARTBEAT = 0.05;
export const MAX_HEARTBEAT = 10.0;
/** pings remembered while unanswered */
export const MAX_PINGS = 8;
/** the longest wait between two checks (seconds) */
export const MAX_CHECK_EVERY = 0.25;

/** What a check decided: the link is `dead` (why), or send `ping` and check again at `wakeAt`. */
export interface Check {
  wakeAt: number;
  dead: string | null;
  ping: Ping | null;
}

export class Liveness {
  silenceFactor: number;
  pingEvery: number;
  /** the server's heartbeat interval (seconds), from `welcome` */
  heartbeat = 1.0;
  srtt: number | null = null;
  rttvar = 0.0;
  lastRecv = 0.0;
  /** seconds this process ran late (checks behind schedule), summed: never the link's */
  lag = 0.0;
  lagAtRecv = 0.0;
  /** n -> [sent at, lag then, bytes heard then, event bytes heard then, ahead then] */
  readonly pings = new Map<number, [number, number, number, number, number]>();
  pingN = 0;
  lastPingAt = 0.0;
  lastBulk = 0.0;
  lagAtBulk = 0.0;
  private partial = 0;
  /** bytes heard on this client (all connections), for "data since the ping" */
  heard = 0;
  /** how long the last pong that came back behind data took (seconds; 0: nothing was ahead) */
  queueDelay = 0.0;
  private _deferred = false;
  /** event bytes that may be on their way when a ping is sent (the session sets it:
   * each live stream's flow window less what it received unacked; 0: none) */
  ahead = 0;
  /** event bytes heard on this client (all connections) */
  events = 0;
  /** when event bytes ahead of the oldest pong last arrived */
  lastAhead = 0.0;
  lagAtAhead = 0.0;
  /** the ping that began the unanswered spell: [sent at, event bytes then, ahead] */
  private spell: [number, number, number] | null = null;

  constructor(o: { silenceFactor?: number; pingEvery?: number } = {}) {
    this.silenceFactor = o.silenceFactor ?? 3.0;
    this.pingEvery = o.pingEvery ?? 0.75;
  }

  /** A new connection is being opened: what was in flight on the last is moot. */
  connecting(): void {
    this.pings.clear();
    this.spell = null;
    this.partial = 0;
    this._deferred = false;
    this.queueDelay = 0.0;
  }

  /** The connection is open and `hello` is sent: the clocks start. */
  helloSent(now: number): void {
    this.lastRecv = now;
    this.lagAtRecv = this.lag;
    this.lastPingAt = now;
  }

  /** `welcome` arrived `rtt` seconds after the attempt began. */
  welcomed(now: number, heartbeatMs: number, rtt: number): void {
    this.lastRecv = now;
    this.lagAtRecv = this.lag;
    this.rttSample(rtt);
    this.heartbeat = Math.min(Math.max(heartbeatMs / 1000, MIN_HEARTBEAT), MAX_HEARTBEAT);
  }

  /** `n` bytes arrived: proof of life. */
  bytesHeard(now: number, n: number): void {
    this.lastRecv = now;
    this.lagAtRecv = this.lag;
    this.heard += n;
    this.partial += n;
    if (this.partial >= BULK) {
      this.partial = 0;
      this.lastBulk = now;
      this.lagAtBulk = this.lag;
    }
  }

  /** A frame of `n` event bytes arrived (with the bytes last heard): while the oldest
   * ping may still have them ahead of its pong (`ahead`), it is judged from now on. */
  eventsHeard(n: number): void {
    this.events += n;
    const spell = this.spell;
    if (spell !== null && this.pings.size > 0 && this.events - spell[1] <= spell[2]) {
      this.lastAhead = this.lastRecv;
      this.lagAtAhead = this.lagAtRecv;
    }
  }

  /** A whole message arrived. */
  messageHeard(): void {
    this.partial = 0;
  }

  /** A ping to send now (remembered until its pong). */
  ping(now: number): Ping {
    this.pingN += 1;
    if (this.pings.size === 0) this.spell = [now, this.events, this.ahead]; // a spell begins
    this.pings.set(this.pingN, [now, this.lag, this.heard, this.events, this.ahead]);
    this.lastPingAt = now;
    // (numbered in order: the first key is the oldest)
    if (this.pings.size > MAX_PINGS) this.pings.delete(this.pings.keys().next().value!);
    return { t: "ping", n: this.pingN };
  }

  /** Pong `n` arrived: it and every older ping are answered; its round trip is a
   * sample unless it queued behind data (Karn). If data came ahead of it, its delay
   * is how long the queue made it wait. */
  pong(now: number, n: number): void {
    const sent = this.pings.get(n);
    if (sent === undefined) return;
    this.pings.delete(n);
    const [at, lag, heard] = sent;
    for (const k of [...this.pings.keys()]) if (k < n) this.pings.delete(k);
    const rest = this.pings.values().next().value; // a new spell from the oldest left
    this.spell = rest === undefined ? null : [rest[0], rest[3], rest[4]];
    const took = Math.max(0, now - at - (this.lag - lag));
    this.queueDelay = this.heard - heard >= BULK ? took : 0.0;
    if (this.lastBulk <= at) this.rttSample(took);
  }

  /** RFC 6298's smoothed RTT and RTT variance. */
  rttSample(rtt: number): void {
    if (this.srtt === null) {
      this.srtt = rtt;
      this.rttvar = rtt / 2;
      return;
    }
    this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt);
    this.srtt = 0.875 * this.srtt + 0.125 * rtt;
  }

  get awaitingPong(): boolean {
    return this.pings.size > 0;
  }

  /** Silence that means dead: `silenceFactor` heartbeats plus the RTO. */
  limit(): number {
    const rto = Math.min(MAX_RTO, (this.srtt ?? 0) + 4 * this.rttvar);
    return this.silenceFactor * this.heartbeat + rto;
  }

  /** The oldest unanswered ping: [judged from, lag then, extra wait allowed]. */
  private _oldestPing(): [number, number, number] | null {
    const oldest = this.pings.values().next().value;
    if (oldest === undefined) return null;
    let [sent, lag] = oldest;
    const heard = oldest[2];
    let extra = 0.0;
    // data keeps arriving ahead of the pong: it may queue as the last one did
    if (this.heard - heard >= BULK) extra = Math.min(MAX_QUEUE, QUEUE_GROWTH * this.queueDelay);
    if (this.lastBulk > sent) {
      sent = this.lastBulk;
      lag = this.lagAtBulk;
    }
    // events the window let out before the ping were still arriving (at most MAX_QUEUE)
    const spell = this.spell;
    const judged = spell === null ? 0 : Math.min(this.lastAhead, spell[0] + MAX_AHEAD);
    if (spell !== null && judged > sent && this.events - spell[1] >= AHEAD_MIN) {
      sent = judged;
      lag = this.lagAtAhead;
    }
    return [sent, lag, extra];
  }

  /** How long the oldest unanswered ping may wait: the limit, plus the queueing
   * delay the last pong showed (twice, at most `MAX_QUEUE`) while data arrives. */
  pingLimit(): number {
    const o = this._oldestPing();
    return this.limit() + (o === null ? 0 : o[2]);
  }

  /** How long the oldest unanswered ping has waited (less this process's lag). */
  pingAge(now: number): number {
    const o = this._oldestPing();
    return o === null ? 0 : now - o[0] - (this.lag - o[1]);
  }

  /** When the link will be declared dead if nothing more arrives. */
  deadline(): number {
    const limit = this.limit();
    let at = this.lastRecv + (this.lag - this.lagAtRecv) + limit;
    const o = this._oldestPing();
    if (o !== null) at = Math.min(at, o[0] + (this.lag - o[1]) + limit + o[2]);
    return at;
  }

  /** Why the link is dead at `now`, or `null` while it lives. */
  dead(now: number): string | null {
    const limit = this.limit();
    const ours = this.lag - this.lagAtRecv;
    const quiet = now - this.lastRecv;
    if (quiet - ours > limit) {
      return `no frame for ${quiet.toFixed(2)}s (limit ${limit.toFixed(2)}s, ${ours.toFixed(2)}s late)`;
    }
    const unanswered = this.pingAge(now);
    const plimit = this.pingLimit();
    if (unanswered > plimit) {
      return `ping unanswered for ${unanswered.toFixed(2)}s (limit ${plimit.toFixed(2)}s)`;
    }
    return null;
  }

  /** When to run the first check on a welcomed connection. */
  firstCheck(now: number): number {
    return now + this.limit() / 3;
  }

  /** The periodic check, run at `now` though due at `due`. `expecting`: some stream
   * is live (the server sends `hb` only then). */
  check(now: number, due: number, expecting: boolean): Check {
    const late = Math.max(0, now - due);
    this.lag += late;
    if (late > LATE_RUN && !this._deferred) {
      // this process was busy (or frozen, or throttled): messages may be waiting to
      // be delivered. They are proof of life: let them go first (once)
      this._deferred = true;
      return { wakeAt: now, dead: null, ping: null };
    }
    this._deferred = false;
    const limit = this.limit();
    if (!expecting) {
      this.lastRecv = now;
      this.lagAtRecv = this.lag;
      this.pings.clear();
    }
    const dead = this.dead(now);
    if (dead !== null) return { wakeAt: now, dead, ping: null };
    let ping: Ping | null = null;
    if (this.pingEvery && now - this.lastPingAt >= this.pingEvery && expecting) ping = this.ping(now);
    // the next check: a step on, or at the deadline if that comes first (a check
    // only every step would find a silent link up to a step after its deadline)
    const deadline = expecting ? this.deadline() + 0.001 : Infinity;
    return { wakeAt: Math.min(now + Math.min(limit / 3, MAX_CHECK_EVERY), Math.max(now + 0.001, deadline)), dead: null, ping };
  }
}
