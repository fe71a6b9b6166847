import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { ipv4ToInt, type HostNetworks } from '@mnedc/protocol';
import { parseServerConfig, RelayServer } from '@mnedc/server';
import { Backoff, parseClientConfig, RelayClient, RetryPolicy, type ClientConfig } from '../src';
import { FakeDevice } from './fake-device';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';

/** Resolves when the client reaches `state` (now or by a later 'state' event). */
function reach(c: RelayClient, state: string, timeoutMs = 10_000): Promise<void> {
  if (c.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { c.off('state', listener); reject(new Error(`client never reached ${state} (is ${c.state})`)); }, timeoutMs);
    const listener = (s: string) => { if (s === state) { clearTimeout(timer); c.off('state', listener); resolve(); } };
    c.on('state', listener);
  });
}

function udp(src: string, dst: string, text: string): Buffer {
  const packet = Buffer.alloc(20 + text.length);
  packet[0] = 0x45; packet.writeUInt16BE(packet.length, 2); packet[8] = 64; packet[9] = 17;
  packet.writeUInt32BE(ipv4ToInt(src), 12); packet.writeUInt32BE(ipv4ToInt(dst), 16);
  packet.write(text, 20);
  return packet;
}

const dirs: string[] = [];
let joinString = '';
/** One key per device ID, as a real device keeps its key across restarts. */
const keys = new Map<string, KeyObject>();
const credentialsFor = (deviceId: string, config: ClientConfig) => {
  if (!keys.has(deviceId)) keys.set(deviceId, generateKeyPairSync('ed25519').privateKey);
  return { join: config.client.join, deviceKey: keys.get(deviceId)! };
};
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function relay(stateDir?: string, port = 0): Promise<{ server: RelayServer; port: number; dir: string }> {
  const dir = stateDir ?? mkdtempSync(join(tmpdir(), 'mnedc-client-'));
  dirs.push(dir);
  const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:${port}\ninterface =\nstate_dir = ${dir}\nkeepalive_ms = 200\ndead_after_ms = 1000\n`, 's.ini');
  const server = new RelayServer({ config, log: pino({ level: 'silent' }), serverDeviceId: 'server' });
  const address = await server.start();
  joinString = server.joinString;
  let stopped = false;
  cleanups.push(async () => { if (!stopped) await server.stop(); });
  const stop = server.stop.bind(server);
  server.stop = async () => { stopped = true; await stop(); };
  return { server, port: address.port, dir };
}

function client(port: number, deviceId: string, device: FakeDevice, more: { ini?: string; localNetworks?: () => HostNetworks } = {}): RelayClient {
  const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${joinString}\ndevice_id = ${deviceId}\n${more.ini ?? ''}`, 'c.ini');
  const c = new RelayClient({ config, log: pino({ level: 'silent' }), deviceId, hostname: deviceId, underlay: () => ['192.168.9.9'], device, credentials: credentialsFor(deviceId, config), retry: new RetryPolicy(new Backoff(50, 400)),
    ...(more.localNetworks ? { localNetworks: more.localNetworks } : {}) });
  c.start();
  cleanups.push(() => c.stop());
  return c;
}

describe('RelayClient against a relay on loopback', () => {
  it('configures the device from WELCOME and shuttles packets both ways', async () => {
    const { port } = await relay();
    const devA = new FakeDevice();
    const devB = new FakeDevice();
    const a = client(port, 'dev-a', devA);
    const b = client(port, 'dev-b', devB);
    await reach(a, 'connected');
    await reach(b, 'connected');
    assert.deepEqual(devA.configured, [{ address: '10.0.0.2', prefix: 24, mtu: 1400, up: true }]);
    if (!a.peers.get('dev-b')) await once(a, 'peers');
    assert.ok(a.peers.get('dev-b'));
    devA.inject([udp('10.0.0.2', '10.0.0.3', 'one'), udp('10.0.0.2', '10.0.0.3', 'two')]);
    await devB.until(() => devB.written.length === 2, 'both packets at b');
    assert.deepEqual(devB.written.map((p) => p.subarray(20).toString()), ['one', 'two']);
    assert.equal(a.counters.txPackets, 2);
    assert.equal(b.counters.rxPackets, 2);
  });

  it('drops IPv6 read from the TUN itself, counted as dropsIpv6, and relays the IPv4 around it', async () => {
    const { server, port } = await relay();
    const devA = new FakeDevice();
    const devG = new FakeDevice(true);
    const devB = new FakeDevice();
    const [a, g, b] = [client(port, 'dev-a', devA), client(port, 'dev-g', devG), client(port, 'dev-b', devB)];
    await Promise.all([reach(a, 'connected'), reach(g, 'connected'), reach(b, 'connected')]);
    const ipv6 = Buffer.alloc(48);
    ipv6[0] = 0x60; ipv6.writeUInt16BE(8, 4); ipv6[6] = 17; ipv6[7] = 255; ipv6[8] = 0xfe; ipv6[9] = 0x80; ipv6[24] = 0xff; ipv6[25] = 0x02;
    const vnet = (packet: Buffer) => Buffer.concat([Buffer.alloc(10), packet]);
    devA.inject([udp(a.lease!.ip, b.lease!.ip, 'one'), ipv6, udp(a.lease!.ip, b.lease!.ip, 'two'), ipv6]);
    devG.inject([vnet(ipv6), vnet(udp(g.lease!.ip, b.lease!.ip, 'three'))]);
    await devB.until(() => devB.written.length === 3, 'the IPv4 packets at b');
    assert.deepEqual(devB.written.map((p) => p.subarray(20).toString()).sort(), ['one', 'three', 'two']);
    assert.deepEqual([a.counters.dropsIpv6, a.counters.txPackets, a.counters.dropsMalformed], [2, 2, 0]);
    assert.deepEqual([g.counters.dropsIpv6, g.counters.txPackets], [1, 1]);
    assert.deepEqual([server.totals.drops.ipv6, server.totals.drops.malformed], [0, 0], 'nothing IPv6 reached the relay');
  });

  it('keeps its address across a relay restart without reconfiguring the device', async () => {
    const first = await relay();
    const dev = new FakeDevice();
    const c = client(first.port, 'dev-a', dev);
    await reach(c, 'connected');
    const ip = c.lease!.ip;
    await first.server.stop();
    await reach(c, 'waiting');
    dev.inject([udp(ip, '10.0.0.9', 'while offline')]);
    assert.equal(c.counters.dropsOffline, 1);
    // A new relay with the same state on the same port, as after a restart.
    await relay(first.dir, first.port);
    await reach(c, 'connected');
    assert.equal(c.lease!.ip, ip);
    assert.equal(dev.configured.length, 1, 'same address: the device is left alone');
    assert.ok(c.counters.reconnects >= 1);
  });

  it('keeps showing the last round-trip time through an outage and a reconnect, until the new link measures its own', async () => {
    const first = await relay();
    const c = client(first.port, 'dev-a', new FakeDevice());
    await reach(c, 'connected');
    const deadline = Date.now() + 5_000;
    while (c.rttMs < 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(c.rttMs >= 0, 'a PONG came back');
    await first.server.stop();
    await reach(c, 'waiting');
    assert.ok(c.rttMs >= 0, `while waiting: ${c.rttMs}`);
    await relay(first.dir, first.port);
    await reach(c, 'connected');
    assert.ok(c.rttMs >= 0, `just reconnected, before the new link's first PONG: ${c.rttMs}`);
  });

  it('asks for its previous address on a relay that has forgotten it', async () => {
    const { port } = await relay();
    const dev = new FakeDevice();
    const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${joinString}\ndevice_id = dev-p\n`, 'c.ini');
    const c = new RelayClient({ config, log: pino({ level: 'silent' }), deviceId: 'dev-p', hostname: 'p', underlay: () => [], device: dev, credentials: credentialsFor('dev-p', config), previousIp: '10.0.0.77' });
    c.start();
    cleanups.push(() => c.stop());
    await reach(c, 'connected');
    assert.equal(c.lease!.ip, '10.0.0.77');
  });

  it('reports a rejection as its last error and keeps trying', async () => {
    const { port } = await relay();
    const dev = new FakeDevice();
    const c = client(port, 'server', dev); // the relay's own device ID is refused
    await reach(c, 'waiting');
    assert.match(c.lastError, /rejected \(forbidden\): device ID server is the server's own/);
    assert.notEqual(c.state, 'connected');
  });

  it('refuses a server whose certificate is not the pinned one, and says what to do', async () => {
    const real = await relay();
    const impostor = await relay();
    const dev = new FakeDevice();
    // The join string of one relay, pointed at the other: same port semantics, different identity.
    const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${impostor.port}\njoin = ${real.server.joinString}\ndevice_id = dev-x\n`, 'c.ini');
    const c = new RelayClient({ config, log: pino({ level: 'silent' }), deviceId: 'dev-x', hostname: 'x', underlay: () => [], device: dev, credentials: credentialsFor('dev-x', config), retry: new RetryPolicy(new Backoff(50, 400)) });
    c.start();
    cleanups.push(() => c.stop());
    await reach(c, 'waiting');
    assert.match(c.lastError, /^server identity changed: it presented SHA256:\S+ but the join string pins SHA256:\S+\. If the server was reinstalled, get a new join string/);
    assert.equal(impostor.server.pool.size, 0, 'the impostor learned nothing and leased nothing');
    assert.equal(dev.configured.length, 0);
  });

  it('refuses a lease that overlaps its own LAN, keeps retrying, and takes it once allowed or the LAN is gone', async () => {
    const { port } = await relay();
    // The relay leases from 10.0.0.0/24; this device's LAN is 10.0.0.0/16 with its gateway at 10.0.0.1.
    let host: HostNetworks = {
      addresses: [{ interface: 'eth1', address: '10.0.7.7', prefix: 16 }],
      routes: [{ interface: 'eth1', destination: '0.0.0.0', prefix: 0, gateway: '10.0.0.1' }],
    };
    let reads = 0;
    const dev = new FakeDevice();
    const c = client(port, 'dev-o', dev, { localNetworks: () => { reads++; return host; } });
    await reach(c, 'waiting');
    assert.match(c.lastError, /refused the lease: WELCOME: subnet 10\.0\.0\.0\/24 overlaps eth1's address 10\.0\.7\.7\/16; subnet 10\.0\.0\.0\/24 contains 10\.0\.0\.1, /);
    assert.match(c.lastError, /accept that in \[client\] allow_overlap/);
    assert.equal(dev.configured.length, 0, 'nothing of the lease reached the TUN');
    await reach(c, 'connecting');
    await reach(c, 'waiting');
    assert.ok(reads >= 2, 'checked again on the retry');
    host = { addresses: [{ interface: 'eth1', address: '192.168.1.7', prefix: 24 }], routes: [] };
    await reach(c, 'connected');
    assert.deepEqual(dev.configured, [{ address: '10.0.0.2', prefix: 24, mtu: 1400, up: true }]);

    const allowedDev = new FakeDevice();
    const overlapping: HostNetworks = { addresses: [{ interface: 'eth1', address: '10.0.7.7', prefix: 16 }], routes: [] };
    const allowed = client(port, 'dev-ok', allowedDev, { ini: 'allow_overlap = 10.0.0.0/16\n', localNetworks: () => overlapping });
    await reach(allowed, 'connected');
    assert.equal(allowedDev.configured.length, 1);
  });
});
