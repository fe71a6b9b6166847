import { strict as assert } from 'node:assert';
import { TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { once } from 'node:events';
import { ipPacket, WireClient } from '@mnedc/lab';
import { CAPABILITY_PEERS_BIN, FrameType, HEADER_BYTES, type PeerInfo } from '@mnedc/protocol';
import { limitsFromConfig, parseServerConfig } from '../src';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays('mnedc-discovery-');

/** Room for a thousand devices from one source address, joining as fast as the test can make them. */
const STORM = `subnet = 10.77.0.0/20
keepalive_ms = 60000
dead_after_ms = 120000
[limits]
max_handshakes = 100000
max_handshakes_per_source = 100000
connections_per_source_per_second = 100000
connection_burst_per_source = 100000
new_devices_per_minute = 1000000
new_device_burst = 1000000
`;

const BIN = { capabilities: [CAPABILITY_PEERS_BIN] };

/**
 * Devices joining 100 at a time. The WELCOME may take long: every device already joined is sent each
 * window's delta, and on a loaded two-core machine a thousand of them (relay and devices in this one
 * process) delay the handshakes by seconds.
 */
async function joinMany(port: number, ids: string[], extra: Record<string, unknown>): Promise<WireClient[]> {
  const clients: WireClient[] = [];
  const joinOne = async (id: string): Promise<WireClient> => {
    const client = relays.keep(new WireClient(port, relays.joinString));
    await once(client.socket, 'secureConnect');
    client.hello(id, extra);
    await client.until(() => client.welcome !== null || client.reject !== null || client.closed, `welcome for ${id}`, 120_000);
    return client;
  };
  for (let i = 0; i < ids.length; i += 100) clients.push(...await Promise.all(ids.slice(i, i + 100).map(joinOne)));
  for (const c of clients) assert.ok(c.welcome, `${c.reject?.reason ?? 'no welcome'}`);
  return clients;
}

/** Polls what has no event (the relay's counters), within a bound. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Every client has the whole list: `count` devices (itself included). */
async function allSee(clients: WireClient[], count: number): Promise<void> {
  for (const c of clients) await c.until(() => c.peers.size === count, `${count} peers`, 120_000);
}

/** Bytes of discovery each of `n` subscribed devices receives for one further device joining. */
async function bytesForOneJoin(n: number): Promise<number[]> {
  const { port } = await relays.start(STORM);
  const clients = await joinMany(port, Array.from({ length: n }, (_, i) => `dev-${i}`), BIN);
  await allSee(clients, n);
  const before = clients.map((c) => c.discoveryBytes);
  const extra = await relays.join(port, 'dev-extra', { discovery: 'off' });
  assert.equal(extra.welcome?.discovery, 'off');
  for (const c of clients) await c.until(() => c.peers.has('dev-extra'), 'the extra device', 120_000);
  return clients.map((c, i) => c.discoveryBytes - before[i]!);
}

describe('discovery on the relay', () => {
  it('a join costs each subscribed device the same few dozen bytes at 100 and at 1,000 devices', { timeout: 600_000 }, async () => {
    const small = new Set(await bytesForOneJoin(100));
    const large = new Set(await bytesForOneJoin(1000));
    assert.equal(small.size, 1, `one cost for all at 100: ${[...small]}`);
    assert.deepEqual([...large], [...small], 'the same cost at 1,000 devices');
    assert.ok([...small][0]! < 100, `${[...small][0]} bytes for one join`);
  });

  it('grants names, off, full and auto as asked; only full devices get peers; old clients get JSON PEERS', async () => {
    const { port, server } = await relays.start(`discovery_full_max = 4\n${STORM}`);
    const old = await relays.join(port, 'dev-old');
    const bin = await relays.join(port, 'dev-bin', { ...BIN, discovery: 'full' });
    const names = await relays.join(port, 'dev-names', { ...BIN, discovery: 'names' });
    const off = await relays.join(port, 'dev-off', { ...BIN, discovery: 'off' });
    const autoFull = await relays.join(port, 'dev-auto1', { ...BIN, discovery: 'auto' });
    const autoNames = await relays.join(port, 'dev-auto2', { ...BIN, discovery: 'auto' });
    assert.deepEqual([old, bin, names, off, autoFull, autoNames].map((c) => c.welcome?.discovery), ['full', 'full', 'names', 'off', 'full', 'names']);
    assert.deepEqual(old.welcome?.capabilities, [], 'an old client is granted nothing it did not ask for');
    assert.ok(bin.welcome?.capabilities.includes(CAPABILITY_PEERS_BIN));
    // A newcomer's snapshot already holds its window's changes: wait for them, so the next change is a delta to all.
    await allSee([old, bin, autoFull], 6);
    const late = await relays.join(port, 'dev-late', { discovery: 'off' });
    assert.equal(late.welcome?.discovery, 'off', late.reject?.reason);
    assert.ok(server.kick('dev-late'));
    for (const c of [old, bin, autoFull]) await c.until(() => c.downs.includes('dev-late'), 'the late device leaving');
    server.directory.flush();
    for (const c of [names, off, autoNames]) {
      assert.equal(c.discoveryBytes, 0);
      assert.equal(c.frames.filter((f) => f[0] === FrameType.Peers || f[0] === FrameType.PeersBin).length, 0);
    }
    const types = (c: WireClient) => new Set(c.frames.map((f) => f[0]).filter((t) => t === FrameType.Peers || t === FrameType.PeersBin));
    assert.deepEqual(types(old), new Set([FrameType.Peers]));
    assert.deepEqual(types(bin), new Set([FrameType.PeersBin]));
    assert.deepEqual(types(autoFull), new Set([FrameType.PeersBin]));
    assert.deepEqual([...bin.peers.keys()].sort(), [...old.peers.keys()].sort());
    assert.equal(bin.peers.size, 6);
    // discovery_full_max is live (SIGHUP): raised, the next "auto" device gets the list again.
    server.setLimits(limitsFromConfig(parseServerConfig(`[server]\nstate_dir = /nonexistent\ndiscovery_full_max = 100\n${STORM}`, 'reload.ini')));
    const autoAgain = await relays.join(port, 'dev-auto3', { ...BIN, discovery: 'auto' });
    assert.equal(autoAgain.welcome?.discovery, 'full');
  });

  it('queues one snapshot Buffer to all newcomers of a window, never a copy per device', async () => {
    const { port } = await relays.start(STORM);
    await allSee(await joinMany(port, Array.from({ length: 30 }, (_, i) => `dev-${i}`), BIN), 30);
    const snapshots: Buffer[] = [];
    const write = TLSSocket.prototype.write;
    TLSSocket.prototype.write = function (this: TLSSocket, chunk: unknown, ...rest: unknown[]) {
      if (Buffer.isBuffer(chunk) && chunk[0] === FrameType.PeersBin && (chunk[HEADER_BYTES]! & 1) === 1) snapshots.push(chunk);
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof write;
    let newcomers: WireClient[];
    try {
      newcomers = await joinMany(port, Array.from({ length: 50 }, (_, i) => `new-${i}`), BIN);
      await allSee(newcomers, 80);
    } finally {
      TLSSocket.prototype.write = write;
    }
    assert.equal(snapshots.length, 50, 'one snapshot frame per newcomer');
    const distinct = new Set(snapshots);
    // The 50 joins span a few 100 ms windows; each window's snapshot is one Buffer, written to all its newcomers.
    assert.ok(distinct.size <= 12, `${distinct.size} distinct snapshot buffers for 50 newcomers`);
    for (const frame of distinct) assert.equal(frame.buffer.byteLength, frame.length, 'an unpooled frame of its own');
  });

  it('a device reading slowly through a join storm keeps every data packet and ends with the right peer list', { timeout: 120_000 }, async () => {
    // 128 KiB budget: data may fill 96 KiB of it, discovery at most half that; the rest waits for the device.
    const { port, server } = await relays.start(`send_queue_kib = 128\n${STORM}`);
    const slow = await relays.join(port, 'dev-slow');
    const sender = await relays.join(port, 'dev-sender', { discovery: 'off' });
    await slow.until(() => slow.peers.size === 2, 'its snapshot');
    slow.socket.pause();
    // The storm: peers announced straight into the relay's directory, as joins are, ~1 KiB each (long names,
    // 16 underlay addresses) so megabytes of deltas are due without thousands of handshakes.
    const fat = (i: number): PeerInfo => ({
      deviceId: `storm-${i}`, ip: `10.${78 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, hostname: Array.from({ length: 4 }, (_, l) => `${'a'.repeat(58)}${l}${i}`.slice(0, 62)).join('.'),
      underlay: Array.from({ length: 16 }, (_, a) => `2001:db8:${a}:${i}:ffff:ffff:ffff:ffff`), since: Date.now(),
    });
    let joined = 0;
    for (let wave = 0; wave < 400 && server.directory.resyncs === 0 && server.cut.overBudget === 0; wave++) {
      for (let i = 0; i < 50; i++) server.directory.join(fat(joined++));
      server.directory.flush();
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(server.cut.overBudget, 0, 'the slow device was not cut for discovery it did not read');
    const session = server.session('dev-slow')!;
    assert.ok(server.directory.resyncs > 0, `the slow device fell behind (${joined} peers announced)`);
    assert.ok(session.link.queued <= session.link.budget.dataLimit / 2, `discovery stayed within half the data room: ${session.link.queued}`);
    // Half the data room is always data's: 25 packets of ~1 KiB (each charged ~1.4 KiB) fit it, whatever discovery is due.
    for (let i = 0; i < 25; i++) sender.send(ipPacket(sender.ip, slow.ip, Buffer.alloc(1000, i)));
    await waitFor(() => session.counters.txPackets + session.missed >= 25, 'the relay to take the 25 packets');
    assert.equal(session.missed, 0, 'no data dropped for it');
    assert.equal(server.totals.drops.queueFull, 0);
    slow.socket.resume();
    await slow.until(() => slow.data.length === 25, 'all 25 data packets', 30_000);
    const expected = [...server.directory.list()].map((p) => p.deviceId).sort();
    await slow.until(() => slow.peers.size === expected.length, `${expected.length} peers after its fresh snapshot`, 30_000);
    assert.deepEqual([...slow.peers.keys()].sort(), expected);
  });
});
