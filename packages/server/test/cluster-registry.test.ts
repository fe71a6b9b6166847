/**
 * The relay registry against a real etcd: relays see each other and each other's devices; a relay that
 * stops is gone at once, one that dies is gone when its lease expires, one whose lease vanished registers
 * again with all its devices; a device taken over by another relay is not deleted by the one it left.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { EtcdClient, EtcdCluster } from '@mnedc/etcd';
import { ClusterKeys } from '../src/cluster/keys';
import { RelayRegistry } from '../src/cluster/registry';
import { until } from './until';

const log = pino({ level: 'silent' });


describe('relay registry in etcd', () => {
  let cluster: EtcdCluster;
  const clients: EtcdClient[] = [];
  const registries: RelayRegistry[] = [];
  let network = 0;

  before(async () => {
    cluster = await EtcdCluster.start();
  });
  after(async () => {
    await Promise.all(registries.map((r) => r.close()));
    clients.forEach((c) => c.close());
    await cluster?.stop();
  });

  function relays(ids: string[], ttlSeconds = 10): { keys: ClusterKeys; registry: RelayRegistry[]; client: EtcdClient } {
    const keys = new ClusterKeys(`reg${++network}`);
    const registry = ids.map((id) => {
      const client = new EtcdClient({ endpoints: cluster.endpoints });
      clients.push(client);
      const r = new RelayRegistry(client, keys, { id, advertise: `${id}.lan:3334`, since: Date.now() }, log, { ttlSeconds });
      registries.push(r);
      return r;
    });
    return { keys, registry, client: clients[clients.length - 1]! };
  }

  it('relays see each other and where each device is; a detach is seen too', async () => {
    const { registry: [a, b] } = relays(['relay-a', 'relay-b']);
    await until(() => a!.relays().length === 2 && b!.relays().length === 2, 'both relays listed');
    assert.deepEqual(b!.relays().map((r) => r.advertise).sort(), ['relay-a.lan:3334', 'relay-b.lan:3334']);
    for (let i = 0; i < 200; i++) a!.attach(`dev-${i}`);
    await until(() => b!.relayOf('dev-199') === 'relay-a' && b!.relayOf('dev-0') === 'relay-a', 'b sees a\'s devices');
    a!.detach('dev-0');
    await until(() => b!.relayOf('dev-0') === undefined, 'b sees the detach');
  });

  it('a relay that stops is gone at once with its devices; one that dies, when its lease expires', async () => {
    const { registry: [a, b, c] } = relays(['relay-a', 'relay-b', 'relay-c'], 2);
    await until(() => c!.relays().length === 3, 'three relays');
    a!.attach('on-a');
    b!.attach('on-b');
    await until(() => c!.relayOf('on-a') === 'relay-a' && c!.relayOf('on-b') === 'relay-b', 'c sees both devices');
    await a!.close();
    await until(() => c!.relayOf('on-a') === undefined && !c!.relays().some((r) => r.id === 'relay-a'), 'a gone at once', 1_500);
    const died = Date.now();
    b!.abandon();
    await until(() => c!.relayOf('on-b') === undefined && !c!.relays().some((r) => r.id === 'relay-b'), 'b gone after its TTL', 10_000);
    assert.ok(Date.now() - died >= 1_000, 'not before its lease could expire');
  });

  it('registers again, devices and all, when its lease is gone', async () => {
    const { keys, registry: [a, b], client } = relays(['relay-a', 'relay-b'], 3);
    await until(() => a!.registered && b!.relays().length === 2, 'registered');
    a!.attach('kept');
    await until(() => b!.relayOf('kept') === 'relay-a', 'kept attached');
    const lease = (await client.get(keys.relay('relay-a')))!.lease;
    await client.revokeLease(lease);
    await until(() => b!.relayOf('kept') === undefined, 'the revoke seen');
    await until(() => b!.relayOf('kept') === 'relay-a' && b!.relays().length === 2, 'a back with its device', 10_000);
    assert.notEqual((await client.get(keys.relay('relay-a')))!.lease, lease);
  });

  it('a device that moved to another relay is not deleted by the relay it left', async () => {
    const { keys, registry: [a, b], client } = relays(['relay-a', 'relay-b']);
    a!.attach('mover');
    await until(async () => (await client.get(keys.attachment('mover')))?.value === 'relay-a', 'on a');
    b!.attach('mover');
    await until(async () => (await client.get(keys.attachment('mover')))?.value === 'relay-b', 'on b');
    a!.detach('mover');
    await a!.flushed();
    assert.equal((await client.get(keys.attachment('mover')))?.value, 'relay-b');
    assert.equal(a!.relayOf('mover'), 'relay-b');
  });
});
