import { EventEmitter } from 'node:events';
import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { type EtcdClient, type KeyValue, type Op, PrefixWatch, type WatchEvent } from '@mnedc/etcd';
import { isValidDeviceId } from '@mnedc/protocol';
import type { ClusterKeys } from './keys';

/** What a relay tells the others about itself (`relays/<id>`). */
export interface RelayRecord {
  id: string;
  /** host:port where devices and other relays reach it. */
  advertise: string;
  /** Epoch ms it started. */
  since: number;
  /** The SHA-256 fingerprint (base64url) of its TLS certificate: the only key its mesh links may use. */
  key?: string;
}

export interface RegistryOptions {
  /** The etcd lease's TTL: how long a relay that died without a word still looks alive. */
  ttlSeconds?: number;
  watch?: ConstructorParameters<typeof PrefixWatch>[3];
}

/** etcd takes at most 128 operations in one transaction (--max-txn-ops). */
const MAX_TXN_OPS = 128;

/**
 * Which relays are up and which device is on which relay. This relay's record and its devices'
 * `attach/<device-id>` keys hang on one etcd lease of its own (not one per device), kept alive at a third
 * of its TTL: when the relay dies they go with it, so its devices are free to be routed elsewhere. The
 * others' records and attachments are mirrored by watches.
 *
 * A lease found gone (kept alive to TTL 0: expired while etcd was unreachable, or revoked) is replaced,
 * and the record and every attachment put again. Attachments are written in batches.
 *
 * Events: 'relays' when the set of relays changes, 'attach' (deviceId, relayId | undefined) when a
 * device's relay changes, 'moved' (deviceId, relayId) when another relay took over one of this relay's
 * devices after this relay recorded it (its session here is a dead one: the device went elsewhere).
 */
export class RelayRegistry extends EventEmitter {
  private readonly others = new Map<string, RelayRecord>();
  private readonly attached = new Map<string, string>();
  /** This relay's devices, as they should be in etcd. */
  private readonly mine = new Set<string>();
  /** The etcd revision of this relay's last write of each of its devices' attachments. */
  private readonly written = new Map<string, number>();
  private readonly dirty = new Map<string, 'put' | 'delete'>();
  /** Changes of the transaction in flight. */
  private sending = new Set<string>();
  private lease: string | null = null;
  private readonly ttl: number;
  private keepalive: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  /** The last flush failed: the next waits a second instead of hammering an etcd that is not there. */
  private failedFlush = false;
  private readonly relaysWatch: PrefixWatch;
  private readonly attachWatch: PrefixWatch;
  private readonly warnings: RateLimitedWarning;
  private closed = false;

  constructor(private readonly client: EtcdClient, private readonly keys: ClusterKeys, readonly self: RelayRecord,
    private readonly log: Logger, options: RegistryOptions = {}) {
    super();
    this.ttl = options.ttlSeconds ?? 10;
    this.warnings = new RateLimitedWarning(log);
    this.relaysWatch = new PrefixWatch(client, keys.relays, {
      reset: (kvs) => this.resetRelays(kvs),
      events: (events) => this.applyRelays(events),
    }, options.watch);
    this.attachWatch = new PrefixWatch(client, keys.attachments, {
      reset: (kvs) => this.resetAttached(kvs),
      events: (events) => this.applyAttached(events),
    }, options.watch);
    void this.register();
  }

  /** Relays up now, this one included. */
  relays(): RelayRecord[] {
    return [this.self, ...this.others.values()];
  }

  /** The relay a device is on, as etcd says (this one's own devices included once written). */
  relayOf(deviceId: string): string | undefined {
    return this.mine.has(deviceId) ? this.self.id : this.attached.get(deviceId);
  }

  /**
   * About how many devices the network has on all relays, in constant time (for every multicast packet):
   * this relay's own may be counted twice once etcd has shown them back, which errs on the small side of a share.
   */
  get networkSize(): number {
    return this.mine.size + this.attached.size;
  }

  /** Devices per relay ID, this relay's own included. */
  deviceCounts(): Map<string, number> {
    const counts = new Map<string, number>([[this.self.id, this.mine.size]]);
    for (const relay of this.attached.values()) if (relay !== this.self.id) counts.set(relay, (counts.get(relay) ?? 0) + 1);
    return counts;
  }

  /** Whether this relay's registration is in etcd under a live lease. */
  get registered(): boolean {
    return this.lease !== null;
  }

  attach(deviceId: string): void {
    this.mine.add(deviceId);
    this.mark(deviceId, 'put');
  }

  detach(deviceId: string): void {
    if (!this.mine.delete(deviceId)) return;
    this.written.delete(deviceId);
    this.mark(deviceId, 'delete');
  }

  /** Resolves once every attach and detach so far is written (while registered; a failed write waits its retry). */
  async flushed(): Promise<void> {
    while (!this.closed && this.lease !== null && (this.dirty.size > 0 || this.flushing || this.flushTimer)) {
      if (this.flushing) await this.flushing;
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Stops, and revokes the lease so the others see this relay and its devices gone at once. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.keepalive) clearTimeout(this.keepalive);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.relaysWatch.close();
    this.attachWatch.close();
    await this.flushing?.catch(() => {});
    if (this.lease) await this.client.revokeLease(this.lease).catch(() => {});
  }

  /** As a crash would: no revoke; the others see this relay gone when its lease expires. */
  abandon(): void {
    this.closed = true;
    if (this.keepalive) clearTimeout(this.keepalive);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.relaysWatch.close();
    this.attachWatch.close();
  }

  /** A new lease, this relay's record and every attachment under it; retried until it works. */
  private async register(): Promise<void> {
    while (!this.closed) {
      try {
        const { id } = await this.client.grantLease(this.ttl);
        if (this.closed) {
          await this.client.revokeLease(id);
          return;
        }
        await this.client.put(this.keys.relay(this.self.id), JSON.stringify(this.self), { lease: id });
        this.lease = id;
        for (const deviceId of this.mine) this.dirty.set(deviceId, 'put');
        this.scheduleFlush(0);
        this.log.info({ relay: this.self.id, lease: id }, `Registered relay ${this.self.id} in the cluster (${this.self.advertise})`);
        this.scheduleKeepalive();
        return;
      } catch (err) {
        this.warnings.warn('register', () => ({ fields: { err }, message: `Cannot register this relay in etcd (${(err as Error).message}); retrying` }));
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  }

  private scheduleKeepalive(): void {
    this.keepalive = setTimeout(() => void this.renew(), (this.ttl * 1000) / 3);
  }

  private async renew(): Promise<void> {
    const lease = this.lease;
    if (this.closed || lease === null) return;
    try {
      if ((await this.client.keepAlive(lease)) > 0) {
        this.scheduleKeepalive();
        return;
      }
      // Gone (expired while etcd was out of reach, or revoked): everything under it went with it.
      this.log.warn({ lease }, `This relay's etcd lease ${lease} is gone; registering again`);
      this.lease = null;
      void this.register();
    } catch (err) {
      this.warnings.warn('keepalive', () => ({ fields: { err }, message: `Cannot keep this relay's etcd lease alive (${(err as Error).message}); retrying` }));
      this.scheduleKeepalive();
    }
  }

  private mark(deviceId: string, op: 'put' | 'delete'): void {
    this.dirty.set(deviceId, op);
    this.scheduleFlush(50);
  }

  private scheduleFlush(delayMs: number): void {
    if (this.flushTimer || this.flushing || this.closed) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flushing = this.flush().finally(() => {
        this.flushing = null;
        if (this.dirty.size > 0 && this.lease) this.scheduleFlush(this.failedFlush ? 1_000 : 0);
      });
    }, delayMs);
  }

  /** Writes up to MAX_TXN_OPS pending changes in one transaction (a delete only if the key is still ours). */
  private async flush(): Promise<void> {
    const lease = this.lease;
    if (lease === null) return;
    const batch = [...this.dirty].slice(0, MAX_TXN_OPS);
    for (const [deviceId] of batch) this.dirty.delete(deviceId);
    this.sending = new Set(batch.map(([deviceId]) => deviceId));
    const puts: Op[] = batch.filter(([, op]) => op === 'put').map(([id]) => ({ put: { key: this.keys.attachment(id), value: this.self.id, lease } }));
    const deletes = batch.filter(([, op]) => op === 'delete').map(([id]) => id);
    try {
      if (puts.length > 0) {
        const { revision } = await this.client.txn([], puts);
        for (const [deviceId, op] of batch) if (op === 'put' && this.mine.has(deviceId)) this.written.set(deviceId, revision);
      }
      // Each alone: another relay may have taken the device over meanwhile, and its key is not ours to delete.
      await Promise.all(deletes.map((id) => this.client.txn([{ key: this.keys.attachment(id), target: 'VALUE', result: 'EQUAL', value: this.self.id }],
        [{ delete: { key: this.keys.attachment(id) } }])));
      this.failedFlush = false;
    } catch (err) {
      this.failedFlush = true;
      for (const [deviceId, op] of batch) if (!this.dirty.has(deviceId)) this.dirty.set(deviceId, op);
      this.warnings.warn('flush', () => ({ fields: { err }, message: `Cannot record this relay's devices in etcd (${(err as Error).message}); retrying` }));
    } finally {
      this.sending = new Set();
    }
  }

  private resetRelays(kvs: KeyValue[]): void {
    this.others.clear();
    for (const kv of kvs) this.adoptRelay(kv);
    this.emit('relays');
  }

  private applyRelays(events: WatchEvent[]): void {
    for (const { type, kv } of events) {
      if (type === 'put') this.adoptRelay(kv);
      else this.others.delete(kv.key.slice(this.keys.relays.length));
    }
    this.emit('relays');
  }

  private adoptRelay(kv: KeyValue): void {
    const id = kv.key.slice(this.keys.relays.length);
    if (id === this.self.id) return;
    try {
      const record = JSON.parse(kv.value) as Partial<RelayRecord>;
      if (record.id !== id || typeof record.advertise !== 'string' || typeof record.since !== 'number') throw new Error('not a relay record');
      this.others.set(id, { id, advertise: record.advertise, since: record.since, ...(typeof record.key === 'string' ? { key: record.key } : {}) });
    } catch (err) {
      this.warnings.warn('relay-record', () => ({ fields: { key: kv.key }, message: `Ignored ${kv.key} in etcd: ${(err as Error).message}` }));
    }
  }

  private resetAttached(kvs: KeyValue[]): void {
    const before = new Map(this.attached);
    this.attached.clear();
    for (const kv of kvs) this.adoptAttached(kv);
    for (const [deviceId, relay] of this.attached) if (before.get(deviceId) !== relay) this.emit('attach', deviceId, relay);
    for (const deviceId of before.keys()) if (!this.attached.has(deviceId)) this.emit('attach', deviceId, undefined);
  }

  private applyAttached(events: WatchEvent[]): void {
    for (const { type, kv } of events) {
      const deviceId = kv.key.slice(this.keys.attachments.length);
      if (!isValidDeviceId(deviceId)) continue;
      if (type === 'put') {
        if (this.adoptAttached(kv)) this.emit('attach', deviceId, kv.value);
        // Written by another relay after this one's own write, and none of ours pending: the device left us.
        const ours = this.written.get(deviceId);
        if (kv.value !== this.self.id && this.mine.has(deviceId) && ours !== undefined && kv.modRevision > ours && !this.dirty.has(deviceId) && !this.sending.has(deviceId)) {
          this.emit('moved', deviceId, kv.value);
        }
      } else if (this.attached.delete(deviceId)) {
        this.emit('attach', deviceId, undefined);
      }
    }
  }

  private adoptAttached(kv: KeyValue): boolean {
    const deviceId = kv.key.slice(this.keys.attachments.length);
    if (!isValidDeviceId(deviceId) || kv.value === '') return false;
    this.attached.set(deviceId, kv.value);
    return true;
  }
}
