/**
 * Who may start a handshake. Pure (the clock is injected) so the limits are testable as arithmetic.
 *
 * Sources are underlay IPs as the server sees them, which behind a NAT is the router: limits per source
 * must leave room for a whole LAN of devices reconnecting after a server restart.
 *
 * The handshake table is never allowed to lock honest devices out. When it is full, a newcomer takes the
 * slot of the oldest handshake in the first non-empty class of:
 *   1. unknown sources that have not started TLS (connected and silent: what a slot-filling flood looks like),
 *   2. unknown sources mid-TLS,
 *   3. (only for a newcomer from a known source) known sources, not started, then mid-TLS.
 * A known source is one a device authenticated from recently. An honest client sends its ClientHello the
 * moment TCP connects and finishes in milliseconds, so a flood of idle connections only ever evicts itself,
 * and even a flood that starts TLS must open max_handshakes newer connections within those milliseconds.
 */
import { TokenBucket, type Rate } from './rate';

export interface AdmissionLimits {
  /** Handshakes (TCP accepted, no HELLO yet) in progress at once, all sources together. */
  maxHandshakes: number;
  maxHandshakesPerSource: number;
  /** Token bucket per source: sustained new connections per second, and the burst above it. */
  connectionsPerSecond: number;
  connectionBurst: number;
}

export type Refusal = 'tooManyHandshakes' | 'tooManyFromSource' | 'rateLimited';

/** A handshake in progress. `evict` is how admission ends it when its slot goes to a newcomer. */
export interface Handshake {
  readonly source: string;
  readonly known: boolean;
  /** TLS has begun (the client spoke). */
  started: boolean;
  readonly evict: () => void;
}

interface SourceState {
  bucket: TokenBucket;
  handshakes: number;
}

/** Sources remembered as known; the oldest is forgotten first beyond this many. */
const MAX_KNOWN_SOURCES = 65_536;
/** A source stays known this long after its last authenticated device. */
const KNOWN_FOR_MS = 7 * 24 * 3600_000;

export class Admission {
  private readonly sources = new Map<string, SourceState>();
  /** Source → when a device last authenticated from it; insertion order is age order. */
  private readonly known = new Map<string, number>();
  /** Handshakes in progress by eviction class, each in age order (a Set iterates oldest first). */
  private readonly classes: Array<Set<Handshake>> = [new Set(), new Set(), new Set(), new Set()];
  private handshakes = 0;

  constructor(public limits: AdmissionLimits, private readonly now: () => number = Date.now) {}

  get inProgress(): number {
    return this.handshakes;
  }

  /**
   * Either admits (the handshake counts as in progress until released) or says why not. Admitting into a
   * full table evicts an older handshake first: its `evict` is called, and the caller should count it.
   */
  admit(source: string, evict: () => void): Handshake | Refusal {
    const now = this.now();
    let state = this.sources.get(source);
    if (!state) {
      state = { bucket: new TokenBucket(now, this.rate), handshakes: 0 };
      this.sources.set(source, state);
    }
    if (state.bucket.waitMs(now, this.rate) > 0) return 'rateLimited';
    if (state.handshakes >= this.limits.maxHandshakesPerSource) return 'tooManyFromSource';
    const known = this.isKnown(source, now);
    if (this.handshakes >= this.limits.maxHandshakes) {
      const victim = this.oldestEvictable(known);
      if (!victim) return 'tooManyHandshakes';
      this.release(victim);
      victim.evict();
    }
    state.bucket.take(now, this.rate);
    state.handshakes++;
    this.handshakes++;
    const handshake: Handshake = { source, known, started: false, evict };
    this.classOf(handshake).add(handshake);
    return handshake;
  }

  /** The client has begun TLS: its handshake is no longer among the first to go. */
  started(handshake: Handshake): void {
    const from = this.classOf(handshake);
    if (handshake.started || !from.delete(handshake)) return;
    handshake.started = true;
    this.classOf(handshake).add(handshake);
  }

  /** The handshake ended, whichever way; releasing twice is harmless. */
  release(handshake: Handshake): void {
    if (!this.classOf(handshake).delete(handshake)) return;
    this.handshakes--;
    const state = this.sources.get(handshake.source);
    if (state && state.handshakes > 0) state.handshakes--;
  }

  /** A device authenticated from `source`: its later handshakes are protected from eviction by strangers. */
  authenticated(source: string): void {
    this.known.delete(source);
    this.known.set(source, this.now());
    if (this.known.size > MAX_KNOWN_SOURCES) this.known.delete(this.known.keys().next().value as string);
  }

  /** Forgets sources with a full bucket and nothing in progress, and known sources gone stale. */
  sweep(): void {
    const now = this.now();
    for (const [source, state] of this.sources) {
      if (state.handshakes === 0 && state.bucket.isFull(now, this.rate)) this.sources.delete(source);
    }
    for (const [source, at] of this.known) {
      if (now - at < KNOWN_FOR_MS) break;
      this.known.delete(source);
    }
  }

  get trackedSources(): number {
    return this.sources.size;
  }

  private get rate(): Rate {
    return { perSecond: this.limits.connectionsPerSecond, burst: this.limits.connectionBurst };
  }

  private isKnown(source: string, now: number): boolean {
    const at = this.known.get(source);
    return at !== undefined && now - at < KNOWN_FOR_MS;
  }

  private classOf(handshake: Handshake): Set<Handshake> {
    return this.classes[(handshake.known ? 2 : 0) + (handshake.started ? 1 : 0)]!;
  }

  private oldestEvictable(newcomerKnown: boolean): Handshake | undefined {
    for (let i = 0; i < (newcomerKnown ? 4 : 2); i++) {
      const oldest = this.classes[i]!.values().next();
      if (!oldest.done) return oldest.value;
    }
    return undefined;
  }
}
