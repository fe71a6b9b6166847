/**
 * The relay mesh (issue 16): three real relays in this process (no TUN) on one real etcd, two of them
 * with keys of their own endorsed by the first. Devices spread over them reach each other in one
 * relay↔relay hop; a relay of another network is refused a link; a relay that is gone is reported, and
 * packets for its devices are dropped and counted until they are on a relay that is linked again.
 */
import { strict as assert } from 'node:assert';
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { renderMetrics, type ServerStats } from '@mnedc/common';
import { EtcdCluster } from '@mnedc/etcd';
import { ipPacket, WireClient } from '@mnedc/lab';
import {
  encodeFrame, encodeJsonFrame, encodeMeshHello, EXPORTER_BYTES, EXPORTER_MESH_LABEL, FrameType, meshProof, parseEndorsement, type Endorsement,
} from '@mnedc/protocol';
import { endorseRelay, loadOrCreateIdentity, parseServerConfig, RelayServer } from '../src';
import { serverMethods } from '../src/control-api';
import { until } from './until';

const log = pino({ level: 'silent' });

function config(stateDir: string, etcd: string[], network: string, listen = '127.0.0.1:0'): string {
  return `[server]\nlisten = ${listen}\ninterface =\nstate_dir = ${stateDir}\nsubnet = 10.30.0.0/24\nkeepalive_ms = 500\ndead_after_ms = 2000\n` +
    `[cluster]\netcd = ${etcd.join(', ')}\nnetwork = ${network}\n`;
}

describe('the relay mesh', () => {
  let etcd: EtcdCluster;
  const dirs: string[] = [];
  const servers: RelayServer[] = [];
  const clients: WireClient[] = [];

  function dir(): string {
    const d = mkdtempSync(join(tmpdir(), 'mnedc-mesh-'));
    dirs.push(d);
    return d;
  }

  /** A relay of the network whose first relay keeps its state in `network`, endorsed as `relayId`. */
  function endorsed(network: string, relayId: string): string {
    loadOrCreateIdentity(network);
    const d = dir();
    const own = loadOrCreateIdentity(d).identity;
    writeFileSync(join(d, 'network.endorsement'), endorseRelay(network, own.certPem, relayId, 30, Date.now()));
    if (existsSync(join(network, 'join.secret'))) copyFileSync(join(network, 'join.secret'), join(d, 'join.secret'));
    return d;
  }

  async function relay(stateDir: string, network: string, deviceId: string, listen?: string): Promise<{ server: RelayServer; port: number }> {
    const server = new RelayServer({ config: parseServerConfig(config(stateDir, etcd.endpoints, network, listen), 'test.ini'), log, serverDeviceId: deviceId });
    servers.push(server);
    const { port } = await server.start();
    return { server, port };
  }

  before(async () => {
    etcd = await EtcdCluster.start();
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop()));
    await etcd?.stop();
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  const meshOf = async (server: RelayServer) => (await serverMethods(server, () => parseServerConfig('', 't.ini'), 'test').cluster(undefined, undefined as never)).relays;

  it('12 devices on 3 relays: every device reaches every other in one hop; links, traffic and a relay of another network show in the cluster view', async () => {
    const first = dir();
    const a = await relay(first, 'mesh-net', 'relay-a');
    // The first relay's identity files exist once it started: the others are endorsed by its key.
    const b = await relay(endorsed(first, 'relay-b'), 'mesh-net', 'unused-b');
    const c = await relay(endorsed(first, 'relay-c'), 'mesh-net', 'unused-c');
    const relays = [a, b, c];
    assert.deepEqual(relays.map((r) => r.server.relayId), ['relay-a', 'relay-b', 'relay-c'], 'an endorsed relay goes by the ID it is endorsed as');
    await until(async () => (await Promise.all(relays.map(async (r) => (await meshOf(r.server)).filter((p) => !p.self && p.link === 'up').length)))
      .every((n) => n === 2), 'every relay linked to the two others');

    const joinString = a.server.joinString;
    const devices = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
      const client = await WireClient.join(relays[i % 3]!.port, joinString, `mesh-${i}`);
      clients.push(client);
      assert.ok(client.welcome, `mesh-${i}: ${JSON.stringify(client.reject)}`);
      return client;
    }));
    await until(() => servers.every((s) => devices.every((_, i) => s.cluster!.registry!.relayOf(`mesh-${i}`) === `relay-${'abc'[i % 3]}`)),
      'every relay knows where every device is');

    // Discovery gives the same answer on every relay: each device's peer list holds all twelve, with their addresses.
    await until(() => devices.every((d) => devices.every((other, i) => d.peers.get(`mesh-${i}`)?.ip === other.welcome!.ip)),
      'every device lists every device of the cluster');

    for (const [i, from] of devices.entries()) {
      for (const [j, to] of devices.entries()) {
        if (i !== j) from.send(ipPacket(from.ip, to.ip, `pair ${i}>${j}.`));
      }
    }
    for (const [j, to] of devices.entries()) {
      await to.until(() => devices.every((_, i) => i === j || to.data.some((p) => p.includes(`pair ${i}>${j}.`))), `all 11 packets at mesh-${j}`);
      // Exactly once each: nothing went round in a loop.
      for (const [i] of devices.entries()) if (i !== j) assert.equal(to.data.filter((p) => p.includes(`pair ${i}>${j}.`)).length, 1);
    }
    // 12 devices, 4 per relay: each relay sends 4 × 8 packets to the other relays, 4 × 4 to each.
    const view = await meshOf(a.server);
    for (const peer of view.filter((p) => !p.self)) assert.equal(peer.txPackets, 16, `relay-a → ${peer.id}`);
    assert.deepEqual(view.map((p) => [p.id, p.link, p.devices]), [['relay-a', 'self', 4], ['relay-b', 'up', 4], ['relay-c', 'up', 4]]);
    // The same in the metrics: one series per relay linked.
    const metrics = renderMetrics('server', serverMethods(a.server, () => parseServerConfig('', 't.ini'), 'test').stats(undefined, undefined as never) as ServerStats);
    for (const relayId of ['relay-b', 'relay-c']) {
      assert.match(metrics, new RegExp(`^mnedc_relay_mesh_tx_packets_total\\{relay="${relayId}"\\} 16$`, 'm'));
      assert.match(metrics, new RegExp(`^mnedc_relay_mesh_rx_packets_total\\{relay="${relayId}"\\} 16$`, 'm'));
      assert.match(metrics, new RegExp(`^mnedc_relay_mesh_up\\{relay="${relayId}"\\} 1$`, 'm'));
    }

    // Relays with keys endorsed by another network, under the same etcd network name: no link either way.
    // relay-x is dialed (its dialers refuse it); relay-0 dials, and refuses the relays it reaches itself.
    const other = dir();
    const dialed = await relay(endorsed(other, 'relay-x'), 'mesh-net', 'unused-x');
    const dialing = await relay(endorsed(other, 'relay-0'), 'mesh-net', 'unused-0');
    await until(async () => (await meshOf(a.server)).some((p) => p.id === 'relay-x' && /endorsed by the network/.test(p.problem)),
      'relay-a reports why it has no link to relay-x');
    const ours = (p: { id: string }) => ['relay-a', 'relay-b', 'relay-c'].includes(p.id);
    await until(async () => (await meshOf(dialing.server)).filter(ours).every((p) => /not a relay of this network/.test(p.problem)),
      'relay-0 reports why it has no links to relays of the other network');
    for (const stranger of [dialed, dialing]) {
      assert.ok((await meshOf(stranger.server)).filter(ours).every((p) => p.link !== 'up'), `${stranger.server.relayId} is linked to none of the network's relays`);
      await stranger.server.stop();
    }

    // relay-c gone: its devices are reported unreachable (relayDown), not queued.
    await c.server.stop();
    await until(async () => (await meshOf(a.server)).every((p) => p.id !== 'relay-c' || p.link !== 'up'), 'relay-a sees relay-c gone');
    const before = a.server.totals.drops.relayDown + a.server.totals.drops.noRoute;
    devices[0]!.send(ipPacket(devices[0]!.ip, devices[2]!.ip, 'to a device whose relay is gone'));
    await until(() => a.server.totals.drops.relayDown + a.server.totals.drops.noRoute > before, 'the packet is dropped and counted');

    // Its devices join another relay with the same address, and are reached there.
    const moved = await WireClient.join(b.port, joinString, 'mesh-2', {}, devices[2]!.key);
    clients.push(moved);
    assert.equal(moved.welcome?.ip, devices[2]!.welcome!.ip);
    await until(() => a.server.cluster!.registry!.relayOf('mesh-2') === 'relay-b', 'relay-a learns mesh-2 moved');
    await until(() => devices[0]!.peers.get('mesh-2')?.ip === moved.welcome!.ip, 'mesh-0 still lists mesh-2');
    devices[0]!.send(ipPacket(devices[0]!.ip, moved.ip, 'after the move'));
    await moved.until(() => moved.data.some((p) => p.includes('after the move')), 'the packet at mesh-2 on relay-b');
  });

  it('a forged MESH_HELLO is refused by the real relay, which lives on: unlisted, another key, a stolen certificate, a replayed proof, garbage', async () => {
    const first = dir();
    const a = await relay(first, 'forge-net', 'forge-a');
    const bDir = endorsed(first, 'forge-b');
    const b = loadOrCreateIdentity(bDir).identity;
    const bKey = createPrivateKey(b.keyPem);
    // The real forge-b runs and is linked: the forgeries claim a relay the registry lists.
    const real = await relay(bDir, 'forge-net', 'unused');
    await until(() => a.server.mesh!.view().some((p) => p.id === 'forge-b' && p.link === 'up'), 'the real forge-b linked');
    const attacker = generateKeyPairSync('ed25519').privateKey;
    const attackerCert = new X509Certificate(loadOrCreateIdentity(dir()).identity.certPem).raw;
    // Another key endorsed as forge-b too (a relay re-keyed, its old key leaked): valid, but not the registered one.
    const oldDir = endorsed(first, 'forge-b');
    const old = loadOrCreateIdentity(oldDir).identity;

    async function attempt(hello: (ekm: Buffer) => Record<string, unknown> | Buffer): Promise<WireClient> {
      const client = new WireClient(a.port, a.server.joinString);
      clients.push(client);
      await once(client.socket, 'secureConnect');
      const ekm = client.socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_MESH_LABEL, Buffer.alloc(0));
      const payload = hello(ekm);
      client.socket.write(Buffer.isBuffer(payload) ? encodeFrame(FrameType.MeshHello, payload) : encodeJsonFrame(FrameType.MeshHello, payload));
      await client.until(() => client.closed, 'the relay closes the connection');
      return client;
    }
    const endorsementOf = (d: string) => parseEndorsement(JSON.parse(readFileSync(join(d, 'network.endorsement'), 'utf8')) as Endorsement)!;
    const base = { version: 1, network: 'forge-net', relay: 'forge-b', to: 'forge-a', capabilities: [] };

    const unlisted = await attempt((ekm) => encodeMeshHello({ ...base, relay: 'forge-z', certificate: attackerCert, proof: meshProof(attacker, ekm, 'forge-z', 'forge-a') }));
    assert.match(String(unlisted.reject?.reason), /no relay forge-z is listed/);
    const impostor = await attempt((ekm) => encodeMeshHello({ ...base, certificate: attackerCert, proof: meshProof(attacker, ekm, 'forge-b', 'forge-a') }));
    assert.match(String(impostor.reject?.reason), /not the one relay forge-b registered/);
    const oldKey = await attempt((ekm) => encodeMeshHello({ ...base, certificate: old.certificate, endorsement: endorsementOf(oldDir),
      proof: meshProof(createPrivateKey(old.keyPem), ekm, 'forge-b', 'forge-a') }));
    assert.match(String(oldKey.reject?.reason), /not the one relay forge-b registered/);
    // forge-b's certificate and endorsement are public (every client sees them): without its key they are useless.
    const stolen = { ...base, certificate: b.certificate, endorsement: endorsementOf(bDir) };
    const otherKey = await attempt((ekm) => encodeMeshHello({ ...stolen, proof: meshProof(attacker, ekm, 'forge-b', 'forge-a') }));
    assert.match(String(otherKey.reject?.reason), /proof is not signed by the key of its certificate/);
    const replayed = await attempt(() => encodeMeshHello({ ...stolen, proof: meshProof(bKey, randomBytes(EXPORTER_BYTES), 'forge-b', 'forge-a') }));
    assert.match(String(replayed.reject?.reason), /proof is not signed/);
    const misdirected = await attempt((ekm) => encodeMeshHello({ ...stolen, to: 'forge-q', proof: meshProof(bKey, ekm, 'forge-b', 'forge-q') }));
    assert.match(String(misdirected.reject?.reason), /meant to reach relay forge-q/);
    const otherNetwork = await attempt((ekm) => encodeMeshHello({ ...stolen, network: 'elsewhere', proof: meshProof(bKey, ekm, 'forge-b', 'forge-a') }));
    assert.match(String(otherNetwork.reject?.reason), /cluster network elsewhere/);
    const garbage = await attempt(() => Buffer.from('{"version": 1, "relay": '));
    assert.equal(garbage.reject, null, 'a protocol error: closed without a word');
    assert.equal(a.server.mesh!.counters.refused, 7);
    const links = a.server.mesh!.view().filter((p) => p.link === 'up');
    assert.deepEqual(links.map((p) => [p.id, p.dialed]), [['forge-b', true]], 'only the real link, the one forge-a dialed, is up');

    // Still serving: a device joins.
    const device = await WireClient.join(a.port, a.server.joinString, 'after-forgeries');
    clients.push(device);
    assert.ok(device.welcome);
    await real.server.stop();
  });

  it('a device that turns up on another relay while its old session here looks alive: the old one is closed, and it is reached and listed there', async () => {
    const first = dir();
    const a = await relay(first, 'move-net', 'move-a');
    const b = await relay(endorsed(first, 'move-b'), 'move-net', 'unused');
    await until(() => a.server.mesh!.view().some((p) => p.id === 'move-b' && p.link === 'up'), 'move-a and move-b linked');
    const join = a.server.joinString;
    const stay = await WireClient.join(a.port, join, 'stays-on-a');
    const before = await WireClient.join(a.port, join, 'mover');
    clients.push(stay, before);
    // Its path to move-a broke without a word (move-a still holds the session); it joins move-b.
    const after = await WireClient.join(b.port, join, 'mover', {}, before.key);
    clients.push(after);
    assert.equal(after.welcome?.ip, before.welcome?.ip);
    await before.until(() => before.goodbye !== null, 'move-a closes the session it still had', 10_000);
    assert.match(String(before.goodbye?.reason), /moved to relay move-b/);
    await until(() => a.server.session('mover') === undefined && a.server.cluster!.registry!.relayOf('mover') === 'move-b', 'move-a routes mover to move-b');
    stay.send(ipPacket(stay.ip, after.ip, 'to the mover on move-b'));
    await after.until(() => after.data.some((p) => p.includes('to the mover on move-b')), 'delivered over the mesh');
    await stay.until(() => stay.peers.get('mover')?.ip === after.welcome!.ip, 'move-a still lists mover', 10_000);
    await b.server.stop();
  });
});
