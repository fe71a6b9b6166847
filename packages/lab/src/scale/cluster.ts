/**
 * `bench:scale --relays N`: N real relays of one cluster in the bench's namespace, on one real etcd member
 * there. The first holds the network key; the others get keys of their own and are endorsed with it
 * (mnedcd-server --endorse, as an operator does), so devices join any of them with one join string.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { EtcdCluster } from '@mnedc/etcd';
import { runCommand } from '../lab';
import { SERVER_BIN } from '../relay-process';
import { ScaleRelay } from './relay';

export interface ScaleRelays {
  relays: ScaleRelay[];
  etcd: EtcdCluster | null;
  stop(): Promise<void>;
}

const ETCD_URL = 'http://127.0.0.1:2379';

async function cli(args: string[]): Promise<string> {
  const result = await runCommand(process.execPath, [SERVER_BIN, ...args], 30_000);
  if (result.code !== 0) throw new Error(`mnedcd-server ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout;
}

export async function startRelays(devices: number, count: number): Promise<ScaleRelays> {
  if (count === 1) {
    const relay = await ScaleRelay.create(devices);
    return { relays: [relay], etcd: null, stop: async () => relay.destroySync() };
  }
  const cluster = { etcd: [ETCD_URL], network: 'scale' };
  // The first relay starts before etcd answers (it waits for it, as after a reboot); etcd lives in its namespace.
  const first = await ScaleRelay.create(devices, { cluster });
  const relays = [first];
  let etcd: EtcdCluster | null = null;
  try {
    etcd = await EtcdCluster.start({
      hosts: ['127.0.0.1'],
      wrap: (argv) => ['ip', 'netns', 'exec', first.ns, ...argv],
      health: async () => (await runCommand('ip', ['netns', 'exec', first.ns, 'etcdctl', '--endpoints', ETCD_URL, '--command-timeout=1s', 'endpoint', 'health'], 5_000)).code === 0,
    });
    for (let i = 1; i < count; i++) {
      relays.push(await ScaleRelay.create(devices, {
        beside: first, cluster,
        prepare: async (relay) => {
          // Its own key and certificate (--print-join creates them), endorsed by the first relay's key.
          await cli(['--config', relay.config, '--print-join']);
          const endorsement = await cli(['--config', first.config, '--endorse', path.join(relay.stateDir, 'server.crt'), '--relay-id', `scale-relay-${i}`]);
          writeFileSync(path.join(relay.stateDir, 'network.endorsement'), endorsement);
          copyFileSync(path.join(first.stateDir, 'join.secret'), path.join(relay.stateDir, 'join.secret'));
        },
      }));
    }
  } catch (error) {
    await etcd?.stop();
    relays.reverse().forEach((r) => r.destroySync());
    throw error;
  }
  return {
    relays, etcd,
    stop: async () => {
      for (const relay of relays.slice(1)) relay.destroySync();
      await etcd?.stop();
      first.destroySync();
    },
  };
}
