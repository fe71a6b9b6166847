/**
 * Leases and key bindings shared by relays through a real etcd (a member on loopback): racing relays never
 * give one address twice or bind one device ID to two keys, a device racing itself on two relays gets one
 * lease, releases, forgets and restarts are seen by all, and a relay that cannot read the tables says so
 * instead of guessing.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { EtcdClient, EtcdCluster } from '@mnedc/etcd';
import { intToIpv4, ipv4ToInt, parseSubnet, showFingerprint } from '@mnedc/protocol';
import { randomBytes } from 'node:crypto';
import { ClusterBindings } from '../src/cluster/bindings';
import { ClusterKeys } from '../src/cluster/keys';
import { ClusterLeases } from '../src/cluster/leases';
import type { Lease } from '../src/stores/lease-pool';
import { until } from './until';

const log = pino({ level: 'silent' });
const SUBNET = parseSubnet('10.9.0.0/26');

/** What the handshake does: acquire, wait until etcd has it, and acquire again if it changed meanwhile. */
async function join(leases: ClusterLeases, deviceId: string, requestedIp?: number): Promise<Lease> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const result = leases.acquire({ deviceId, hostname: `${deviceId}.lan`, underlay: [], requestedIp, now: Date.now(), isConnected: () => false });
    assert.ok(result.ok, result.ok ? '' : result.reason);
    await leases.pending(deviceId);
    if (leases.get(deviceId) === result.lease) return result.lease;
  }
  throw new Error(`${deviceId}: no stable lease in 50 attempts`);
}


describe('cluster leases in etcd', () => {
  let cluster: EtcdCluster;
  const clients: EtcdClient[] = [];
  const relays: ClusterLeases[] = [];
  let network = 0;
  const bindingStores: ClusterBindings[] = [];

  before(async () => {
    cluster = await EtcdCluster.start();
  });
  after(async () => {
    await Promise.all([...relays, ...bindingStores].map((r) => r.close()));
    clients.forEach((c) => c.close());
    await cluster?.stop();
  });

  /** `count` relays of a fresh network, each with its own client, once they have read the table. */
  async function relaysOf(count: number, keys = new ClusterKeys(`net${++network}`), subnet = '10.9.0.0/26'): Promise<{ keys: ClusterKeys; leases: ClusterLeases[] }> {
    const leases: ClusterLeases[] = [];
    for (let i = 0; i < count; i++) {
      const client = new EtcdClient({ endpoints: cluster.endpoints });
      clients.push(client);
      const relay = new ClusterLeases(client, keys, parseSubnet(subnet), log);
      relays.push(relay);
      leases.push(relay);
    }
    await Promise.all(leases.map((l) => l.ready));
    return { keys, leases };
  }

  it('two relays allocating at once for 60 devices never give an address twice, in etcd or in memory', async () => {
    const { keys, leases: [a, b] } = await relaysOf(2);
    const devices = Array.from({ length: 60 }, (_, i) => `dev-${i}`);
    const got = await Promise.all(devices.map((id, i) => join(i % 2 ? b! : a!, id)));
    assert.equal(new Set(got.map((l) => l.ip)).size, 60, 'sixty distinct addresses');
    const reader = clients[0]!;
    const stored = (await reader.list(keys.leases)).kvs.map((kv) => (JSON.parse(kv.value) as { ip: string }).ip);
    assert.equal(stored.length, 60);
    assert.equal(new Set(stored).size, 60);
    const guards = (await reader.list(`${keys.root}addresses/`)).kvs;
    assert.deepEqual(guards.map((kv) => kv.key.slice(keys.root.length + 'addresses/'.length)).sort(), [...stored].sort());
    for (const [i, lease] of got.entries()) {
      assert.equal(intToIpv4(lease.ip), stored.find((ip) => ip === intToIpv4(lease.ip)));
      assert.equal(guards.find((kv) => kv.key.endsWith(`/${intToIpv4(lease.ip)}`))!.value, devices[i]);
    }
    await until(() => a!.size === 60 && b!.size === 60, 'both tables complete');
    for (const id of devices) assert.equal(a!.get(id)!.ip, b!.get(id)!.ip, id);
  });

  it('a device joining two relays at once gets one lease, the same on both', async () => {
    const { leases: [a, b] } = await relaysOf(2);
    for (let i = 0; i < 10; i++) {
      const [onA, onB] = await Promise.all([join(a!, `twin-${i}`), join(b!, `twin-${i}`)]);
      assert.equal(onA.ip, onB.ip, `twin-${i}`);
    }
  });

  it('a release on one relay frees the address everywhere; a restarted relay reads every lease back', async () => {
    const { keys, leases: [a, b] } = await relaysOf(2);
    const kept = await join(a!, 'kept');
    const gone = await join(a!, 'gone');
    await until(() => b!.get('gone')?.ip === gone.ip, 'b sees gone');
    assert.equal(a!.release('gone')?.ip, gone.ip);
    await a!.pending('gone');
    await until(() => b!.get('gone') === undefined, 'b sees the release');
    const taker = await join(b!, 'taker', gone.ip);
    assert.equal(taker.ip, gone.ip, 'the freed address can be had');
    const { leases: [restarted] } = await relaysOf(1, keys);
    assert.deepEqual([restarted!.get('kept')?.ip, restarted!.get('gone'), restarted!.get('taker')?.ip], [kept.ip, undefined, taker.ip]);
  });

  it('records when a device was last seen, at most hourly, over the record as read', async () => {
    const { keys, leases: [a] } = await relaysOf(1);
    await join(a!, 'seen');
    const later = Date.now() + 2 * 3_600_000;
    a!.touch('seen', later);
    const reader = clients[0]!;
    const storedSeen = async () => (JSON.parse((await reader.get(keys.lease('seen')))!.value) as { lastSeen: number }).lastSeen;
    await until(async () => (await storedSeen()) === later, 'lastSeen in etcd');
    a!.touch('seen', later + 60_000);
    assert.equal(await storedSeen(), later, 'not again within the hour');
  });

  it('a release right after the device\'s lastSeen was written stays released', async () => {
    const { keys, leases: [a, b] } = await relaysOf(2);
    for (let i = 0; i < 10; i++) {
      const id = `late-${i}`;
      await join(a!, id);
      a!.touch(id, Date.now() + 2 * 3_600_000);
      a!.release(id);
      await a!.pending(id);
      assert.equal(await clients[0]!.get(keys.lease(id)), undefined, `${id} released in etcd`);
    }
    await until(() => [...b!.leases()].every((l) => !l.deviceId.startsWith('late-')), 'b sees every release');
  });

  it('never reclaims the address of a device connected to another relay, however long ago it was seen', async () => {
    const { leases: [a] } = await relaysOf(1, undefined, '10.9.1.0/29');
    a!.attachedAnywhere = (id) => id === 'on-b';
    await join(a!, 'on-b');
    for (const id of ['x1', 'x2', 'x3', 'x4']) await join(a!, id);
    const later = Date.now() + 40 * 86_400_000;
    const result = a!.acquire({ deviceId: 'newcomer', hostname: '', underlay: [], now: later, isConnected: () => false });
    assert.ok(result.ok && result.reclaimedFrom, 'the pool is full: an expired lease is reclaimed');
    assert.notEqual(result.reclaimedFrom.deviceId, 'on-b');
    await a!.pending('newcomer');
    assert.ok(a!.get('on-b'));
  });

  it('never loops on reclaiming an address known only by its guard (no lease record to take over)', async () => {
    const keys = new ClusterKeys(`net${++network}`);
    const writer = new EtcdClient({ endpoints: cluster.endpoints });
    clients.push(writer);
    await writer.put(keys.address('10.9.2.2'), 'ghost');
    const { leases: [a] } = await relaysOf(1, keys, '10.9.2.0/29');
    // Asking for the ghost's address: the guard refuses it, and the relay learns who holds it.
    await join(a!, 'asker', ipv4ToInt('10.9.2.2'));
    assert.equal(a!.get('ghost')?.ip, ipv4ToInt('10.9.2.2'));
    for (const id of ['f1', 'f2', 'f3']) await join(a!, id);
    a!.attachedAnywhere = (id) => id !== 'ghost';
    const result = a!.acquire({ deviceId: 'newcomer', hostname: '', underlay: [], now: Date.now() + 40 * 86_400_000, isConnected: () => false });
    assert.equal(result.ok, false);
    assert.ok(!result.ok && result.unavailable, 'told to retry, not turned away as pool-full for good');
    assert.equal(a!.get('ghost')?.ip, ipv4ToInt('10.9.2.2'), 'the ghost keeps its address');
    assert.equal(a!.get('newcomer'), undefined);
  });

  it('gives no lease while the table cannot be read, saying why', async () => {
    const client = new EtcdClient({ endpoints: ['http://127.0.0.1:9'], timeoutMs: 500 });
    clients.push(client);
    const blind = new ClusterLeases(client, new ClusterKeys('blind'), SUBNET, log, { minRetryMs: 100, maxRetryMs: 200 });
    relays.push(blind);
    const ask = () => blind.acquire({ deviceId: 'x', hostname: '', underlay: [], now: Date.now(), isConnected: () => false });
    // Just started: still reading, back in moments.
    assert.deepEqual(ask(), { ok: false, reason: 'the cluster\'s leases are still being read (the relay just started)', unavailable: true, retryAfterMs: 2000 });
    // Once reading failed: etcd is out of reach, and the device waits the longer default.
    await until(() => (ask() as { reason: string }).reason.includes('etcd unreachable'), 'the first read failed');
    assert.deepEqual(ask(), { ok: false, reason: 'the cluster\'s leases are not readable yet (etcd unreachable)', unavailable: true });
    assert.equal(blind.available, false);
  });

  async function bindingsOf(count: number, keys = new ClusterKeys(`net${++network}`)): Promise<{ keys: ClusterKeys; stores: ClusterBindings[] }> {
    const stores = Array.from({ length: count }, () => {
      const client = new EtcdClient({ endpoints: cluster.endpoints });
      clients.push(client);
      const store = new ClusterBindings(client, keys, log);
      bindingStores.push(store);
      return store;
    });
    await Promise.all(stores.map((s) => s.ready));
    return { keys, stores };
  }

  it('binds a device ID to one key only, whichever relays race for it, and every relay agrees', async () => {
    const { keys, stores: [a, b] } = await bindingsOf(2);
    for (let i = 0; i < 10; i++) {
      const [keyA, keyB] = [showFingerprint(randomBytes(32)), showFingerprint(randomBytes(32))];
      await Promise.all([a!.bind(`dev-${i}`, keyA), b!.bind(`dev-${i}`, keyB)]);
      const stored = (await clients[0]!.get(keys.binding(`dev-${i}`)))!.value;
      assert.ok(stored === keyA || stored === keyB);
      assert.equal(a!.get(`dev-${i}`), stored, `a agrees on dev-${i}`);
      assert.equal(b!.get(`dev-${i}`), stored, `b agrees on dev-${i}`);
    }
  });

  it('a forget on one relay reaches the others; a restarted relay reads the bindings back', async () => {
    const { keys, stores: [a, b] } = await bindingsOf(2);
    const kept = showFingerprint(randomBytes(32));
    await a!.bind('kept', kept);
    await a!.bind('gone', showFingerprint(randomBytes(32)));
    await until(() => b!.get('gone') !== undefined, 'b sees gone');
    assert.equal(await b!.forget('gone'), true);
    await until(() => a!.get('gone') === undefined, 'a sees the forget');
    const { stores: [restarted] } = await bindingsOf(1, keys);
    assert.deepEqual([restarted!.get('kept'), restarted!.get('gone'), restarted!.size], [kept, undefined, 1]);
  });

  it('binds nothing while the bindings cannot be read', async () => {
    const client = new EtcdClient({ endpoints: ['http://127.0.0.1:9'], timeoutMs: 500 });
    clients.push(client);
    const blind = new ClusterBindings(client, new ClusterKeys('blind'), log, { minRetryMs: 100, maxRetryMs: 200 });
    bindingStores.push(blind);
    await assert.rejects(blind.bind('x', showFingerprint(randomBytes(32))), /not readable yet \(etcd unreachable\)/);
    assert.equal(blind.get('x'), undefined);
  });
});

describe('cluster leases, three members', () => {
  let cluster: EtcdCluster;
  before(async () => {
    cluster = await EtcdCluster.start({ members: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  it('a release this relay\'s watch missed (its member hung, the history compacted) is seen on the re-list: the device connected here is told', async () => {
    const keys = new ClusterKeys('hung');
    // The member to hang is a follower: with the leader hung, the release itself would wait for an election.
    const follower = await followerOf(cluster);
    const others = cluster.endpoints.filter((e) => e !== follower);
    const client = new EtcdClient({ endpoints: [follower, ...others], timeoutMs: 1_000 });
    const writer = new EtcdClient({ endpoints: others });
    const here = new ClusterLeases(client, keys, SUBNET, log, { quietMs: 1_000 });
    const there = new ClusterLeases(writer, keys, SUBNET, log);
    const lost: string[] = [];
    here.onLost = (deviceId, why) => lost.push(`${deviceId} ${why}`);
    try {
      await Promise.all([here.ready, there.ready]);
      const victim = await join(there, 'victim');
      await until(() => here.get('victim')?.ip === victim.ip, 'here reads the lease');
      const silent = cluster.members.find((member) => member.clientUrl === follower)!;
      silent.signal('SIGSTOP');
      try {
        there.release('victim');
        await there.pending('victim');
        await writer.compact((await writer.status()).revision);
        await until(() => here.get('victim') === undefined, 'here re-lists, on another member', 20_000);
      } finally {
        silent.signal('SIGCONT');
      }
      assert.deepEqual(lost, ['victim was released']);
    } finally {
      await Promise.all([here.close(), there.close()]);
      client.close();
      writer.close();
    }
  });
});

/** The client URL of a member that is not the raft leader now. */
async function followerOf(cluster: EtcdCluster): Promise<string> {
  for (const endpoint of cluster.endpoints) {
    const probe = new EtcdClient({ endpoints: [endpoint] });
    try {
      const status = await probe.call('/v3/maintenance/status', {});
      if ((status.header as { member_id?: string } | undefined)?.member_id !== status.leader) return endpoint;
    } finally {
      probe.close();
    }
  }
  throw new Error('no follower among the members');
}
