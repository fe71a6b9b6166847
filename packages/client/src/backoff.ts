/**
 * Capped exponential backoff with jitter: after a server restart a fleet must not reconnect in lockstep,
 * and a server that stays down must not be hammered. Each delay is drawn from [d/2, d] for d = base·2^n.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs = 250,
    private readonly capMs = 15_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2));
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}

/**
 * Why an attempt failed, which decides how soon the next one comes:
 * - `outage`: the relay is down, restarting, unreachable or shedding load. It will be back on its own, and
 *   devices must be back within moments of it, so the wait stays short (jittered, spreading a fleet).
 * - `mistake`: what only an operator fixes (wrong join secret, another server's identity, something that
 *   is not an mnedc relay). Retrying does not help, so the wait grows to minutes instead of spinning.
 */
export type FailureKind = 'outage' | 'mistake';

/** Outage: 125–250 ms first, then at most 1 s (500–1000 ms): back < 2 s after the relay listens again. */
export const OUTAGE_BASE_MS = 250;
export const OUTAGE_CAP_MS = 1_000;
/** Operator mistake: 0.5–1 s first, doubling up to 2.5–5 min. */
export const MISTAKE_BASE_MS = 1_000;
export const MISTAKE_CAP_MS = 300_000;

/** The longest wait a relay's hint can impose: a hostile relay must not park its devices for an hour. */
export const MAX_HINT_MS = 900_000;

/**
 * A relay's retryAfterMs/reconnectMs may lengthen a wait (it knows its load), up to MAX_HINT_MS, but never
 * shorten it below the schedule: a relay answering every attempt with "retry in 0 ms" must not make its
 * devices spin.
 */
export function retryDelay(scheduledMs: number, hintMs: number | null): number {
  return hintMs === null ? scheduledMs : Math.max(scheduledMs, Math.min(hintMs, MAX_HINT_MS));
}

/** The client's retry schedule: one backoff per failure kind, both reset by a session that got through. */
export class RetryPolicy {
  constructor(
    readonly outage = new Backoff(OUTAGE_BASE_MS, OUTAGE_CAP_MS),
    readonly mistake = new Backoff(MISTAKE_BASE_MS, MISTAKE_CAP_MS),
  ) {}

  /** The delay before the next attempt: the schedule's, or longer when the relay asks for it (retryDelay). */
  next(kind: FailureKind, hintMs: number | null = null): number {
    return retryDelay((kind === 'mistake' ? this.mistake : this.outage).next(), hintMs);
  }

  reset(): void {
    this.outage.reset();
    this.mistake.reset();
  }
}
