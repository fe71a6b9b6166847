/**
 * Who may start a handshake. Pure (the clock is injected) so the limits are testable as arithmetic.
 *
 * Sources are underlay IPs as the server sees them, which behind a NAT is the router: limits per source
 * must leave room for a whole LAN of devices reconnecting after a server restart.
 */
export interface AdmissionLimits {
  /** Handshakes (TCP accepted, no HELLO yet) in progress at once, all sources together. */
  maxHandshakes: number;
  maxHandshakesPerSource: number;
  /** Token bucket per source: sustained new connections per second, and the burst above it. */
  connectionsPerSecond: number;
  connectionBurst: number;
}

export type Refusal = 'tooManyHandshakes' | 'tooManyFromSource' | 'rateLimited';

interface Bucket {
  tokens: number;
  updatedAt: number;
  handshakes: number;
}

export class Admission {
  private readonly sources = new Map<string, Bucket>();
  private handshakes = 0;

  constructor(public limits: AdmissionLimits, private readonly now: () => number = Date.now) {}

  get inProgress(): number {
    return this.handshakes;
  }

  /** Either admits (and counts a handshake in progress) or says why not. */
  admit(source: string): Refusal | null {
    const now = this.now();
    let bucket = this.sources.get(source);
    if (!bucket) {
      bucket = { tokens: this.limits.connectionBurst, updatedAt: now, handshakes: 0 };
      this.sources.set(source, bucket);
    }
    bucket.tokens = Math.min(this.limits.connectionBurst,
      bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.limits.connectionsPerSecond);
    bucket.updatedAt = now;
    if (bucket.tokens < 1) return 'rateLimited';
    if (this.handshakes >= this.limits.maxHandshakes) return 'tooManyHandshakes';
    if (bucket.handshakes >= this.limits.maxHandshakesPerSource) return 'tooManyFromSource';
    bucket.tokens -= 1;
    bucket.handshakes++;
    this.handshakes++;
    return null;
  }

  /** The handshake of an admitted connection ended, whichever way. */
  release(source: string): void {
    const bucket = this.sources.get(source);
    if (!bucket || bucket.handshakes === 0) return;
    bucket.handshakes--;
    this.handshakes--;
  }

  /** Forgets sources with a full bucket and nothing in progress, so the map stays bounded. */
  sweep(): void {
    const now = this.now();
    for (const [source, bucket] of this.sources) {
      const tokens = bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.limits.connectionsPerSecond;
      if (bucket.handshakes === 0 && tokens >= this.limits.connectionBurst) this.sources.delete(source);
    }
  }

  get trackedSources(): number {
    return this.sources.size;
  }
}
