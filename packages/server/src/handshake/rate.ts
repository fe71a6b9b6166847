/** Token buckets: how the relay bounds what one source or one device may ask of it per unit of time. Pure. */

export interface Rate {
  /** Tokens added per second. */
  perSecond: number;
  /** Tokens a full bucket holds: what may be taken at once after a quiet spell. */
  burst: number;
}

export class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(now: number, rate: Rate) {
    this.tokens = rate.burst;
    this.updatedAt = now;
  }

  private refill(now: number, rate: Rate): void {
    this.tokens = Math.min(rate.burst, this.tokens + (Math.max(0, now - this.updatedAt) / 1000) * rate.perSecond);
    this.updatedAt = now;
  }

  /** Takes a token if there is one. */
  take(now: number, rate: Rate): boolean {
    this.refill(now, rate);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is there (0: now). */
  waitMs(now: number, rate: Rate): number {
    this.refill(now, rate);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / rate.perSecond) * 1000);
  }

  /** A full bucket remembers nothing a fresh one would not: it can be forgotten. */
  isFull(now: number, rate: Rate): boolean {
    this.refill(now, rate);
    return this.tokens >= rate.burst;
  }
}

/** One bucket per key (a device ID, a source address); full buckets are swept away, so the map stays bounded. */
export class KeyedRate {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(public rate: Rate, private readonly now: () => number = Date.now) {}

  /** Takes a token for `key`; when there is none, how many milliseconds until there is one. */
  take(key: string): { ok: true } | { ok: false; retryAfterMs: number } {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(now, this.rate);
      this.buckets.set(key, bucket);
    }
    return bucket.take(now, this.rate) ? { ok: true } : { ok: false, retryAfterMs: bucket.waitMs(now, this.rate) };
  }

  sweep(): void {
    const now = this.now();
    for (const [key, bucket] of this.buckets) if (bucket.isFull(now, this.rate)) this.buckets.delete(key);
  }

  get size(): number {
    return this.buckets.size;
  }
}
