import { readFileSync } from 'node:fs';
import type { Logger } from '@mnedc/common';
import { EtcdClient, type EtcdOptions } from '@mnedc/etcd';
import type { ServerConfig } from '../config';
import type { JoinSecret } from '../stores/identity';
import { ClusterBindings } from './bindings';
import { importLocalState, readLocalStateOnce } from './import';
import { ClusterJoinSecret } from './join-secret';
import { ClusterKeys } from './keys';
import { ClusterLeases } from './leases';
import { RelayRegistry } from './registry';

/** A cluster setting the relay cannot start with: a file it names cannot be read. */
export class ClusterConfigError extends Error {}

function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ClusterConfigError(`[cluster] ${what}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** The client options [cluster] describes, its files read (a password file's trailing newline dropped). */
export function etcdOptions(cluster: ServerConfig['cluster']): EtcdOptions {
  const tls: NonNullable<EtcdOptions['tls']> = {};
  if (cluster.etcd_ca) tls.ca = readFile(cluster.etcd_ca, 'etcd_ca');
  if (cluster.etcd_cert) {
    tls.cert = readFile(cluster.etcd_cert, 'etcd_cert');
    tls.key = readFile(cluster.etcd_key, 'etcd_key');
  }
  return {
    endpoints: cluster.etcd,
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
    ...(cluster.etcd_user ? { auth: { user: cluster.etcd_user, password: readFile(cluster.etcd_password_file, 'etcd_password_file').replace(/\r?\n$/, '') } } : {}),
  };
}

/**
 * A relay's share of a cluster: the etcd client and the shared stores it reads and writes. The stores
 * start reading at once; the relay starts without waiting for them (etcd may be down: connected devices
 * are served regardless, and joins are refused with a retry hint until the tables are read).
 */
export class ClusterState {
  readonly client: EtcdClient;
  readonly keys: ClusterKeys;
  readonly leases: ClusterLeases;
  readonly bindings: ClusterBindings;
  readonly joinSecret: ClusterJoinSecret;
  /** Which relays are up and which device is on which; from `register`, once the relay listens. */
  registry: RelayRegistry | null = null;
  private closing = false;

  /** `localSecret`: this relay's join.secret, the cluster's first secret if it has none yet, kept in step after. */
  constructor(config: ServerConfig, private readonly log: Logger, localSecret: JoinSecret) {
    this.client = new EtcdClient(etcdOptions(config.cluster));
    this.keys = new ClusterKeys(config.cluster.network);
    this.leases = new ClusterLeases(this.client, this.keys, config.server.subnet, log);
    this.bindings = new ClusterBindings(this.client, this.keys, log);
    this.joinSecret = new ClusterJoinSecret(this.client, this.keys, localSecret, log);
  }

  /**
   * A single relay's own leases and bindings in `stateDir` go into etcd first (once, see import.ts): no
   * lease is given before, so its devices get their addresses back. Its files are read now (a corrupt
   * one stops the start); the writes are retried while etcd is unreachable.
   */
  importLocalState(stateDir: string, subnet: ServerConfig['server']['subnet']): Promise<void> {
    const local = readLocalStateOnce(stateDir, subnet, this.log);
    if (!local) return Promise.resolve();
    const done = (async () => {
      await Promise.all([this.leases.ready, this.bindings.ready]);
      for (let delayMs = 500; !this.closing; delayMs = Math.min(delayMs * 2, 10_000)) {
        try {
          await importLocalState(this, stateDir, local, this.log);
          return;
        } catch (err) {
          this.log.warn({ err }, `Could not move this relay's leases and bindings into etcd yet (${(err as Error).message}); retrying`);
          await new Promise((resolve) => setTimeout(resolve, delayMs));
        }
      }
    })();
    this.leases.holdUntil(done);
    return done;
  }

  /** Announces this relay (`advertise`: host:port; `key`: its certificate's fingerprint) and, from now on, its devices. */
  register(relayId: string, advertise: string, key: string): RelayRegistry {
    const registry = new RelayRegistry(this.client, this.keys, { id: relayId, advertise, since: Date.now(), key }, this.log);
    this.registry = registry;
    this.leases.attachedAnywhere = (deviceId) => registry.relayOf(deviceId) !== undefined;
    return registry;
  }

  /** Both tables read: new devices can be admitted. */
  get available(): boolean {
    return this.leases.available && this.bindings.available;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.joinSecret.close();
    await Promise.all([this.leases.close(), this.bindings.close(), this.registry?.close()]);
    this.client.close();
  }
}
