import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { type EtcdClient, type KeyValue, PrefixWatch, type WatchEvent } from '@mnedc/etcd';
import { randomBytes } from 'node:crypto';
import { SECRET_BYTES } from '@mnedc/protocol';
import type { JoinSecret } from '../stores/identity';
import type { ClusterKeys } from './keys';

/**
 * The join secret of a cluster: one for every relay, in etcd (`secrets/join`), followed by a watch and
 * kept in each relay's own join.secret too, so a relay that starts while etcd is down still knows the
 * last one. The first relay of a network puts its own (create-if-absent), so a single relay that grows
 * into a cluster keeps its join strings working; a rotation on any relay reaches all of them.
 */
export class ClusterJoinSecret {
  private readonly watch: PrefixWatch;
  private readonly warnings: RateLimitedWarning;

  constructor(private readonly client: EtcdClient, private readonly keys: ClusterKeys, private readonly local: JoinSecret,
    private readonly log: Logger, watchOptions: ConstructorParameters<typeof PrefixWatch>[3] = {}) {
    this.warnings = new RateLimitedWarning(log);
    this.watch = new PrefixWatch(client, keys.secrets, {
      reset: (kvs) => this.reset(kvs),
      events: (events) => this.apply(events),
    }, watchOptions);
  }

  get current(): Buffer {
    return this.local.current;
  }

  /** A new secret for the whole cluster: in etcd first (a failure changes nothing), then here. */
  async rotate(): Promise<Buffer> {
    const secret = randomBytes(SECRET_BYTES);
    await this.client.put(this.keys.joinSecret, secret.toString('base64url'));
    this.local.adopt(secret);
    return secret;
  }

  close(): void {
    this.watch.close();
  }

  private reset(kvs: KeyValue[]): void {
    const stored = kvs.find((kv) => kv.key === this.keys.joinSecret);
    if (stored) {
      this.adopt(stored);
      return;
    }
    const key = this.keys.joinSecret;
    this.client.txn([{ key, target: 'CREATE', result: 'EQUAL', value: 0 }], [{ put: { key, value: this.local.current.toString('base64url') } }])
      .then((r) => { if (r.succeeded) this.log.info(`This relay's join secret is now the cluster's (${key})`); }, (err: Error) => {
        this.log.warn({ err }, `Could not store the join secret in etcd (${err.message}); retried at the next re-list`);
      });
  }

  private apply(events: WatchEvent[]): void {
    for (const { type, kv } of events) if (type === 'put' && kv.key === this.keys.joinSecret) this.adopt(kv);
  }

  private adopt(kv: KeyValue): void {
    const secret = Buffer.from(kv.value, 'base64url');
    if (secret.length !== SECRET_BYTES || secret.toString('base64url') !== kv.value) {
      this.warnings.warn('secret', () => ({ fields: { key: kv.key }, message: `Ignored ${kv.key} in etcd: not a join secret` }));
      return;
    }
    if (secret.equals(this.local.current)) return;
    this.local.adopt(secret);
    this.log.warn(`Took the cluster's join secret from etcd: join strings of this relay's earlier secret no longer admit devices`);
  }
}
