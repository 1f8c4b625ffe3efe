/**
 * Reconnect backoff (§14): attempt 1 at once, then full-jitter exponential; a
 * server's `retry_after` is a floor under the next delay. Pure: time (seconds) is
 * passed in, randomness comes from `rng` (seed it for reproducible delays).
 * Mirrors `unbroken/protocol/backoff.py`.
 */
import { ConfigError, type ReconnectExhausted } from "./errors.js";

export interface BackoffPolicyOptions {
  base?: number;
  cap?: number;
  multiplier?: number;
  /** `null`: no limit */
  maxAttempts?: number | null;
  /** seconds since the loss; `null`: no limit */
  deadline?: number | null;
}

/** How a client waits between reconnect attempts (all times in seconds). */
export class BackoffPolicy {
  readonly base: number;
  readonly cap: number;
  readonly multiplier: number;
  readonly maxAttempts: number | null;
  readonly deadline: number | null;

  constructor(o: BackoffPolicyOptions = {}) {
    this.base = o.base ?? 0.1;
    this.cap = o.cap ?? 10.0;
    this.multiplier = o.multiplier ?? 2.0;
    this.maxAttempts = o.maxAttempts === undefined ? 12 : o.maxAttempts;
    this.deadline = o.deadline === undefined ? 60.0 : o.deadline;
    if (this.base < 0 || this.cap < 0 || this.multiplier < 1) {
      throw new ConfigError("need base >= 0, cap >= 0, multiplier >= 1");
    }
    if (this.maxAttempts !== null && this.maxAttempts < 1) {
      throw new ConfigError("need maxAttempts >= 1 or null");
    }
    if (this.deadline !== null && this.deadline <= 0) {
      throw new ConfigError("need deadline > 0 or null");
    }
  }

  /** Largest delay before `attempt` (1-based), before any server floor. */
  ceiling(attempt: number): number {
    if (attempt <= 1) return 0;
    return Math.min(this.cap, this.base * this.multiplier ** (attempt - 2));
  }
}

/** A random source in [0, 1). */
export type Rng = () => number;

/** A small seedable generator (mulberry32), for reproducible jitter. */
export function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The state of one reconnect episode. */
export class Backoff {
  attempts = 0;
  readonly schedule: number[] = [];
  constructor(
    readonly policy: BackoffPolicy,
    public started: number,
    readonly rng: Rng = Math.random,
  ) {}

  /** Delay before the next attempt, or `null` when the budget is spent (counts it). */
  nextDelay(now: number, retryAfter: number | null = null): number | null {
    const p = this.policy;
    const attempt = this.attempts + 1;
    if (p.maxAttempts !== null && attempt > p.maxAttempts) return null;
    const ceiling = p.ceiling(attempt);
    let delay = ceiling > 0 ? this.rng() * ceiling : 0;
    if (retryAfter !== null && retryAfter > delay) delay = retryAfter;
    if (p.deadline !== null && now - this.started + delay > p.deadline) return null;
    this.attempts = attempt;
    this.schedule.push(delay);
    return delay;
  }

  /** Seconds left before the deadline (`null`: no deadline). */
  remaining(now: number): number | null {
    const d = this.policy.deadline;
    return d === null ? null : Math.max(0, d - (now - this.started));
  }

  elapsed(now: number): number {
    return now - this.started;
  }
}

/** A reconnect decision (the client's reconnect episodes are in `Client`; these
 * types stay for code that named them). */
export interface Reconnect {
  kind: "reconnect";
  delay: number;
  attempt: number;
}
export interface GiveUp {
  kind: "give_up";
  error: ReconnectExhausted;
}
