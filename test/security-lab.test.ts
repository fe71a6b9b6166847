/**
 * Security in the lab: what a neighbour on the LAN can see and do. Encryption on the wire, admission by
 * join secret, pinned server identity, device binding, handshake limits, anti-spoofing, and who may use
 * the control socket.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, copyFileSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { containsBytes, Daemon, DEVICES, parsePcap, pings, REPO_ROOT, runCommand, SERVER_PORT, summarizeTls, tcpStreams, UNDERLAY } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab } from './lab-suite';

const FLOOD = path.join(REPO_ROOT, 'packages/lab/dist/src/flood.js');
const CTL = path.join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js');

interface Stats { refused: Record<string, number>; clients: Array<{ deviceId: string; drops: Record<string, number> }> }

describe('security in the lab', { skip: skipUnlessRoot, timeout: 300_000 }, () => {
  const ctx = withOverlayLab();

  it('a capture on the NAT router shows TLS 1.3 and no trace of the text carried', async () => {
    const capture = path.join(ctx.overlay.dir, 'wan.pcap');
    const tcpdump = new Daemon('tcpdump', ctx.lab.spawn('r1', ['tcpdump', '-i', 'wan', '--immediate-mode', '-Z', 'root', '-w', capture, '-U', '-s', '0', `tcp port ${SERVER_PORT}`], { pipe: true }));
    await tcpdump.waitForRaw(/listening on/);
    // A fresh connection of c (behind r1 and r2), so the capture holds its handshake.
    const mark = ctx.overlay.client('c').lines.length;
    assert.equal((await ctx.overlay.ctl('srv', ['kick', 'device-c'])).code, 0);
    await ctx.overlay.client('c').waitFor(/^Connected to /, { from: mark, timeoutMs: 20_000 });
    const marker = `mnedc-cleartext-marker-${Date.now()}`;
    const receiver = new Daemon('receiver', ctx.lab.spawn('d', [process.execPath, '-e',
      `require('net').createServer((s) => { let t = ''; s.on('data', (d) => { t += d; }); s.on('end', () => { console.log(JSON.stringify({ msg: 'got', text: t })); process.exit(0); }); }).listen(5050, () => console.log(JSON.stringify({ msg: 'listening' })));`], { pipe: true }));
    await receiver.waitFor(/^listening$/);
    const sent = await ctx.lab.exec('c', [process.execPath, '-e',
      `const s = require('net').connect(5050, '${ctx.ips.d}', () => { s.end('${marker}\\n'.repeat(200)); }); s.on('close', () => process.exit(0));`], { timeoutMs: 15_000 });
    assert.equal(sent.code, 0, sent.stderr);
    const got = await receiver.waitFor(/^got$/);
    assert.ok(String(got.text).includes(marker), 'the text arrived through the overlay');
    tcpdump.signal('SIGINT');
    await tcpdump.waitExit();

    const { segments } = parsePcap(readFileSync(capture));
    // Every connection through r1 is NATed to its WAN address; the one whose SYN was captured is c's new
    // connection, handshake included. Each stream is checked whole, so no marker hides across segments.
    const streams = tcpStreams(segments);
    const captured = streams.reduce((n, s) => n + s.data.length, 0);
    assert.ok(captured > 200 * marker.length, `the capture holds the tunnel traffic (${captured} bytes)`);
    assert.deepEqual(streams.filter((s) => containsBytes(s.data, Buffer.from(marker))).map((s) => `${s.src}:${s.srcPort}`), [],
      'the marker is visible on the wire');
    const fresh = streams.filter((s) => s.dstPort === SERVER_PORT && s.sawSyn);
    assert.equal(fresh.length, 1, `new connections captured: ${fresh.length}`);
    const reply = streams.find((s) => s.srcPort === SERVER_PORT && s.dstPort === fresh[0]!.srcPort)!;
    const tls = summarizeTls(reply.data, fresh[0]!.data);
    assert.deepEqual(tls.handshakeVersions, ['TLSv1.3']);
    assert.ok(tls.clientAppDataBytes > 200 * marker.length, `application data from c: ${tls.clientAppDataBytes} bytes`);
  });

  it('a wrong join secret is rejected with a clear error in the client log and status, and takes no lease', async () => {
    const wrong = `${ctx.overlay.join.split('.').slice(0, 2).join('.')}.${Buffer.alloc(32, 9).toString('base64url')}`;
    const intruder = await ctx.overlay.startClientAs('a', 'intruder', { extra: `[client]\njoin = ${wrong}\ninterface = mnedc9\n`, noWait: true });
    const rejected = await intruder.waitFor(/rejected this device: the join secret is wrong or was rotated/);
    assert.equal(rejected.level, 50, 'logged as an error');
    const status = await ctx.overlay.ctlAt(path.join(ctx.overlay.dir, 'intruder.sock'), ['status', '--json']);
    const s = status.json as { state: string; lastError: string };
    assert.notEqual(s.state, 'connected');
    assert.match(s.lastError, /rejected \(auth\): the join secret is wrong/);
    const leases = (await ctx.overlay.ctl('srv', ['leases', '--json'])).json as Array<{ deviceId: string }>;
    assert.ok(!leases.some((l) => l.deviceId === 'device-intruder'), 'no lease for the intruder');
    const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats;
    assert.ok(stats.refused.authFailed >= 1);
    intruder.signal('SIGTERM');
    await intruder.waitExit();
  });

  it('a second device presenting an existing device ID with its own key is rejected; the original is unaffected', async () => {
    const original = ctx.overlay.client('b');
    const mark = original.lines.length;
    const before = ((await ctx.overlay.ctl('srv', ['peers', '--json'])).json as Array<{ deviceId: string; since: number }>).find((p) => p.deviceId === 'device-b')!;
    // On machine a, a new client claims b's device ID; its state directory, so its key, is its own.
    const impostor = await ctx.overlay.startClientAs('a', 'impostor', { extra: '[client]\ndevice_id = device-b\ninterface = mnedc8\n', noWait: true });
    await impostor.waitFor(/rejected this device: device ID device-b belongs to another device key/);
    impostor.signal('SIGTERM');
    await impostor.waitExit();
    assert.deepEqual(original.lines.slice(mark).filter((l) => /^(Lost|Server closed)/.test(l.msg)), [], 'b kept its session');
    const after = ((await ctx.overlay.ctl('srv', ['peers', '--json'])).json as Array<{ deviceId: string; since: number; ip: string }>).find((p) => p.deviceId === 'device-b')!;
    assert.equal(after.since, before.since);
    assert.equal(after.ip, ctx.ips.b);
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.b));
  });

  it('cuts 1,000 idle connections at the handshake deadline while a real client joins, and rate-limits a flood', async () => {
    // Limits generous enough to admit the 1,000, so it is the deadline that must cut them (applied live).
    ctx.overlay.rewriteConfig('srv', '[limits]\nhandshake_timeout_ms = 3000\nmax_handshakes = 4096\nmax_handshakes_per_source = 2048\n' +
      'connections_per_source_per_second = 5000\nconnection_burst_per_source = 2048\n');
    let mark = ctx.overlay.server.lines.length;
    ctx.overlay.server.signal('SIGHUP');
    await ctx.overlay.server.waitFor(/^Reloaded /, { from: mark });
    const before = ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats).refused;
    const flooding = ctx.lab.exec('a', [process.execPath, FLOOD, UNDERLAY.srv, String(SERVER_PORT), '1000'], { timeoutMs: 40_000 });
    // Meanwhile c reconnects and carries traffic.
    const cMark = ctx.overlay.client('c').lines.length;
    assert.equal((await ctx.overlay.ctl('srv', ['kick', 'device-c'])).code, 0);
    await ctx.overlay.client('c').waitFor(/^Connected to /, { from: cMark, timeoutMs: 20_000 });
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d), 'a real client passes traffic during the flood');
    const flood = JSON.parse((await flooding).stdout) as { opened: number; closed: number; refusedFast: number; lifetimesMs: { min: number; median: number; max: number } };
    assert.equal(flood.closed, 1000, JSON.stringify(flood));
    assert.ok(flood.lifetimesMs.median >= 2500 && flood.lifetimesMs.max < 10_000, `cut at the deadline: ${JSON.stringify(flood.lifetimesMs)}`);
    const afterIdle = ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats).refused;
    assert.ok(afterIdle.handshakeTimeout - before.handshakeTimeout >= 990, `handshake timeouts: ${afterIdle.handshakeTimeout - before.handshakeTimeout}`);

    // Back to the shipped limits: a flood from one address is refused at once beyond its burst.
    ctx.overlay.rewriteConfig('srv', '[limits]\nhandshake_timeout_ms = 10000\nmax_handshakes = 1024\nmax_handshakes_per_source = 64\n' +
      'connections_per_source_per_second = 20\nconnection_burst_per_source = 64\n');
    mark = ctx.overlay.server.lines.length;
    ctx.overlay.server.signal('SIGHUP');
    await ctx.overlay.server.waitFor(/^Reloaded /, { from: mark });
    const limited = JSON.parse((await ctx.lab.exec('a', [process.execPath, FLOOD, UNDERLAY.srv, String(SERVER_PORT), '500'], { timeoutMs: 40_000 })).stdout) as typeof flood;
    assert.ok(limited.refusedFast >= 400, `refused at once: ${limited.refusedFast} of 500`);
    const afterFlood = ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats).refused;
    // Both per-source limits turn a flood away: the connection rate, and handshakes in progress at once.
    const perSource = (r: Record<string, number>) => r.rateLimited! + r.tooManyFromSource!;
    assert.ok(perSource(afterFlood) - perSource(afterIdle) >= 400, `refusals before ${JSON.stringify(afterIdle)} after ${JSON.stringify(afterFlood)}; flood ${JSON.stringify(limited)}`);
    await ctx.overlay.server.waitFor(/^Refused connections from 192\.168\.0\.20: too many (new connections per second|handshakes in progress) from this address/, { from: mark });
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d), 'the overlay still works');
  });

  it('a client forging its source address gets nothing delivered, and the drop counter says why', async () => {
    const before = ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats).clients.find((c) => c.deviceId === 'device-c')!.drops.spoofed;
    assert.equal((await ctx.lab.exec('c', ['ip', 'addr', 'add', '10.0.0.250/32', 'dev', 'mnedc0'])).code, 0);
    try {
      const forged = await ctx.lab.exec('c', ['ping', '-c', '3', '-i', '0.2', '-W', '1', '-I', '10.0.0.250', ctx.ips.d], { timeoutMs: 15_000 });
      assert.match(forged.stdout, / 0 received/);
    } finally {
      await ctx.lab.exec('c', ['ip', 'addr', 'del', '10.0.0.250/32', 'dev', 'mnedc0']);
    }
    const after = ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as Stats).clients.find((c) => c.deviceId === 'device-c')!.drops.spoofed;
    assert.ok(after - before >= 3, `spoofed drops grew by ${after - before}`);
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d), 'the genuine address still works');
  });

  it('a user outside root and the socket group cannot use the control socket; a group member can', async () => {
    // The directory must be traversable so the socket's own mode (0660) is what decides.
    chmodSync(ctx.overlay.dir, 0o711);
    const asNobody = (groups: string) => runCommand('setpriv', ['--reuid=65534', '--regid=65534', groups, process.execPath, CTL, '--socket', ctx.overlay.socket('srv'), 'status']);
    const denied = await asNobody('--clear-groups');
    assert.equal(denied.code, 3);
    assert.match(denied.stderr, /permission denied/);
    // The socket's group is root's here (no mnedc group on this machine): membership is what admits.
    const member = await asNobody('--groups=0');
    assert.equal(member.code, 0, member.stderr);
  });

  it('mnedcctl rotate-join: earlier join strings stop admitting devices, connected ones stay', async () => {
    const old = ctx.overlay.join;
    const rotated = await ctx.overlay.ctl('srv', ['rotate-join', '--json']);
    assert.equal(rotated.code, 0, rotated.stderr);
    const fresh = (rotated.json as { join: string }).join;
    assert.notEqual(fresh, old);
    assert.equal(fresh.split('.')[1], old.split('.')[1], 'the server identity is unchanged');
    const late = await ctx.overlay.startClientAs('a', 'late', { extra: `[client]\njoin = ${old}\ninterface = mnedc7\n`, noWait: true });
    await late.waitFor(/rejected this device: the join secret is wrong or was rotated/);
    late.signal('SIGTERM');
    await late.waitExit();
    // A second device on a's machine: a's own mnedc0 already holds the overlay subnet, which it must accept.
    const welcome = await ctx.overlay.startClientAs('a', 'welcome', { extra: `[client]\njoin = ${fresh}\ninterface = mnedc6\nallow_overlap = 10.0.0.0/24\n` });
    welcome.signal('SIGTERM');
    await welcome.waitExit();
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d), 'connected devices keep working');
  });

  it('every client refuses a server whose key was replaced, saying the identity changed', async () => {
    const state = path.join(ctx.overlay.dir, 'srv-state');
    for (const file of ['server.key', 'server.crt']) copyFileSync(path.join(state, file), path.join(ctx.overlay.dir, `${file}.saved`));
    const marks = new Map(DEVICES.map((d) => [d, ctx.overlay.client(d).lines.length]));
    ctx.overlay.server.signal('SIGTERM');
    await ctx.overlay.server.waitExit();
    rmSync(path.join(state, 'server.key'));
    rmSync(path.join(state, 'server.crt'));
    await ctx.overlay.startServer();
    for (const d of DEVICES) {
      const refused = await ctx.overlay.client(d).waitFor(/^Refusing 192\.168\.0\.10:3334: server identity changed: it presented SHA256:\S+ but the join string pins/, { from: marks.get(d)!, timeoutMs: 20_000 });
      assert.equal(refused.level, 50);
    }
    const leases = (await ctx.overlay.ctl('srv', ['leases', '--json'])).json as Array<{ connected: boolean }>;
    assert.equal(leases.filter((l) => l.connected).length, 0, 'no client talked to the new identity');
  });
});
