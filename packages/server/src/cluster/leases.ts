import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { type EtcdClient, type KeyValue, PrefixWatch, type WatchEvent } from '@mnedc/etcd';
import { intToIpv4 } from '@mnedc/protocol';
import type { Subnet } from '@mnedc/protocol';
import { checkStoredLease, LeasePool, type AcquireRequest, type AcquireResult, type Lease } from '../stores/lease-pool';
import { StoreUnavailableError, type LeaseService } from '../stores/services';
import type { ClusterKeys } from './keys';

/** A device told the relay is still reading the leases (it just started) tries again after this. */
const STARTING_RETRY_MS = 2_000;
/** lastSeen is written back at most this often per device: it only orders reclaims, which go by days. */
const SEEN_WRITE_MS = 3_600_000;

/**
 * Leases shared by the relays of a cluster, in etcd (keys.ts). Every relay keeps the whole table in
 * memory, followed by a watch, and allocates from it as a single relay does; a new lease is then
 * proposed to etcd with a create-if-absent transaction on both the lease and its address, and the device
 * is welcomed only once it is confirmed (`pending`, as for the file store). A relay that lost the race
 * learns the winner from the transaction's failure branch, and the handshake acquires again.
 *
 * While the table has not been read (etcd unreachable since start), acquire answers "unavailable" and the
 * device is told to retry; devices already connected are not affected.
 */
export class ClusterLeases implements LeaseService {
  private pool: LeasePool;
  /** The mod_revision of each device's record as last read: later writes compare against it. */
  private readonly revisions = new Map<string, number>();
  /** lastSeen as it stands in etcd. */
  private readonly writtenSeen = new Map<string, number>();
  /** Leases this relay proposed that etcd has not confirmed yet: they survive a re-list. */
  private readonly proposed = new Map<string, Lease>();
  private readonly writes = new Map<string, Promise<void>>();
  private readonly watch: PrefixWatch;
  private readonly warnings: RateLimitedWarning;
  private loaded = false;
  /** The watch failed since it was last live: etcd is out of reach, not merely being read. */
  private unreachable = false;
  /** No lease is given while something must come first (a single relay's own leases going into etcd). */
  private held = false;
  private firstLoad: () => void = () => {};
  /** Resolves once the table has been read the first time. */
  readonly ready: Promise<void>;
  /** lastSeen writes in flight: a release waits for its device's, so it compares against what that wrote. */
  private readonly touching = new Map<string, Promise<void>>();
  /** Whether a device is attached to some relay of the cluster (the registry): such a lease is never reclaimed. */
  attachedAnywhere: (deviceId: string) => boolean = () => false;
  /** A lease this relay had was released or moved by another relay: a device connected here with it must go. */
  onLost: (deviceId: string, why: string) => void = () => {};

  constructor(private readonly client: EtcdClient, private readonly keys: ClusterKeys, subnet: Subnet, private readonly log: Logger,
    watchOptions: ConstructorParameters<typeof PrefixWatch>[3] = {}) {
    this.pool = new LeasePool(subnet);
    this.warnings = new RateLimitedWarning(log);
    this.ready = new Promise((resolve) => { this.firstLoad = resolve; });
    this.watch = new PrefixWatch(client, keys.leases, {
      reset: (kvs) => this.reset(kvs),
      events: (events) => this.apply(events),
      state: (live, err) => {
        this.unreachable = !live;
        if (live) log.info(`Following the cluster's leases in etcd (${client.endpoint})`);
        else this.warnings.warn('watch', () => ({ fields: { err }, message: `Lost the watch on the cluster's leases (${err?.message ?? 'no reason'}); retrying` }));
      },
    }, watchOptions);
  }

  get serverIp(): number {
    return this.pool.serverIp;
  }

  get size(): number {
    return this.pool.size;
  }

  get capacity(): number {
    return this.pool.capacity;
  }

  /** Whether the table has been read (and nothing holds allocation back): until then no lease is given. */
  get available(): boolean {
    return this.loaded && !this.held;
  }

  /** Gives no lease until `first` settles. */
  holdUntil(first: Promise<unknown>): void {
    this.held = true;
    void first.finally(() => { this.held = false; });
  }

  leases(): Iterable<Lease> {
    return this.pool.leases();
  }

  get(deviceId: string): Lease | undefined {
    return this.pool.get(deviceId);
  }

  /** The device holding an address, as etcd says (the mesh routes by it). */
  holderOf(ip: number): string | undefined {
    return this.pool.holder(ip)?.deviceId;
  }

  acquire(request: AcquireRequest): AcquireResult {
    if (!this.available) {
      // Just started and reading: back in moments. etcd out of reach: a fleet must not spend the relay on TLS meanwhile.
      return this.unreachable
        ? { ok: false, reason: 'the cluster\'s leases are not readable yet (etcd unreachable)', unavailable: true }
        : { ok: false, reason: 'the cluster\'s leases are still being read (the relay just started)', unavailable: true, retryAfterMs: STARTING_RETRY_MS };
    }
    // Connected to another relay is connected: its address must not go to a newcomer, however old its lastSeen.
    const result = this.pool.acquire({ ...request, isConnected: (id) => request.isConnected(id) || this.attachedAnywhere(id) });
    if (!result.ok || !result.isNew) return result;
    const { lease } = result;
    if (result.reclaimedFrom && !this.revisions.has(result.reclaimedFrom.deviceId)) {
      // Only known as an address another relay holds, never read as a lease: no revision to take it over
      // by, and the transaction would fail each time. Put back; the device retries once the record is in.
      this.pool.release(lease.deviceId);
      this.pool.adopt(result.reclaimedFrom);
      return { ok: false, reason: `the address pool is full and the expired lease of ${result.reclaimedFrom.deviceId} is not readable yet`, unavailable: true };
    }
    this.proposed.set(lease.deviceId, lease);
    const write = this.propose(lease, result.reclaimedFrom).finally(() => {
      if (this.writes.get(lease.deviceId) === write) this.writes.delete(lease.deviceId);
    });
    this.writes.set(lease.deviceId, write);
    return result;
  }

  touch(deviceId: string, now: number): void {
    this.pool.touch(deviceId, now);
    const revision = this.revisions.get(deviceId);
    const lease = this.pool.get(deviceId);
    if (!lease || revision === undefined || now - (this.writtenSeen.get(deviceId) ?? 0) < SEEN_WRITE_MS) return;
    this.writtenSeen.set(deviceId, now);
    // Only over the record as last read: a lease released or changed meanwhile is not written back.
    const write = this.client.txn([{ key: this.keys.lease(deviceId), target: 'MOD', result: 'EQUAL', value: revision }],
      [{ put: { key: this.keys.lease(deviceId), value: encodeRecord(lease) } }]).then((r) => {
      if (r.succeeded && (this.revisions.get(deviceId) ?? 0) < r.revision) this.revisions.set(deviceId, r.revision);
    }, (err: Error) => {
      this.writtenSeen.delete(deviceId);
      this.log.debug({ err, deviceId }, `Could not record when ${deviceId} was last seen: ${err.message}`);
    }).finally(() => {
      if (this.touching.get(deviceId) === write) this.touching.delete(deviceId);
    });
    this.touching.set(deviceId, write);
  }

  pending(deviceId: string): Promise<void> | undefined {
    return this.writes.get(deviceId);
  }

  release(deviceId: string): Lease | undefined {
    const lease = this.pool.release(deviceId);
    if (!lease) return undefined;
    this.proposed.delete(deviceId);
    const ip = intToIpv4(lease.ip);
    // After the device's lastSeen write, if one is in flight (a release follows the kick that touched it).
    const write = (this.touching.get(deviceId) ?? Promise.resolve()).then(() => this.client.txn([
      { key: this.keys.address(ip), target: 'VALUE', result: 'EQUAL', value: deviceId },
      ...(this.revisions.has(deviceId) ? [{ key: this.keys.lease(deviceId), target: 'MOD' as const, result: 'EQUAL' as const, value: this.revisions.get(deviceId)! }] : []),
    ], [{ delete: { key: this.keys.address(ip) } }, { delete: { key: this.keys.lease(deviceId) } }])).then((r) => {
      if (!r.succeeded) this.log.warn({ deviceId, ip }, `Released ${deviceId} here, but its lease in etcd changed meanwhile (another relay); left as it is`);
    }).finally(() => {
      if (this.writes.get(deviceId) === write) this.writes.delete(deviceId);
    });
    this.writes.set(deviceId, write);
    write.catch((err: Error) => this.log.error({ err, deviceId }, `Could not release the lease of ${deviceId} in etcd: ${err.message}`));
    return lease;
  }

  async close(): Promise<void> {
    this.watch.close();
    await Promise.allSettled([...this.writes.values()]);
  }

  /**
   * Creates the lease and its address guard, only if neither exists (for a reclaim: only if the address
   * still belongs to the expired lease as read). Resolves once etcd has the lease, or once this relay knows
   * the winner when it lost (the handshake then finds the lease changed and acquires again); rejects when
   * etcd cannot be reached, and the device is told to retry.
   */
  private async propose(lease: Lease, reclaimedFrom?: Lease): Promise<void> {
    const { deviceId } = lease;
    const ip = intToIpv4(lease.ip);
    const reclaimedRevision = reclaimedFrom ? this.revisions.get(reclaimedFrom.deviceId) : undefined;
    try {
      const result = await this.client.txn([
        { key: this.keys.lease(deviceId), target: 'CREATE', result: 'EQUAL', value: 0 },
        ...(reclaimedFrom
          ? [{ key: this.keys.address(ip), target: 'VALUE' as const, result: 'EQUAL' as const, value: reclaimedFrom.deviceId },
            { key: this.keys.lease(reclaimedFrom.deviceId), target: 'MOD' as const, result: 'EQUAL' as const, value: reclaimedRevision ?? -1 }]
          : [{ key: this.keys.address(ip), target: 'CREATE' as const, result: 'EQUAL' as const, value: 0 }]),
      ], [
        ...(reclaimedFrom ? [{ delete: { key: this.keys.lease(reclaimedFrom.deviceId) } }] : []),
        { put: { key: this.keys.address(ip), value: deviceId } },
        { put: { key: this.keys.lease(deviceId), value: encodeRecord(lease) } },
      ], [{ get: { key: this.keys.lease(deviceId) } }, { get: { key: this.keys.address(ip) } }]);
      if (this.proposed.get(deviceId) === lease) this.proposed.delete(deviceId);
      if (result.succeeded) {
        if (!this.revisions.has(deviceId) || this.revisions.get(deviceId)! < result.revision) this.revisions.set(deviceId, result.revision);
        this.writtenSeen.set(deviceId, lease.lastSeen);
        return;
      }
      const [mine, guard] = result.results.map((r) => ('get' in r ? r.get.kvs[0] : undefined));
      // The device already has a lease: made by another relay, or by this one before an answer got lost.
      if (mine && this.adoptRecord(mine)) return;
      if (this.pool.get(deviceId) === lease) this.pool.release(deviceId);
      if (guard && guard.value !== deviceId) await this.learnHolder(guard.value, lease.ip);
    } catch (err) {
      if (this.proposed.get(deviceId) === lease) this.proposed.delete(deviceId);
      if (this.pool.get(deviceId) === lease) this.pool.release(deviceId);
      throw new StoreUnavailableError(`etcd: ${(err as Error).message}`);
    }
  }

  /** The address went to `holder` on another relay: its record, or at least the fact, so it is not picked again. */
  private async learnHolder(holder: string, ip: number): Promise<void> {
    const record = await this.client.get(this.keys.lease(holder));
    if (record && this.adoptRecord(record)) return;
    this.pool.adopt({ deviceId: holder, ip, hostname: '', underlay: [], createdAt: Date.now(), lastSeen: Date.now() });
  }

  /**
   * The whole table again (the first read, or the watch lost its place: compaction, cancel). What changed
   * meanwhile without an event is told as an event would have been: a device here whose lease was
   * released or moved elsewhere must not keep it.
   */
  private reset(kvs: KeyValue[]): void {
    const before = new Map([...this.pool.leases()].map((l) => [l.deviceId, l.ip]));
    this.pool = new LeasePool(this.pool.subnet);
    this.revisions.clear();
    this.writtenSeen.clear();
    for (const kv of kvs) this.adoptRecord(kv);
    for (const lease of this.proposed.values()) {
      if (this.pool.get(lease.deviceId) === undefined) this.pool.adopt(lease);
    }
    for (const [deviceId, ip] of before) {
      const now = this.pool.get(deviceId);
      if (!now) this.onLost(deviceId, 'was released');
      else if (now.ip !== ip) this.onLost(deviceId, `moved to ${intToIpv4(now.ip)}`);
    }
    if (!this.loaded) {
      this.loaded = true;
      this.log.info({ leases: this.pool.size }, `Read ${this.pool.size} leases of the cluster from etcd`);
      this.firstLoad();
    }
  }

  private apply(events: WatchEvent[]): void {
    for (const { type, kv } of events) {
      if (type === 'put') {
        this.adoptRecord(kv);
        continue;
      }
      const deviceId = this.keys.deviceIdOf(this.keys.leases, kv.key);
      // A proposal made after this delete was read must not be undone by it.
      if (deviceId === null || this.proposed.has(deviceId)) continue;
      this.revisions.delete(deviceId);
      this.writtenSeen.delete(deviceId);
      if (this.pool.release(deviceId)) this.onLost(deviceId, 'was released');
    }
  }

  /** A record read from etcd into the table; false for one that is not a lease of ours (logged). */
  private adoptRecord(kv: KeyValue): boolean {
    const deviceId = this.keys.deviceIdOf(this.keys.leases, kv.key);
    let lease: Lease;
    try {
      if (deviceId === null) throw new Error('not a device ID');
      lease = checkStoredLease({ ...(JSON.parse(kv.value) as object), deviceId }, `lease of ${deviceId}`);
    } catch (err) {
      this.warnings.warn('record', () => ({ fields: { key: kv.key }, message: `Ignored ${kv.key} in etcd: ${(err as Error).message}` }));
      return false;
    }
    // Never backwards: this relay's own write may have answered before the watch brings the older record.
    this.revisions.set(deviceId, Math.max(this.revisions.get(deviceId) ?? 0, kv.modRevision));
    this.writtenSeen.set(deviceId, Math.max(this.writtenSeen.get(deviceId) ?? 0, lease.lastSeen));
    const here = this.pool.get(deviceId);
    if (here && here.ip === lease.ip) {
      // The same lease: keep the object the handshake holds, and the later of the two lastSeen.
      here.hostname = lease.hostname;
      here.underlay = lease.underlay;
      here.createdAt = lease.createdAt;
      here.lastSeen = Math.max(here.lastSeen, lease.lastSeen);
      return true;
    }
    const { adopted, displaced } = this.pool.adopt(lease);
    if (here) this.onLost(deviceId, `moved to ${intToIpv4(lease.ip)}`);
    if (displaced && displaced.deviceId !== deviceId) this.onLost(displaced.deviceId, `address ${intToIpv4(lease.ip)} is ${deviceId}'s`);
    if (!adopted) this.warnings.warn('outside', () => ({ fields: { deviceId, ip: intToIpv4(lease.ip) }, message: `Ignored the lease of ${deviceId} in etcd: ${intToIpv4(lease.ip)} is outside this relay's subnet` }));
    return adopted;
  }
}

function encodeRecord(lease: Lease): string {
  const { ip, hostname, underlay, createdAt, lastSeen } = lease;
  return JSON.stringify({ ip: intToIpv4(ip), hostname, underlay, createdAt, lastSeen });
}
