import { intToIpv4, ipv4ToInt, isValidDeviceId, type Subnet } from '@mnedc/protocol';

/**
 * Virtual IP leases keyed by device ID. Pure: no clock, no files; the server persists `toJSON()`.
 *
 * Address plan: the network and broadcast addresses are never leased, the first host address is the
 * server's, everything else is the pool. Allocation is O(1) amortised even at a /16: a bitmap of used
 * addresses and a cursor that moves forward, so a fresh device never scans the whole pool.
 *
 * A device keeps its address while the server knows it, connected or not. Only when the pool has no free
 * address may a new device take one that is in use, and only from a device that is offline and whose lease
 * has expired (last seen longer ago than the lease lifetime), the one offline longest first. Otherwise
 * anyone with the join string could evict every offline device by minting device IDs.
 */
export interface Lease {
  deviceId: string;
  ip: number;
  hostname: string;
  underlay: string[];
  /** Epoch ms. */
  createdAt: number;
  /** Epoch ms when the device was last connected (updated on connect and disconnect). */
  lastSeen: number;
}

export type AcquireResult =
  | { ok: true; lease: Lease; reclaimedFrom?: Lease; isNew: boolean }
  /**
   * `unavailable`: the store cannot decide now (a cluster's etcd unreachable, or its table still being
   * read); the device should retry, after `retryAfterMs` when given.
   */
  | { ok: false; reason: string; unavailable?: boolean; retryAfterMs?: number };

export interface AcquireRequest {
  deviceId: string;
  hostname: string;
  underlay: string[];
  requestedIp?: number;
  now: number;
  /** Whether a device currently has a session; its lease can never be reclaimed. */
  isConnected: (deviceId: string) => boolean;
  /** How long after it was last seen an offline device's address may go to another device (default 30 days). */
  leaseLifetimeMs?: number;
}

const DAY_MS = 86_400_000;
export const DEFAULT_LEASE_LIFETIME_MS = 30 * DAY_MS;

export const LEASE_FILE_VERSION = 1;

export class CorruptLeaseFile extends Error {}

export class LeasePool {
  readonly serverIp: number;
  readonly firstHost: number;
  readonly capacity: number;
  private readonly used: Uint8Array;
  private cursor = 0;
  private readonly byDeviceId = new Map<string, Lease>();
  private readonly byAddress = new Map<number, Lease>();

  constructor(readonly subnet: Subnet) {
    const hosts = subnet.broadcast - subnet.network - 1;
    if (hosts < 2) throw new Error(`subnet /${subnet.prefix} has no room for a server and a client`);
    this.serverIp = subnet.network + 1;
    this.firstHost = subnet.network + 2;
    this.capacity = hosts - 1;
    this.used = new Uint8Array(this.capacity);
  }

  get size(): number {
    return this.byDeviceId.size;
  }

  get(deviceId: string): Lease | undefined {
    return this.byDeviceId.get(deviceId);
  }

  /** The lease holding an address. */
  holder(ip: number): Lease | undefined {
    return this.byAddress.get(ip);
  }

  leases(): IterableIterator<Lease> {
    return this.byDeviceId.values();
  }

  isLeasable(ip: number): boolean {
    return ip >= this.firstHost && ip < this.firstHost + this.capacity;
  }

  acquire(request: AcquireRequest): AcquireResult {
    const existing = this.byDeviceId.get(request.deviceId);
    if (existing) {
      existing.hostname = request.hostname;
      existing.underlay = request.underlay;
      return { ok: true, lease: existing, isNew: false };
    }
    const wanted = request.requestedIp;
    let ip: number | undefined;
    if (wanted !== undefined && this.isLeasable(wanted) && !this.used[wanted - this.firstHost]) ip = wanted;
    ip ??= this.nextFree();
    let reclaimedFrom: Lease | undefined;
    if (ip === undefined) {
      const lifetime = request.leaseLifetimeMs ?? DEFAULT_LEASE_LIFETIME_MS;
      if (!(lifetime >= 0)) throw new RangeError(`lease lifetime ${lifetime} ms is not a duration`);
      const scan = this.longestExpired(request.isConnected, request.now - lifetime);
      reclaimedFrom = scan.expired;
      if (!reclaimedFrom) {
        return {
          ok: false,
          reason: `address pool full: all ${this.capacity} addresses of ${intToIpv4(this.subnet.network)}/${this.subnet.prefix} ` +
            `belong to devices within their lease lifetime of ${showDuration(lifetime)} (${scan.connected} connected, ` +
            `${this.byDeviceId.size - scan.connected} offline but seen since); use a larger subnet, or free the addresses of ` +
            'devices gone for good with "mnedcctl release ID" or "mnedcctl forget ID"',
        };
      }
      this.release(reclaimedFrom.deviceId);
      ip = reclaimedFrom.ip;
    }
    const lease: Lease = {
      deviceId: request.deviceId,
      ip,
      hostname: request.hostname,
      underlay: request.underlay,
      createdAt: request.now,
      lastSeen: request.now,
    };
    this.insert(lease);
    return reclaimedFrom ? { ok: true, lease, reclaimedFrom, isNew: true } : { ok: true, lease, isNew: true };
  }

  release(deviceId: string): Lease | undefined {
    const lease = this.byDeviceId.get(deviceId);
    if (!lease) return undefined;
    this.byDeviceId.delete(deviceId);
    this.byAddress.delete(lease.ip);
    this.used[lease.ip - this.firstHost] = 0;
    return lease;
  }

  /**
   * Records a lease decided elsewhere (a cluster's shared store): it replaces the device's lease here, and
   * whoever held that address here loses it (returned). False when the address is not this pool's to lease.
   */
  adopt(lease: Lease): { adopted: boolean; displaced?: Lease } {
    if (!this.isLeasable(lease.ip)) return { adopted: false };
    this.release(lease.deviceId);
    const holder = this.byAddress.get(lease.ip);
    if (holder) this.release(holder.deviceId);
    this.insert(lease);
    return holder ? { adopted: true, displaced: holder } : { adopted: true };
  }

  touch(deviceId: string, now: number): void {
    const lease = this.byDeviceId.get(deviceId);
    if (lease) lease.lastSeen = now;
  }

  private insert(lease: Lease): void {
    this.byDeviceId.set(lease.deviceId, lease);
    this.byAddress.set(lease.ip, lease);
    this.used[lease.ip - this.firstHost] = 1;
  }

  private nextFree(): number | undefined {
    if (this.byAddress.size >= this.capacity) return undefined;
    for (let scanned = 0; scanned < this.capacity; scanned++) {
      const index = this.cursor;
      this.cursor = index + 1 === this.capacity ? 0 : index + 1;
      if (!this.used[index]) return this.firstHost + index;
    }
    return undefined;
  }

  /**
   * The offline device last seen longest ago, if that was before `seenBefore` (its lease expired).
   * Linear, but only runs when the pool is exhausted, which is rare and already a slow path.
   */
  private longestExpired(isConnected: (deviceId: string) => boolean, seenBefore: number): { expired?: Lease; connected: number } {
    let oldest: Lease | undefined;
    let connected = 0;
    for (const lease of this.byDeviceId.values()) {
      if (isConnected(lease.deviceId)) connected++;
      else if (!oldest || lease.lastSeen < oldest.lastSeen) oldest = lease;
    }
    return oldest && oldest.lastSeen < seenBefore ? { expired: oldest, connected } : { connected };
  }

  toJSON(): LeaseFile {
    return {
      version: LEASE_FILE_VERSION,
      subnet: `${intToIpv4(this.subnet.network)}/${this.subnet.prefix}`,
      leases: [...this.byDeviceId.values()].map((l) => ({ ...l, ip: intToIpv4(l.ip) })),
    };
  }

  /**
   * Restores leases saved by toJSON. A file that cannot be trusted is an error, never a silent reset,
   * because handing out addresses from an empty table would give two devices the same IP.
   * Leases outside the (possibly changed) subnet are returned as dropped so the caller can log them.
   */
  static restore(subnet: Subnet, text: string): { pool: LeasePool; dropped: Lease[] } {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new CorruptLeaseFile(`not valid JSON (${(err as Error).message})`);
    }
    const file = data as Partial<LeaseFile> | null;
    if (typeof file !== 'object' || file === null || file.version !== LEASE_FILE_VERSION || !Array.isArray(file.leases)) {
      throw new CorruptLeaseFile(`not a version ${LEASE_FILE_VERSION} lease file`);
    }
    const seen = new Set<string>();
    return LeasePool.fromLeases(subnet, file.leases.map((stored, index) => {
      const lease = checkStoredLease(stored, `lease ${index}`);
      if (seen.has(lease.deviceId)) throw new CorruptLeaseFile(`lease ${index}: device ${lease.deviceId} appears twice`);
      seen.add(lease.deviceId);
      return lease;
    }));
  }

  /** A pool of checked leases (each device once); two on one address are an error, as in restore. */
  static fromLeases(subnet: Subnet, leases: Iterable<Lease>): { pool: LeasePool; dropped: Lease[] } {
    const pool = new LeasePool(subnet);
    const dropped: Lease[] = [];
    for (const lease of leases) {
      if (!pool.isLeasable(lease.ip)) {
        dropped.push(lease);
        continue;
      }
      const holder = pool.byAddress.get(lease.ip);
      if (holder) throw new CorruptLeaseFile(`${intToIpv4(lease.ip)} is leased twice (to ${holder.deviceId} and ${lease.deviceId})`);
      pool.insert(lease);
    }
    return { pool, dropped };
  }
}

export interface StoredLease extends Omit<Lease, 'ip'> {
  ip: string;
}

export interface LeaseFile {
  version: number;
  subnet: string;
  leases: StoredLease[];
}

/** A stored lease checked and parsed; `label` names it in the error ("lease 3", "lease of dev-a"). */
export function checkStoredLease(value: unknown, label: string): Lease {
  const s = value as Partial<StoredLease> | null;
  const problem = (what: string) => new CorruptLeaseFile(`${label}: ${what}`);
  if (typeof s !== 'object' || s === null) throw problem('not an object');
  if (typeof s.deviceId !== 'string' || !isValidDeviceId(s.deviceId)) throw problem('bad deviceId');
  let ip: number;
  try {
    ip = ipv4ToInt(String(s.ip));
  } catch {
    throw problem(`bad ip ${JSON.stringify(s.ip)}`);
  }
  if (!Number.isFinite(s.createdAt) || !Number.isFinite(s.lastSeen)) throw problem('bad timestamps');
  return {
    deviceId: s.deviceId,
    ip,
    hostname: typeof s.hostname === 'string' ? s.hostname : '',
    underlay: Array.isArray(s.underlay) ? s.underlay.filter((a): a is string => typeof a === 'string') : [],
    createdAt: s.createdAt!,
    lastSeen: s.lastSeen!,
  };
}

/** "30 days", "12 hours", "90 seconds": a lifetime as an operator would say it. */
function showDuration(ms: number): string {
  const units: Array<[number, string]> = [[DAY_MS, 'day'], [3_600_000, 'hour'], [60_000, 'minute'], [1000, 'second']];
  for (const [size, name] of units) {
    const n = Number((ms / size).toFixed(1));
    if (ms >= size) return `${n} ${name}${n === 1 ? '' : 's'}`;
  }
  return `${ms} ms`;
}
