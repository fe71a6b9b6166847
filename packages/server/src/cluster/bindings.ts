import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { type EtcdClient, type KeyValue, PrefixWatch, type WatchEvent } from '@mnedc/etcd';
import { isFingerprintText } from '@mnedc/protocol';
import { StoreUnavailableError, type BindingStore } from '../stores/services';
import type { ClusterKeys } from './keys';

/**
 * Device ID → key fingerprint, shared by the relays of a cluster in etcd. Mirrored in memory by a watch;
 * a first binding is a create-if-absent transaction, so of two relays binding one ID to two keys at once
 * exactly one key wins everywhere. `bind` resolves once etcd has the winner, and the loser's handshake
 * then finds the ID bound to another key and turns its device away, as a single relay does.
 */
export class ClusterBindings implements BindingStore {
  private readonly table = new Map<string, string>();
  private readonly writes = new Map<string, Promise<void>>();
  private readonly watch: PrefixWatch;
  private readonly warnings: RateLimitedWarning;
  private loaded = false;
  private firstLoad: () => void = () => {};
  readonly ready: Promise<void>;
  /** A binding of this relay's table was forgotten or changed by another relay: a device connected here with it must go. */
  onLost: (deviceId: string, why: string) => void = () => {};

  constructor(private readonly client: EtcdClient, private readonly keys: ClusterKeys, private readonly log: Logger,
    watchOptions: ConstructorParameters<typeof PrefixWatch>[3] = {}) {
    this.warnings = new RateLimitedWarning(log);
    this.ready = new Promise((resolve) => { this.firstLoad = resolve; });
    this.watch = new PrefixWatch(client, keys.bindings, {
      reset: (kvs) => this.reset(kvs),
      events: (events) => this.apply(events),
      state: (live, err) => {
        if (!live) this.warnings.warn('watch', () => ({ fields: { err }, message: `Lost the watch on the cluster's key bindings (${err?.message ?? 'no reason'}); retrying` }));
      },
    }, watchOptions);
  }

  get size(): number {
    return this.table.size;
  }

  /** Whether the bindings have been read: until then no device can be checked, and none is admitted. */
  get available(): boolean {
    return this.loaded;
  }

  get(deviceId: string): string | undefined {
    return this.table.get(deviceId);
  }

  bind(deviceId: string, fingerprint: string): Promise<void> {
    if (!this.loaded) return Promise.reject(new StoreUnavailableError('the cluster\'s key bindings are not readable yet (etcd unreachable)'));
    this.table.set(deviceId, fingerprint);
    const key = this.keys.binding(deviceId);
    const write = this.client.txn([{ key, target: 'CREATE', result: 'EQUAL', value: 0 }], [{ put: { key, value: fingerprint } }], [{ get: { key } }])
      .then((result) => {
        if (result.succeeded) return;
        const first = result.results[0];
        const winner = first && 'get' in first ? first.get.kvs[0] : undefined;
        // Bound meanwhile (by another relay, or by this one before an answer got lost): the stored key rules.
        if (winner && isFingerprintText(winner.value)) this.table.set(deviceId, winner.value);
        else if (this.table.get(deviceId) === fingerprint) this.table.delete(deviceId);
      }, (err: Error) => {
        if (this.table.get(deviceId) === fingerprint) this.table.delete(deviceId);
        throw new StoreUnavailableError(`etcd: ${err.message}`);
      })
      .finally(() => {
        if (this.writes.get(deviceId) === write) this.writes.delete(deviceId);
      });
    this.writes.set(deviceId, write);
    return write;
  }

  pending(deviceId: string): Promise<void> | undefined {
    return this.writes.get(deviceId);
  }

  async forget(deviceId: string): Promise<boolean> {
    const had = this.table.delete(deviceId);
    const deleted = await this.client.delete(this.keys.binding(deviceId));
    return had || deleted > 0;
  }

  async close(): Promise<void> {
    this.watch.close();
    await Promise.allSettled([...this.writes.values()]);
  }

  private reset(kvs: KeyValue[]): void {
    const pending = new Map([...this.writes.keys()].map((id) => [id, this.table.get(id)]));
    this.table.clear();
    for (const kv of kvs) this.adopt(kv);
    // A binding proposed here and not yet answered stays until its answer says otherwise.
    for (const [id, fingerprint] of pending) if (fingerprint && !this.table.has(id)) this.table.set(id, fingerprint);
    if (!this.loaded) {
      this.loaded = true;
      this.log.info({ bindings: this.table.size }, `Read ${this.table.size} key bindings of the cluster from etcd`);
      this.firstLoad();
    }
  }

  private apply(events: WatchEvent[]): void {
    for (const { type, kv } of events) {
      if (type === 'put') {
        this.adopt(kv);
        continue;
      }
      const deviceId = this.keys.deviceIdOf(this.keys.bindings, kv.key);
      if (deviceId !== null && !this.writes.has(deviceId) && this.table.delete(deviceId)) this.onLost(deviceId, 'was forgotten');
    }
  }

  private adopt(kv: KeyValue): void {
    const deviceId = this.keys.deviceIdOf(this.keys.bindings, kv.key);
    if (deviceId === null || !isFingerprintText(kv.value)) {
      this.warnings.warn('record', () => ({ fields: { key: kv.key }, message: `Ignored ${kv.key} in etcd: not a device ID bound to a key fingerprint` }));
      return;
    }
    const before = this.table.get(deviceId);
    this.table.set(deviceId, kv.value);
    if (before !== undefined && before !== kv.value) this.onLost(deviceId, 'is bound to another key now');
  }
}
