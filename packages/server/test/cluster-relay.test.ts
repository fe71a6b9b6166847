/**
 * Three real relays (in this process, no TUN) sharing one real etcd: 300 devices joining all three at
 * once get 300 distinct addresses, as etcd and the WELCOMEs both show, and every device gets its address
 * back after every relay restarts. A relay whose etcd is unreachable tells joining devices to retry.
 *
 * The relays share one identity and join secret here (copied state files): how a cluster proves it is one
 * network to its devices is a later part of issue 16.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { EtcdClient, EtcdCluster } from '@mnedc/etcd';
import { ipPacket, WireClient } from '@mnedc/lab';
import { intToIpv4 } from '@mnedc/protocol';
import { parseServerConfig, RelayServer } from '../src';
import { serverMethods } from '../src/control-api';
import { until } from './until';

const log = pino({ level: 'silent' });
const DEVICES = 300;
/** Each device's key, kept over the restart: a new key for an ID is another device, and refused. */
const keys = Array.from({ length: DEVICES }, () => generateKeyPairSync('ed25519').privateKey);

function config(stateDir: string, etcd: string[], network = 'test-net'): string {
  return `[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${stateDir}\nsubnet = 10.20.0.0/22\n` +
    '[limits]\nconnections_per_source_per_second = 100000\nconnection_burst_per_source = 100000\nmax_handshakes_per_source = 100000\n' +
    'new_devices_per_minute = 100000\nnew_device_burst = 100000\n' +
    `[cluster]\netcd = ${etcd.join(', ')}\nnetwork = ${network}\n`;
}

describe('a cluster of relays on etcd', () => {
  let cluster: EtcdCluster;
  const dirs: string[] = [];
  let servers: RelayServer[] = [];
  const clients: WireClient[] = [];

  before(async () => {
    cluster = await EtcdCluster.start();
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop()));
    await cluster?.stop();
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  /** Three relays on one state each, the second and third with the first's identity and secret. */
  async function startRelays(endpoints: string[]): Promise<Array<{ server: RelayServer; port: number }>> {
    if (dirs.length === 0) {
      for (let i = 0; i < 3; i++) dirs.push(mkdtempSync(join(tmpdir(), `mnedc-cluster-${i}-`)));
    }
    const relays = [];
    for (const [i, dir] of dirs.entries()) {
      const server = new RelayServer({ config: parseServerConfig(config(dir, endpoints), 'test.ini'), log, serverDeviceId: `relay-${i}` });
      if (i === 0 && readdirSync(dirs[1]!).length === 0) {
        for (const file of readdirSync(dir)) for (const other of dirs.slice(1)) copyFileSync(join(dir, file), join(other, file));
      }
      const { port } = await server.start();
      relays.push({ server, port });
    }
    servers = relays.map((r) => r.server);
    await Promise.all(servers.map((s) => s.cluster!.leases.ready));
    return relays;
  }

  async function joinAll(relays: Array<{ server: RelayServer; port: number }>, joinString: string): Promise<Map<string, string>> {
    const ips = new Map<string, string>();
    await Promise.all(Array.from({ length: DEVICES }, async (_, i) => {
      const id = `dev-${i}`;
      const client = await WireClient.join(relays[i % 3]!.port, joinString, id, {}, keys[i]);
      clients.push(client);
      assert.ok(client.welcome, `${id}: ${JSON.stringify(client.reject)}`);
      ips.set(id, client.welcome.ip);
    }));
    return ips;
  }

  it('300 devices joining three relays at once get 300 addresses, in etcd as on the wire, and keep them over a restart of every relay', async () => {
    let relays = await startRelays(cluster.endpoints);
    const joinString = relays[0]!.server.joinString;
    const first = await joinAll(relays, joinString);
    assert.equal(new Set(first.values()).size, DEVICES, 'no address given twice on the wire');

    const reader = new EtcdClient({ endpoints: cluster.endpoints });
    try {
      const guards = (await reader.list('/mnedc/test-net/addresses/')).kvs;
      assert.equal(guards.length, DEVICES);
      for (const kv of guards) assert.equal(first.get(kv.value), kv.key.slice('/mnedc/test-net/addresses/'.length), kv.key);
      assert.equal((await reader.list('/mnedc/test-net/bindings/')).kvs.length, DEVICES);
    } finally {
      reader.close();
    }

    // Every relay knows the three relays and which device is on which.
    const placed = (relay: RelayServer, shift: number) => Array.from({ length: DEVICES }, (_, i) => i)
      .every((i) => relay.cluster!.registry!.relayOf(`dev-${i}`) === `relay-${(i + shift) % 3}`);
    await until(() => servers.every((s) => s.cluster!.registry!.relays().length === 3 && placed(s, 0)), 'every relay sees every device\'s relay');
    const view = await clusterView(servers[1]!);
    assert.deepEqual([view.network, view.relay, view.stateReadable, view.etcd?.reachable, view.etcd?.version], ['test-net', 'relay-1', true, true, '3.4.23']);
    assert.deepEqual(view.relays.map((r) => [r.id, r.devices, r.self]).sort(), [['relay-0', 100, false], ['relay-1', 100, true], ['relay-2', 100, false]]);

    clients.splice(0).forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop()));
    relays = await startRelays(cluster.endpoints);
    // Each device now joins another relay than before: its address is the cluster's, not a relay's.
    const again = new Map<string, string>();
    const byId = new Map<string, WireClient>();
    await Promise.all(Array.from({ length: DEVICES }, async (_, i) => {
      const client = await WireClient.join(relays[(i + 1) % 3]!.port, joinString, `dev-${i}`, {}, keys[i]);
      clients.push(client);
      byId.set(`dev-${i}`, client);
      assert.ok(client.welcome, `dev-${i}: ${JSON.stringify(client.reject)}`);
      again.set(`dev-${i}`, client.welcome.ip);
    }));
    assert.deepEqual(again, first);
    await until(() => servers.every((s) => placed(s, 1)), 'the registries follow the move');
    const stranger = await WireClient.join(relays[2]!.port, joinString, 'dev-0');
    clients.push(stranger);
    assert.equal(stranger.reject?.code, 'auth', 'another key for a bound ID is refused by any relay');

    assert.equal(servers.reduce((n, s) => n + s.leases.size, 0), 3 * DEVICES, 'every relay knows every lease');

    // Released on relay 2 while connected to relay 1: relay 1 disconnects it, and nobody keeps the address.
    const victim = byId.get('dev-0')!;
    servers[2]!.release('dev-0');
    await victim.until(() => victim.closed, 'dev-0 disconnected by its relay');
    assert.equal(servers[1]!.session('dev-0'), undefined);
  });

  it('a relay that cannot read the cluster\'s state tells a joining device to retry, and counts it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnedc-cluster-blind-'));
    dirs.push(dir);
    const server = new RelayServer({ config: parseServerConfig(config(dir, ['http://127.0.0.1:9']), 'test.ini'), log, serverDeviceId: 'relay-blind' });
    servers.push(server);
    const { port } = await server.start();
    const client = await WireClient.join(port, server.joinString, 'early');
    clients.push(client);
    assert.equal(client.welcome, null);
    assert.equal(client.reject?.code, 'busy');
    assert.match(String(client.reject?.reason), /etcd unreachable/);
    assert.ok(Number(client.reject?.retryAfterMs) >= 15_000);
    assert.equal(server.refused.clusterUnavailable, 1);
    const view = await clusterView(server);
    assert.deepEqual([view.stateReadable, view.etcd?.reachable], [false, false]);
    assert.match(view.etcd!.error, /ECONNREFUSED|unavailable/);
    assert.equal(intToIpv4(server.serverIp), '10.20.0.1');
  });

  it('etcd: one member lost changes nothing; all lost, connected devices go on and a new one is told to retry; back, it joins', async () => {
    const three = await EtcdCluster.start({ members: 3 });
    try {
      const dir = mkdtempSync(join(tmpdir(), 'mnedc-outage-'));
      dirs.push(dir);
      const server = new RelayServer({ config: parseServerConfig(config(dir, three.endpoints, 'outage-net'), 'test.ini'), log, serverDeviceId: 'relay-o' });
      servers.push(server);
      const { port } = await server.start();
      await until(() => server.cluster!.available, 'the shared state read');
      const joinString = server.joinString;
      const device = async (id: string) => {
        const client = await WireClient.join(port, joinString, id);
        clients.push(client);
        return client;
      };
      const [a, b] = [await device('out-a'), await device('out-b')];
      const delivered = async (what: string) => {
        const before = b.data.length;
        a.send(ipPacket(a.ip, b.ip, what));
        await until(() => b.data.slice(before).some((frame) => frame.includes(what)), `${what} at b`);
      };

      await three.members[0]!.kill();
      assert.ok((await device('one-member-lost')).welcome, 'a member lost changes nothing');

      await Promise.all(three.members.map((m) => m.kill()));
      await delivered('while etcd is down');
      const refused = await device('during-outage');
      assert.equal(refused.reject?.code, 'busy');
      assert.equal(refused.reject?.reason, 'the cluster\'s shared state cannot be written now; retry later', 'no etcd address told to a device');
      assert.ok(Number(refused.reject?.retryAfterMs) >= 15_000);
      assert.ok(server.refused.clusterUnavailable >= 1);

      for (const m of three.members) m.start('existing');
      await Promise.all(three.members.map((m) => m.ready()));
      const after = await device('during-outage');
      assert.ok(after.welcome, JSON.stringify(after.reject));
      await delivered('after the outage');
    } finally {
      await three.stop();
    }
  });

  it('a single relay grows into a cluster: its devices keep their addresses and keys on either relay, and a release is not undone by a restart', async () => {
    const single = mkdtempSync(join(tmpdir(), 'mnedc-grow-a-'));
    const added = mkdtempSync(join(tmpdir(), 'mnedc-grow-b-'));
    dirs.push(single, added);
    const singleConfig = `[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${single}\nsubnet = 10.20.0.0/22\n`;
    const alone = new RelayServer({ config: parseServerConfig(singleConfig, 'test.ini'), log, serverDeviceId: 'relay-alone' });
    const { port: alonePort } = await alone.start();
    const joinString = alone.joinString;
    const ids = ['grow-0', 'grow-1', 'grow-2', 'grow-3'];
    const before = new Map<string, string>();
    for (const [i, id] of ids.entries()) {
      // Spread out, as addresses given over time are: not simply the first four.
      if (i > 0) alone.leases.acquire({ deviceId: `gap-${i}`, hostname: '', underlay: [], now: Date.now(), isConnected: () => false });
      const c = await WireClient.join(alonePort, joinString, id, {}, keys[i]);
      before.set(id, c.welcome!.ip);
      c.close();
    }
    await alone.stop();

    for (const file of ['server.key', 'server.crt']) copyFileSync(join(single, file), join(added, file));
    const start = async (dir: string, id: string) => {
      const server = new RelayServer({ config: parseServerConfig(config(dir, cluster.endpoints, 'grow-net'), 'test.ini'), log, serverDeviceId: id });
      servers.push(server);
      const { port } = await server.start();
      await until(() => server.cluster!.available, `${id} ready`);
      return { server, port };
    };
    const a = await start(single, 'relay-grown');
    const b = await start(added, 'relay-added');
    await until(() => b.server.leases.size === ids.length + 3, 'b sees the moved leases');
    for (const [i, id] of ids.entries()) {
      const c = await WireClient.join((i % 2 ? a : b).port, joinString, id, {}, keys[i]);
      clients.push(c);
      assert.equal(c.welcome?.ip, before.get(id), `${id} keeps its address`);
    }
    const impostor = await WireClient.join(b.port, joinString, 'grow-0');
    clients.push(impostor);
    assert.equal(impostor.reject?.code, 'auth', 'the moved binding holds on the other relay');

    b.server.release('grow-3');
    await b.server.leases.pending('grow-3');
    await a.server.stop();
    const again = await start(single, 'relay-grown');
    assert.equal(again.server.leases.get('grow-3'), undefined, 'imported once: the release stands');
  });

  it('one join secret for the cluster: a relay takes it from etcd, and a rotation on one relay reaches all', async () => {
    const own = [0, 1].map((i) => mkdtempSync(join(tmpdir(), `mnedc-secret-${i}-`)));
    dirs.push(...own);
    const start = async (dir: string, id: string) => {
      const server = new RelayServer({ config: parseServerConfig(config(dir, cluster.endpoints, 'secret-net'), 'test.ini'), log, serverDeviceId: id });
      servers.push(server);
      return { server, port: (await server.start()).port };
    };
    const a = await start(own[0]!, 'relay-a');
    await until(async () => (await secretInEtcd()) !== undefined, 'a\'s secret in etcd');
    // b has the same identity but a join secret of its own, as a relay set up before it joined would.
    for (const file of ['server.key', 'server.crt']) copyFileSync(join(own[0]!, file), join(own[1]!, file));
    const b = await start(own[1]!, 'relay-b');
    await until(() => b.server.joinString === a.server.joinString, 'b takes the cluster\'s secret');
    assert.equal(readFileSync(join(own[1]!, 'join.secret'), 'utf8'), readFileSync(join(own[0]!, 'join.secret'), 'utf8'), 'and keeps it for a start without etcd');
    const before = a.server.joinString;
    const rotated = await b.server.rotateJoin();
    await until(() => a.server.joinString === rotated, 'a follows the rotation');
    const fresh = await WireClient.join(a.port, rotated, 'after-rotation');
    clients.push(fresh);
    assert.ok(fresh.welcome, JSON.stringify(fresh.reject));
    const stale = await WireClient.join(a.port, before, 'stale-string');
    clients.push(stale);
    assert.equal(stale.reject?.code, 'auth');

    async function secretInEtcd(): Promise<string | undefined> {
      const reader = new EtcdClient({ endpoints: cluster.endpoints });
      try {
        return (await reader.get('/mnedc/secret-net/secrets/join'))?.value;
      } finally {
        reader.close();
      }
    }
  });
});

/** What `mnedcctl cluster` gets from a relay. */
function clusterView(server: RelayServer) {
  return serverMethods(server, () => parseServerConfig('', 't.ini'), 'test').cluster(undefined, undefined as never);
}
