import { MULTICAST_GROUPS, type MulticastGroup } from '@mnedc/protocol';

/** What became of the multicast and broadcast packets of one group; `mnedcctl stats` shows them. */
export interface GroupCounters {
  /** Packets taken in for fan-out: from devices of this relay and from peer relays. */
  received: number;
  /** Copies delivered, to devices and to peer relays. */
  delivered: number;
  /** A sender over its rate. */
  rateLimited: number;
  /** The same datagram again from another sender within the window: a reflector's echo. */
  duplicate: number;
  /** A receiver (device or peer relay) with no room for the copy. */
  queueFull: number;
}

export type MulticastCounters = Record<MulticastGroup, GroupCounters>;

export function newMulticastCounters(): MulticastCounters {
  const counters = {} as MulticastCounters;
  for (const group of MULTICAST_GROUPS) counters[group] = { received: 0, delivered: 0, rateLimited: 0, duplicate: 0, queueFull: 0 };
  return counters;
}

export interface MulticastLimits {
  /** Packets per second each sending device may have fanned out, all groups together. */
  perDeviceRate: number;
  /** How many it may send at once after a quiet spell. */
  perDeviceBurst: number;
  /**
   * Copies per second this relay makes at most, all senders together: each packet is a copy to every other
   * device, so what devices may send shrinks with the square of their number. Each device's share is an
   * equal part of it, so a flooder cannot take the others' (fairShare).
   */
  copiesPerSecond: number;
  /** How long a datagram is remembered to recognise its reflection. */
  echoWindowMs: number;
}

export const DEFAULT_MULTICAST_LIMITS: MulticastLimits = { perDeviceRate: 50, perDeviceBurst: 100, copiesPerSecond: 50_000, echoWindowMs: 1000 };

/** Senders and datagrams remembered at most: bounds what a flood of distinct sources or payloads can make the relay hold. */
const MAX_SENDERS = 65_536;
const MAX_DIGESTS = 16_384;

interface Bucket {
  tokens: number;
  at: number;
}

interface Seen {
  /** The first sender of the datagram: never an echo of it. */
  owner: number;
  /** The last time the datagram was fanned out, from anyone. */
  lastAt: number;
  /** The owner keeps it until this long after its own last send. */
  ownedUntil: number;
}

/**
 * How long a datagram stays its first sender's. Were it the last sender's, a device that heard another's
 * periodic packet could send it again each half second and have the other's own copies dropped as echoes.
 */
const OWNER_MS = 60_000;

/** What a packet costs: the copies it makes here, and how many devices of the network share the budget. */
export interface FanOutCost {
  copies: number;
  senders: number;
}

export type Admission = 'ok' | 'rateLimited' | 'duplicate';

/**
 * A device's rate and burst, in packets, when each packet makes `copies` copies here and `senders` devices
 * share the relay's copies: the configured ones, or its equal share of copiesPerSecond when that is less
 * (never under one packet of burst).
 */
export function fairShare(limits: MulticastLimits, cost: FanOutCost): { rate: number; burst: number } {
  const share = limits.copiesPerSecond / (Math.max(1, cost.copies) * Math.max(1, cost.senders, cost.copies));
  return { rate: Math.min(limits.perDeviceRate, share), burst: Math.max(1, Math.min(limits.perDeviceBurst, share)) };
}

/**
 * The admission of a packet to fan-out, no I/O, time given by the caller. Each source address has a
 * token bucket (a device's rate holds whichever relay it sent through), and the relay one of copies. A
 * datagram sent by another device than its first sender within the echo window of its last sending is a
 * reflection (an avahi reflector, a device echoing what it hears): every device already had it, so the
 * echo is dropped, which is what stops a loop between reflectors. Its first sender repeating it (mDNS
 * probes, announcements, periodic SSDP) is never an echo.
 */
export class MulticastAdmission {
  private readonly buckets = new Map<number, Bucket>();
  private readonly seen = new Map<number, Seen>();
  private copyTokens: number;
  private copiesAt = 0;

  constructor(private readonly limits: MulticastLimits) {
    this.copyTokens = limits.copiesPerSecond;
  }

  admit(source: number, digest: number, now: number, cost: FanOutCost = { copies: 1, senders: 1 }): Admission {
    let seen = this.seen.get(digest);
    if (seen !== undefined && seen.ownedUntil <= now) seen = undefined;
    if (seen !== undefined && seen.owner !== source && now - seen.lastAt < this.limits.echoWindowMs) return 'duplicate';
    const { rate, burst } = fairShare(this.limits, cost);
    if (!this.take(source, now, rate, burst) || !this.takeCopies(now, cost.copies)) return 'rateLimited';
    // Re-inserted, so the front of the map holds what was sent longest ago: evicted first.
    this.seen.delete(digest);
    if (seen === undefined) {
      if (this.seen.size >= MAX_DIGESTS) this.seen.delete(this.seen.keys().next().value!);
      seen = { owner: source, lastAt: now, ownedUntil: now + OWNER_MS };
    } else {
      seen.lastAt = now;
      if (seen.owner === source) seen.ownedUntil = now + OWNER_MS;
    }
    this.seen.set(digest, seen);
    return 'ok';
  }

  /** The relay's whole budget, a second's worth at most: what all senders' bursts together may cost. */
  private takeCopies(now: number, copies: number): boolean {
    const { copiesPerSecond } = this.limits;
    this.copyTokens = Math.min(copiesPerSecond, this.copyTokens + ((now - this.copiesAt) * copiesPerSecond) / 1000);
    this.copiesAt = now;
    if (this.copyTokens < copies) return false;
    this.copyTokens -= copies;
    return true;
  }

  private take(source: number, now: number, rate: number, burst: number): boolean {
    let bucket = this.buckets.get(source);
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_SENDERS) this.forgetIdle(now);
      bucket = { tokens: burst, at: now };
      this.buckets.set(source, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) * rate) / 1000);
      bucket.at = now;
      // Refreshed senders go to the back, so the front holds the longest idle.
      this.buckets.delete(source);
      this.buckets.set(source, bucket);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens--;
    return true;
  }

  /** Buckets idle long enough to be full again are no different from new ones; when none is, the longest idle goes. */
  private forgetIdle(now: number): void {
    const { perDeviceRate, perDeviceBurst } = this.limits;
    const refillMs = (perDeviceBurst / perDeviceRate) * 1000;
    for (const [source, bucket] of this.buckets) {
      if (now - bucket.at < refillMs) break;
      this.buckets.delete(source);
    }
    if (this.buckets.size >= MAX_SENDERS) this.buckets.delete(this.buckets.keys().next().value!);
  }

  /** Senders and datagrams held now (for tests and stats). */
  get held(): { senders: number; digests: number } {
    return { senders: this.buckets.size, digests: this.seen.size };
  }
}
