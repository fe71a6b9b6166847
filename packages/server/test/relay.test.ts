import { strict as assert } from 'node:assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { encodeFrame, encodeJsonFrame, FrameType, intToIpv4, ipv4ToInt } from '@mnedc/protocol';
import { parseServerConfig, type PeerEvent } from '../src';
import { serverMethods } from '../src/control-api';
import { ipPacket, WireClient } from '@mnedc/lab';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays();
const startServer = (extra = '', stateDir?: string) => relays.start(extra, stateDir);
const joinAs = (port: number, deviceId: string, extra: Record<string, unknown> = {}) => relays.join(port, deviceId, extra);

describe('relay server over loopback', () => {
  it('leases distinct addresses, announces peers and relays packets byte for byte', async () => {
    const { port } = await startServer();
    const a = await joinAs(port, 'dev-a');
    const b = await joinAs(port, 'dev-b');
    assert.deepEqual([a.welcome!.ip, b.welcome!.ip, a.welcome!.serverIp, a.welcome!.prefix], ['10.0.0.2', '10.0.0.3', '10.0.0.1', 24]);
    await a.until(() => a.peers.has('dev-b'), 'a to learn about b');
    await b.until(() => b.peers.has('dev-a'), 'b to get the snapshot');
    assert.deepEqual(b.peers.get('dev-a')!.underlay, ['192.168.1.10']);
    const packet = ipPacket(a.ip, b.ip, 'hello over the relay');
    a.send(packet);
    await b.until(() => b.data.length === 1, 'the packet at b');
    assert.ok(b.data[0]!.equals(packet));
    b.close();
    await a.until(() => !a.peers.has('dev-b'), 'a to learn b left');
  });

  it('drops forged sources and unroutable destinations, answering the latter with ICMP', async () => {
    const { server, port } = await startServer();
    const a = await joinAs(port, 'dev-a');
    const b = await joinAs(port, 'dev-b');
    a.send(ipPacket(ipv4ToInt('10.0.0.77'), b.ip, 'forged'));
    a.send(ipPacket(a.ip, ipv4ToInt('10.0.0.200'), 'nobody home'));
    a.send(ipPacket(a.ip, b.ip, 'genuine'));
    await b.until(() => b.data.length === 1, 'the genuine packet');
    await a.until(() => a.data.length === 1, 'the ICMP unreachable');
    assert.equal(b.data[0]!.subarray(20).toString(), 'genuine');
    const icmp = a.data[0]!;
    assert.equal(intToIpv4(icmp.readUInt32BE(12)), '10.0.0.1');
    assert.deepEqual([icmp[9], icmp[20], icmp[21]], [1, 3, 1]);
    assert.equal(server.totals.drops.spoofed, 1);
    assert.equal(server.totals.drops.noRoute, 1);
    const session = server.sessionList().find((s) => s.deviceId === 'dev-a')!;
    assert.equal(session.counters.drops.spoofed, 1);
  });

  it('closes only the connection that sends junk', { timeout: 8000 }, async () => {
    const { server, port } = await startServer();
    const a = await joinAs(port, 'dev-a');
    const b = await joinAs(port, 'dev-b');
    const junk = connect({ port, host: '127.0.0.1' });
    junk.on('error', () => {});
    junk.resume();
    await once(junk, 'connect');
    junk.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await once(junk, 'close');
    const bad = await joinAs(port, 'dev-bad');
    bad.socket.write(Buffer.from([0x7e, 0, 0, 2, 1, 2]));
    await bad.until(() => bad.closed, 'the malformed client to be closed');
    assert.equal(bad.goodbye?.code, 'protocol');
    assert.match(bad.goodbye!.reason, /unknown frame type 0x7e/);
    a.send(ipPacket(a.ip, b.ip, 'still fine'));
    await b.until(() => b.data.length === 1, 'traffic between the others');
    assert.equal(server.sessionCount, 2);
    assert.ok(!a.closed && !b.closed);
  });

  it('closes the connection of a device that said GOODBYE even when the device never closes its side', async () => {
    const { server, port } = await startServer();
    const device = await joinAs(port, 'dev-a');
    const session = server.sessionList().find((s) => s.deviceId === 'dev-a')!;
    // A device that keeps its half open after its GOODBYE: before, the relay only ended its own half and
    // held the descriptor for as long as the device liked.
    const tcp = (device.socket as unknown as { _parent?: import('node:net').Socket })._parent;
    device.socket.allowHalfOpen = true;
    if (tcp) tcp.allowHalfOpen = true;
    device.socket.write(encodeJsonFrame(FrameType.Goodbye, { code: 'shutdown', reason: 'bye' }));
    const closed = once(session.socket, 'close');
    const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('the relay still holds the connection 5 s after GOODBYE')), 5_000).unref());
    await Promise.race([closed, deadline]);
    assert.equal(server.sessionCount, 0);
  });

  it('lets a reconnecting device take over its lingering session, keeping its address', async () => {
    const { port } = await startServer();
    const old = await joinAs(port, 'dev-a');
    const observer = await joinAs(port, 'dev-o');
    await observer.until(() => observer.peers.has('dev-a'), 'the snapshot');
    const peersFrames = () => observer.frames.filter((f) => f[0] === FrameType.Peers).length;
    const before = peersFrames();
    // The same device (same key) on a new connection.
    const fresh = await WireClient.join(port, relays.joinString, 'dev-a', {}, old.key);
    relays.keep(fresh);
    await old.until(() => old.closed, 'the old session to close');
    assert.equal(old.goodbye?.code, 'replaced');
    assert.equal(fresh.welcome!.ip, old.welcome!.ip);
    fresh.send(ipPacket(fresh.ip, observer.ip, 'from the new session'));
    await observer.until(() => observer.data.length === 1, 'traffic from the new session');
    observer.send(ipPacket(observer.ip, fresh.ip, 'to the new session'));
    await fresh.until(() => fresh.data.length === 1, 'traffic to the new session');
    await observer.until(() => peersFrames() > before, 'the takeover delta');
    assert.ok(observer.peers.has('dev-a'));
    assert.deepEqual(observer.downs, [], 'takeover must not announce the device as gone');
  });

  it('a takeover under a new hostname is an "up" with that name (DNS and watchers follow); a plain one is no event', async () => {
    const { port, server } = await startServer();
    const events: PeerEvent[] = [];
    server.on('peer', (event: PeerEvent) => events.push(event));
    const first = await joinAs(port, 'dev-a');
    const same = relays.keep(await WireClient.join(port, relays.joinString, 'dev-a', {}, first.key));
    await first.until(() => first.closed, 'the first session to close');
    const renamed = relays.keep(await WireClient.join(port, relays.joinString, 'dev-a', { hostname: 'renamed' }, first.key));
    await same.until(() => same.closed, 'the second session to close');
    assert.equal(renamed.welcome!.ip, first.welcome!.ip);
    assert.deepEqual(events.map((e) => [e.event, e.deviceId, e.hostname]), [['up', 'dev-a', 'dev-a-host'], ['up', 'dev-a', 'renamed']]);
  });

  it('keeps leases across a restart and honours a previous address on an empty server', async () => {
    const first = await startServer();
    const a = await joinAs(first.port, 'dev-a');
    const b = await joinAs(first.port, 'dev-b');
    const ips = [a.welcome!.ip, b.welcome!.ip];
    a.close(); b.close();
    await first.server.stop();
    // A clean stop folds the lease journal into leases.json.
    const saved = JSON.parse(readFileSync(join(first.stateDir, 'leases.json'), 'utf8')) as { leases: Record<string, { ip: string }> };
    assert.deepEqual(Object.entries(saved.leases).map(([id, l]) => [id, l.ip]), [['dev-a', ips[0]], ['dev-b', ips[1]]]);
    const second = await startServer('', first.stateDir);
    const b2 = await WireClient.join(second.port, relays.joinString, 'dev-b', {}, b.key);
    relays.keep(b2);
    assert.equal(b2.welcome!.ip, ips[1], 'b gets its old address although it joined first');
    const empty = await startServer();
    const c = await joinAs(empty.port, 'dev-c', { previousIp: '10.0.0.42' });
    assert.equal(c.welcome!.ip, '10.0.0.42');
  });

  it('refuses a corrupt lease file instead of starting empty', async () => {
    const dir = relays.stateDir();
    writeFileSync(join(dir, 'leases.json'), '{"version":1,"leases":[{"deviceId":"x"');
    await assert.rejects(startServer('', dir), /lease file .*leases\.json is corrupt: not valid JSON.*move it away/);
  });

  it('rejects an unknown protocol version and a full pool with reasons', async () => {
    const { port } = await startServer('subnet = 10.0.0.0/30\n');
    const v9 = await joinAs(port, 'dev-9', { version: 9 });
    assert.equal(v9.reject?.code, 'version');
    assert.match(v9.reject!.reason, /version 9 is not supported/);
    await joinAs(port, 'dev-a');
    const late = await joinAs(port, 'dev-b');
    assert.equal(late.reject?.code, 'pool-full');
    assert.match(late.reject!.reason, /address pool full/);
  });

  it('cuts a silent device after dead_after_ms', async () => {
    const { server, port } = await startServer('keepalive_ms = 100\ndead_after_ms = 300\n');
    const mute = new WireClient(port, relays.joinString, undefined, false);
    relays.keep(mute);
    await once(mute.socket, 'secureConnect');
    mute.hello('dev-mute');
    await mute.until(() => mute.welcome !== null, 'welcome');
    const started = Date.now();
    await mute.until(() => mute.closed, 'the silent device to be cut', 3000);
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    assert.equal(server.sessionList().filter((s) => s.state === 'established').length, 0);
  });

  it('drops packets for a device that stops reading without slowing the others', async () => {
    const { server, port } = await startServer('send_queue_kib = 128\n');
    const sender = await joinAs(port, 'dev-s');
    const stalled = await joinAs(port, 'dev-stalled');
    const healthy = await joinAs(port, 'dev-h');
    stalled.socket.pause();
    const body = Buffer.alloc(1372, 7);
    // Enough to overflow the stalled device's kernel buffers and its 64 KiB queue many times over.
    for (let i = 0; i < 8000; i++) sender.send(ipPacket(sender.ip, stalled.ip, body));
    for (let i = 0; i < 200; i++) sender.send(ipPacket(sender.ip, healthy.ip, `n${i}`));
    await healthy.until(() => healthy.data.length === 200, 'all packets for the healthy device', 10_000);
    const session = server.sessionList().find((s) => s.deviceId === 'dev-stalled')!;
    assert.ok(session.missed > 0, 'the stalled device missed packets');
    assert.ok(server.totals.drops.queueFull > 0);
    assert.ok(session.socket.writableLength <= 128 * 1024, `queue ${session.socket.writableLength}`);
  });

  it('rejects frames other than HELLO before the handshake', async () => {
    const { port } = await startServer();
    const early = new WireClient(port, relays.joinString);
    relays.keep(early);
    await once(early.socket, 'secureConnect');
    early.socket.write(encodeFrame(FrameType.Ping, Buffer.alloc(8)));
    await early.until(() => early.closed, 'close');
    assert.match(early.goodbye?.reason ?? '', /PING before HELLO/);
  });

  it('rejects a wrong or missing join secret with a reason, taking no lease', async () => {
    const { server, port } = await startServer();
    const wrong = await WireClient.join(port, 'mnedc1.' + 'A'.repeat(43) + '.' + 'B'.repeat(43), 'dev-w');
    relays.keep(wrong);
    assert.equal(wrong.reject?.code, 'auth');
    assert.match(wrong.reject!.reason, /join secret is wrong or was rotated/);
    const bare = await joinAs(port, 'dev-bare', { auth: undefined });
    assert.equal(bare.reject?.code, 'auth');
    assert.match(bare.reject!.reason, /requires a join string/);
    assert.equal(server.pool.size, 0, 'no lease taken');
    assert.equal(server.refused.authFailed, 2);
  });

  it('binds a device ID to its first key: another key is refused and the original keeps its session', async () => {
    const { server, port } = await startServer();
    const original = await joinAs(port, 'dev-a');
    const peer = await joinAs(port, 'dev-p');
    const impostor = await joinAs(port, 'dev-a'); // same ID, fresh key
    assert.equal(impostor.reject?.code, 'auth');
    assert.match(impostor.reject!.reason, /belongs to another device key.*mnedcctl forget dev-a/);
    assert.equal(server.refused.boundToOtherKey, 1);
    assert.ok(!original.closed);
    original.send(ipPacket(original.ip, peer.ip, 'still mine'));
    await peer.until(() => peer.data.length === 1, 'traffic from the original');
    // The same key may come back (takeover); after forget, a new key may claim the ID.
    const again = await WireClient.join(port, relays.joinString, 'dev-a', {}, original.key);
    relays.keep(again);
    assert.equal(again.welcome?.ip, original.welcome!.ip);
    await server.forget('dev-a');
    const reinstalled = await joinAs(port, 'dev-a');
    assert.ok(reinstalled.welcome, 'a forgotten ID binds to the next key');
  });

  it('rotating the join secret stops old join strings, not connected devices', async () => {
    const { server, port } = await startServer();
    const before = relays.joinString;
    const connected = await joinAs(port, 'dev-a');
    const rotated = await server.rotateJoin();
    assert.notEqual(rotated, before);
    assert.equal(rotated.split('.')[1], before.split('.')[1], 'same server identity');
    const late = await WireClient.join(port, before, 'dev-late');
    relays.keep(late);
    assert.equal(late.reject?.code, 'auth');
    const fresh = await WireClient.join(port, rotated, 'dev-new');
    relays.keep(fresh);
    assert.ok(fresh.welcome);
    assert.ok(!connected.closed);
  });

  it('speaks nothing but TLS 1.3', async () => {
    const { port } = await startServer();
    const old = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, maxVersion: 'TLSv1.2' });
    const [err] = (await once(old, 'error')) as [Error];
    assert.match(err.message, /version|alert|handshake/i);
  });

  it('cuts connections that never finish the handshake at the deadline and rate-limits a flood', async () => {
    const { server, port } = await startServer('[limits]\nhandshake_timeout_ms = 600\nconnections_per_source_per_second = 1\nconnection_burst_per_source = 5\n');
    const idle = Array.from({ length: 8 }, () => {
      const s = connect({ port, host: '127.0.0.1' });
      s.on('error', () => {});
      s.resume();
      return s;
    });
    const started = Date.now();
    await Promise.all(idle.map((s) => once(s, 'close')));
    const elapsed = Date.now() - started;
    assert.equal(server.refused.rateLimited, 3, 'beyond the burst of 5, connections are refused at once');
    assert.equal(server.refused.handshakeTimeout, 5, 'the admitted ones are cut at the deadline');
    assert.ok(elapsed >= 500 && elapsed < 3000, `idle connections lived ${elapsed} ms`);
  });

  it('turns away devices beyond max_clients', async () => {
    const { server, port } = await startServer('[limits]\nmax_clients = 1\n');
    await joinAs(port, 'dev-a');
    const second = await joinAs(port, 'dev-b');
    assert.equal(second.reject?.code, 'busy');
    assert.equal(server.refused.maxClients, 1);
  });
});

describe('control API', () => {
  it('refuses device ID operands that name no device (control characters, empty, overlong)', async () => {
    const { server } = await startServer();
    const methods = serverMethods(server, () => parseServerConfig('[server]\ninterface =\n', 't.ini'), 'test');
    for (const deviceId of ['dev\nforged log line', '', 'x'.repeat(129), '-leading-dash']) {
      for (const method of ['kick', 'release', 'forget'] as const) {
        await assert.rejects(async () => methods[method]!({ deviceId }, {} as never),
          (err: Error & { code?: number }) => err.code === -32602 && /is not a device ID/.test(err.message), `${method} ${JSON.stringify(deviceId)}`);
      }
    }
  });
});
