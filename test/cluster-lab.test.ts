/**
 * Issue 16's acceptance 1 and 2 in the lab (root: namespaces, TUNs, NAT): three real relays, each beside
 * a member of a real 3-member etcd, and twelve real clients, four on the main LAN and four behind each of
 * two NATs, spread over the relays. Every device pings every other (all pairs, across the mesh). Then
 * one relay is killed with SIGKILL while iperf3 and an interactive TCP session cross it: its devices are
 * on another relay with the same address within 5 s, the session lives on, iperf3 resumes; restarted,
 * the relay rejoins the mesh and takes devices again.
 */
import { strict as assert } from 'node:assert';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EtcdCluster } from '@mnedc/etcd';
import { CLIENT_BIN, ClusterLab, Daemon, relayAddress, REPO_ROOT, SERVER_BIN, type ClusterDevice, type LogLine } from '@mnedc/lab';
import { endorseRelay, loadOrCreateIdentity } from '@mnedc/server';
import { skipUnlessRoot } from './lab-suite';

const PORT = 3334;
const at = (line: LogLine): number => Date.parse(String(line.time));

describe('a cluster of three relays in the lab', { skip: skipUnlessRoot, timeout: 300_000 }, () => {
  let lab: ClusterLab;
  let etcd: EtcdCluster;
  let dir: string;
  const relays: Daemon[] = [];
  const clients = new Map<string, Daemon>();
  const overlayIp = new Map<string, string>();

  function relayConfig(i: number): string {
    const path = join(dir, `rel${i + 1}.ini`);
    writeFileSync(path, `[server]\nlisten = 0.0.0.0:${PORT}\ninterface = mnedc0\nsubnet = 10.77.0.0/24\nstate_dir = ${dir}/rel${i + 1}-state\n` +
      `keepalive_ms = 1000\ndead_after_ms = 3000\n[control]\nsocket = ${dir}/rel${i + 1}.sock\n` +
      `[cluster]\netcd = ${etcd.endpoints.join(', ')}\nnetwork = lab-net\nadvertise = ${relayAddress(i)}:${PORT}\n`);
    return path;
  }

  async function startRelay(i: number): Promise<Daemon> {
    const daemon = new Daemon(`rel${i + 1}`, lab.spawn(`rel${i + 1}`, [process.execPath, SERVER_BIN, '--config', relayConfig(i), '--log-format', 'json'], { pipe: true }));
    relays[i] = daemon;
    await daemon.waitFor(/^Relay listening/);
    return daemon;
  }

  /** The device's relays: its own first (preferred), then the others. */
  async function startClient(device: ClusterDevice, index: number, join: string, only?: number): Promise<Daemon> {
    const order = only !== undefined ? [only] : [index % 3, (index + 1) % 3, (index + 2) % 3];
    const config = join_(dir, `${device.name}.ini`);
    writeFileSync(config, `[client]\nserver = ${order.map((r) => `${relayAddress(r)}:${PORT}`).join(', ')}\njoin = ${join}\n` +
      `device_id = ${device.name}\ninterface = mnedc0\nstate_dir = ${dir}/${device.name}-state\n[control]\nsocket = ${dir}/${device.name}.sock\n` +
      `[discovery]\nhook_dir =\npeers_file =\nhosts_file =\n`, { mode: 0o600 });
    const daemon = new Daemon(device.name, lab.spawn(device.name, [process.execPath, CLIENT_BIN, '--config', config, '--log-format', 'json'], { pipe: true }));
    clients.set(device.name, daemon);
    const connected = await daemon.waitFor(/^Connected to /);
    overlayIp.set(device.name, String(connected.ip));
    return daemon;
  }
  const join_ = join;

  before(async () => {
    lab = ClusterLab.create();
    dir = mkdtempSync(join(tmpdir(), `mnedc-${lab.prefix}`));
    etcd = await EtcdCluster.start({
      hosts: lab.relays.map((_, i) => relayAddress(i)),
      wrap: (argv, i) => ['ip', 'netns', 'exec', lab.ns(lab.relays[i]!), ...argv],
      health: async (member) => {
        const node = lab.relays[Number(member.spec.name.slice(1))]!;
        return (await lab.exec(node, ['etcdctl', '--endpoints', member.clientUrl, '--command-timeout=1s', 'endpoint', 'health'], 5_000)).code === 0;
      },
    });
  });

  after(async () => {
    for (const daemon of [...clients.values(), ...relays]) if (daemon && !daemon.exited) daemon.signal('SIGKILL');
    await etcd?.stop();
    lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('12 devices on 3 relays (3 etcd members): every device pings every other; kill -9 of a relay under iperf3 and an interactive session', async (t) => {
    // The first relay holds the network key; the others have keys of their own, endorsed by it.
    await startRelay(0);
    const network = join(dir, 'rel1-state');
    for (const i of [1, 2]) {
      const state = join(dir, `rel${i + 1}-state`);
      mkdirSync(state, { recursive: true });
      writeFileSync(join(state, 'network.endorsement'), endorseRelay(network, loadOrCreateIdentity(state).identity.certPem, `rel${i + 1}`, 30, Date.now()));
      copyFileSync(join(network, 'join.secret'), join(state, 'join.secret'));
    }
    await Promise.all([startRelay(1), startRelay(2)]);
    await Promise.all(relays.map((r) => r.waitFor(/^Mesh link to relay .* is up/)));
    const ctl = await lab.exec('rel1', [process.execPath, join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js'), '--socket', join(dir, 'rel1.sock'), 'join', '--json']);
    const joinString = (JSON.parse(ctl.stdout) as { join: string }).join;
    await Promise.all(lab.devices.map((d, i) => startClient(d, i, joinString)));
    assert.equal(new Set(overlayIp.values()).size, 12, 'twelve addresses');

    // Acceptance 1: all 132 ordered pairs, each source's pings in turn, the sources in parallel.
    const failed: string[] = [];
    await Promise.all(lab.devices.map(async (from) => {
      for (const to of lab.devices) {
        if (to === from) continue;
        let ok = false;
        // A device that just joined is routed on the other relays once their watch saw it: moments.
        for (let attempt = 0; attempt < 3 && !ok; attempt++) ok = (await lab.exec(from.name, ['ping', '-c', '1', '-W', '2', overlayIp.get(to.name)!], 10_000)).code === 0;
        if (!ok) failed.push(`${from.name} → ${to.name}`);
      }
    }));
    assert.deepEqual(failed, [], 'every pair answers');

    // Issue 17 across relays: an mDNS datagram from dev1 (on rel1) reaches the 11 others on all three
    // relays exactly once (to each relay once, from there to its devices only: no loop, no copy); IPv6
    // crosses the mesh as IPv4 does.
    const listeners = lab.devices.slice(1).map((d) => new Daemon(`mdns ${d.name}`, lab.spawn(d.name, [process.execPath, '-e', MDNS_LISTEN, overlayIp.get(d.name)!], { pipe: true })));
    await Promise.all(listeners.map((l) => l.waitForRaw(/^joined$/)));
    const sent = await lab.exec('dev1', [process.execPath, '-e', MDNS_SEND, overlayIp.get('dev1')!, 'who is there'], 10_000);
    assert.equal(sent.code, 0, sent.stderr);
    await Promise.all(listeners.map((l) => l.waitForRaw(/^got who is there from /)));
    const status = async (name: string) => JSON.parse((await lab.exec(name, [process.execPath, join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js'), '--socket', join(dir, `${name}.sock`), 'status', '--json'])).stdout) as { ip6?: string };
    const [dev3, dev8] = [await status('dev3'), await status('dev8')];
    assert.ok(dev3.ip6 && dev8.ip6, 'IPv6 addresses on devices of the cluster');
    assert.equal((await lab.exec('dev3', ['ping', '-6', '-c', '2', '-i', '0.2', '-W', '2', dev8.ip6!], 10_000)).code, 0, `dev3 → dev8 over IPv6 across relays`);
    for (const l of listeners) {
      assert.equal(l.raw.filter((line) => line.startsWith('got ')).length, 1, `${l.name} got it once`);
      l.signal('SIGKILL');
    }

    // Acceptance 2: dev1 (on rel1, main LAN) sends iperf3 to dev2 (on rel2); dev4 (on rel1) holds an
    // interactive session with dev8 (on rel2, behind a NAT). rel1 is killed mid-way.
    const iperfServer = lab.spawn('dev2', ['iperf3', '-s', '-1', '-B', overlayIp.get('dev2')!], { pipe: true });
    const echo = lab.spawn('dev8', [process.execPath, '-e', ECHO_SERVER, overlayIp.get('dev8')!], { pipe: true });
    await new Promise((resolve) => echo.stdout!.once('data', resolve));
    const session = new Daemon('session', lab.spawn('dev4', [process.execPath, '-e', INTERACTIVE_SESSION, overlayIp.get('dev8')!], { pipe: true }));
    await session.waitFor(/^echoed 5$/);
    const iperf = lab.exec('dev1', ['iperf3', '-c', overlayIp.get('dev2')!, '-t', '16', '-i', '1', '-J'], 60_000);
    await new Promise((resolve) => setTimeout(resolve, 4_000)); // iperf3 running for a while: a phase of the scenario
    const onRel1 = lab.devices.filter((_, i) => i % 3 === 0).map((d) => d.name);
    const marks = new Map(onRel1.map((name) => [name, clients.get(name)!.lines.length]));
    const killedAt = Date.now();
    relays[0]!.signal('SIGKILL');
    const backAfter: number[] = [];
    for (const name of onRel1) {
      const back = await clients.get(name)!.waitFor(/^Connected to /, { from: marks.get(name)!, timeoutMs: 10_000 });
      backAfter.push(at(back) - killedAt);
      assert.ok(at(back) - killedAt < 5_000, `${name} back ${at(back) - killedAt} ms after the kill`);
      assert.equal(String(back.ip), overlayIp.get(name), `${name} keeps its address`);
      assert.notEqual(String(back.server), `${relayAddress(0)}:${PORT}`);
    }
    const result = JSON.parse((await iperf).stdout) as { intervals: Array<{ sum: { start: number; bits_per_second: number } }>; error?: string };
    assert.equal(result.error, undefined, `iperf3: ${result.error}`);
    t.diagnostic(`back on another relay after ${backAfter.join(', ')} ms; iperf3 per second: ${result.intervals.map((i) => Math.round(i.sum.bits_per_second / 1e6)).join(' ')} Mbit/s`);
    const late = result.intervals.filter((i) => i.sum.start >= 12);
    assert.ok(late.length >= 3 && late.every((i) => i.sum.bits_per_second > 1e6), `iperf3 resumed: ${late.map((i) => Math.round(i.sum.bits_per_second / 1e6)).join(', ')} Mbit/s`);
    const echoed = session.lines.length;
    await session.waitFor(/^echoed /, { from: echoed + 5 });
    assert.equal(session.exited, null, `the session lives on: ${session.tail()}`);
    iperfServer.kill();

    // Acceptance 4 across relays: every etcd member stopped, devices on different relays still reach each
    // other (routes are the relays' own copies); back, nothing to catch up by hand.
    await Promise.all(etcd.members.map((m) => m.kill()));
    for (const [from, to] of [['dev3', 'dev5'], ['dev8', 'dev9'], ['dev6', 'dev2']] as const) {
      assert.equal((await lab.exec(from, ['ping', '-c', '2', '-i', '0.2', '-W', '2', overlayIp.get(to)!], 10_000)).code, 0, `${from} → ${to} with etcd down`);
    }
    for (const m of etcd.members) m.start('existing');
    await Promise.all(etcd.members.map((m) => m.ready()));

    // rel1 back: it rejoins the mesh and takes a device configured with it alone.
    await startRelay(0);
    await relays[0]!.waitFor(/^Mesh link to relay rel2 .* is up/);
    await relays[0]!.waitFor(/^Mesh link to relay rel3 .* is up/);
    const dev1Ip = overlayIp.get('dev1');
    clients.get('dev1')!.signal('SIGTERM');
    await clients.get('dev1')!.waitExit();
    await startClient(lab.devices[0]!, 0, joinString, 0);
    assert.equal(overlayIp.get('dev1'), dev1Ip, 'the same address on the restarted relay');
    for (const to of ['dev2', 'dev9']) {
      let ok = false;
      for (let attempt = 0; attempt < 3 && !ok; attempt++) ok = (await lab.exec('dev1', ['ping', '-c', '1', '-W', '2', overlayIp.get(to)!], 10_000)).code === 0;
      assert.ok(ok, `dev1 on the restarted rel1 reaches ${to}`);
    }
  });
});

/** Joins 224.0.0.251 on the overlay address argv[1] (port 5353), says "joined", then "got <text> from <address>" per datagram. */
const MDNS_LISTEN = `
const dgram = require('dgram');
const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
s.on('message', (m, r) => console.log('got ' + m + ' from ' + r.address));
s.bind(5353, () => { s.addMembership('224.0.0.251', process.argv[1]); console.log('joined'); });
`;

/** Sends argv[2] to 224.0.0.251:5353 out of the overlay address argv[1], TTL 255 as mDNS does. */
const MDNS_SEND = `
const dgram = require('dgram');
const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
s.bind(0, process.argv[1], () => {
  s.setMulticastInterface(process.argv[1]);
  s.setMulticastTTL(255);
  s.send(process.argv[2], 5353, '224.0.0.251', (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); });
});
`;

/** A TCP echo server on port 7000 of the given address; says "listening" once it is. */
const ECHO_SERVER = `
const net = require('net');
net.createServer((s) => s.pipe(s)).listen(7000, process.argv[1], () => console.log('listening'));
`;

/**
 * An interactive session, as a person at an ssh prompt would have: a line every 100 ms on one TCP
 * connection, each echoed back; it logs "echoed N" as JSON lines and exits non-zero if the connection
 * breaks, so the test sees it end.
 */
const INTERACTIVE_SESSION = `
const net = require('net');
const say = (msg) => console.log(JSON.stringify({ time: new Date().toISOString(), msg }));
const s = net.connect(7000, process.argv[1]);
let n = 0, buffered = '';
s.on('connect', () => setInterval(() => s.write(++n + '\\n'), 100));
s.on('data', (d) => { buffered += d; const lines = buffered.split('\\n'); buffered = lines.pop(); for (const l of lines) say('echoed ' + l); });
s.on('error', (e) => { say('error ' + e.message); process.exit(2); });
s.on('close', () => { say('closed'); process.exit(3); });
`;
