import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { linkSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, type RpcMethods } from '@mnedc/common';
import { formatClock, run, type RunIo } from '../src';
import {
  Capture, NOW, clientPeers, clientStats, clientStatus, clusterInfo, fakeClient, fakeServer, leases, serverPeers, serverStats, serverStatus,
} from './fixtures';

const TIMEOUT = { timeout: 10_000 };
let dir: string;
let counter = 0;
const socketPath = (name = 'd') => join(dir, `${name}${++counter}.sock`);

before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedcctl-')); });
after(() => rmSync(dir, { recursive: true, force: true }));


interface Result { code: number; stdout: string; stderr: string }

/** Runs mnedcctl in-process; the default sockets point at absent paths unless a test says otherwise. */
async function ctl(argv: string[], io: Partial<RunIo> = {}): Promise<Result> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await run(argv, {
    stdout, stderr, env: {}, now: () => NOW, defaultSockets: [join(dir, 'no-server.sock'), join(dir, 'no-client.sock')], ...io,
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

async function daemon(methods: RpcMethods): Promise<ControlServer> {
  return ControlServer.listen(socketPath(), methods);
}

describe('against a server daemon', () => {
  let server: ControlServer;
  let fake: ReturnType<typeof fakeServer>;
  before(async () => {
    fake = fakeServer();
    server = await daemon(fake.methods);
  });
  after(() => server.close());
  const on = (...argv: string[]) => ['--socket', server.path, ...argv];

  test('status', TIMEOUT, async () => {
    const human = await ctl(on('status'));
    assert.equal(human.code, 0);
    assert.equal(human.stderr, '');
    assert.equal(human.stdout,
      'daemon         server\n' +
      'version        0.1.0\n' +
      'pid            4242\n' +
      'uptime         2h 5m\n' +
      'listen         0.0.0.0:3334\n' +
      'subnet         10.0.0.0/24\n' +
      'server ip      10.0.0.1\n' +
      'interface      mnedc0\n' +
      'clients        2\n' +
      'leases         3 used, 250 free of 253\n' +
      'bound devices  5\n' +
      'fingerprint    sha256:9f2c1ab0\n');
    const json = await ctl(on('status', '--json'));
    assert.equal(json.code, 0);
    assert.deepEqual(JSON.parse(json.stdout), serverStatus);
  });

  test('peers', TIMEOUT, async () => {
    const human = await ctl(on('peers'));
    assert.equal(human.code, 0);
    assert.equal(human.stdout,
      'DEVICE    IP        HOSTNAME  REMOTE              SINCE           RX       TX               RX RATE               TX RATE    QUEUE    RTT  DROPS  MISSED\n' +
      'device-a  10.0.0.2  alpha     192.168.1.20:40112  3m ago     1.5 MiB  500 KiB  850 pkt/s 1.2 Mbit/s  2.5 pkt/s 9.6 Kbit/s      0 B  12 ms      3       0\n' +
      'device-b  10.0.0.3  -         10.1.0.7:51000      2h 5m ago      0 B    252 B       0 pkt/s 0 bit/s       0 pkt/s 0 bit/s  2.0 KiB      -      0       3\n');
    const json = await ctl(['peers', '--json', '--socket', server.path]);
    assert.deepEqual(JSON.parse(json.stdout), serverPeers);
  });

  test('leases', TIMEOUT, async () => {
    const human = await ctl(on('leases'));
    assert.equal(human.code, 0);
    assert.equal(human.stdout,
      'DEVICE    IP        HOSTNAME  STATE    LAST SEEN  CREATED  REMOTE              UNDERLAY\n' +
      'device-a  10.0.0.2  alpha     online   now        3d ago   192.168.1.20:40112  192.168.1.20,fd00::20\n' +
      'device-c  10.0.0.4  gamma     offline  1h 5m ago  1d ago   -                   -\n');
    assert.deepEqual(JSON.parse((await ctl(on('leases', '--json'))).stdout), leases);
  });

  test('stats', TIMEOUT, async () => {
    const human = await ctl(on('stats'));
    assert.equal(human.code, 0);
    assert.equal(human.stdout,
      'DEVICE    IP        RX PKTS  RX BYTES  TX PKTS  TX BYTES  NO ROUTE  SPOOFED  MALFORMED  QUEUE FULL  MULTICAST  BROADCAST  IPV6  RELAY DOWN  MISSED\n' +
      '(total)   -            1200   1.5 MiB      803   500 KiB         1        0          0           2          0          0     0           0       -\n' +
      '(local)   -              10     840 B       12    1008 B         0        0          0           0          0          0     0           0       -\n' +
      'device-a  10.0.0.2     1200   1.5 MiB      800   500 KiB         1        0          0           2          0          0     0           0       0\n' +
      '\n' +
      'refused (connections turned away):\n' +
      '  rate limited          101\n' +
      '  too many handshakes   102\n' +
      '  too many from source  103\n' +
      '  evicted               104\n' +
      '  handshake timeout     105\n' +
      '  tls failed            106\n' +
      '  bad hello             107\n' +
      '  auth failed           108\n' +
      '  bound to other key    109\n' +
      '  device join rate      110\n' +
      '  max clients           111\n' +
      '  max devices           112\n' +
      '  new device rate       113\n' +
      '  pool full             114\n' +
      '  cluster unavailable   115\n' +
      '\n' +
      'cut (sessions the relay ended):\n' +
      '  over budget  115\n' +
      '\n' +
      'multicast (fanned out to every other device):\n' +
      'GROUP  RECEIVED  DELIVERED  RATE LIMITED  DUPLICATE  QUEUE FULL\n' +
      'mdns         40       1600             3          2           1\n' +
      'ssdp          4        160             0          0           0\n');
    assert.deepEqual(JSON.parse((await ctl(on('stats', '--json'))).stdout), serverStats);
  });

  test('kick and release send the device ID and report the result', TIMEOUT, async () => {
    assert.deepEqual(await ctl(on('kick', 'device-a')), { code: 0, stdout: 'kicked device-a\n', stderr: '' });
    assert.deepEqual(JSON.parse((await ctl(on('kick', 'device-a', '--json'))).stdout), { kicked: true, deviceId: 'device-a' });
    assert.deepEqual(await ctl(on('release', 'device-c')), { code: 0, stdout: 'released device-c (10.0.0.4)\n', stderr: '' });
    assert.deepEqual(JSON.parse((await ctl(on('release', '--json', 'device-c'))).stdout),
      { released: true, deviceId: 'device-c', ip: '10.0.0.4' });
    assert.deepEqual(fake.calls[0], ['kick', { deviceId: 'device-a' }]);
    assert.deepEqual(fake.calls.at(-1), ['release', { deviceId: 'device-c' }]);
  });

  test('cluster: the network, what etcd said, and each relay with its devices', TIMEOUT, async () => {
    assert.deepEqual(await ctl(on('cluster')), {
      code: 0, stderr: '',
      stdout: 'network fleet-7, etcd http://10.1.0.5:2379: v3.4.23, has a leader, revision 1234\n' +
        'RELAY               ADVERTISE      STARTED    DEVICES  MESH     RTT      SENT  RECEIVED\n' +
        'server-aaaa (this)  10.1.0.5:3334  2h 5m ago     1204  -          -         -         -\n' +
        'server-bbbb         10.1.0.6:3334  5m ago         987  up    0.8 ms  12.0 MiB   9.0 MiB\n' +
        'server-cccc         10.1.0.7:3334  1m ago           0  down       -       0 B       0 B\n' +
        'server-cccc: connect ECONNREFUSED 10.1.0.7:3334\n',
    });
    assert.deepEqual(JSON.parse((await ctl(on('cluster', '--json'))).stdout), clusterInfo);
  });

  test('an error answer exits 1 naming the method', TIMEOUT, async () => {
    assert.deepEqual(await ctl(on('kick', 'device-x')),
      { code: 1, stdout: '', stderr: 'mnedcctl: kick: device device-x is not connected\n' });
    assert.deepEqual(await ctl(on('release', 'device-x', '--json')),
      { code: 1, stdout: '', stderr: 'mnedcctl: release: device device-x has no lease\n' });
  });

  test('MNEDC_SOCKET is used when --socket is not given, and --socket wins over it', TIMEOUT, async () => {
    const viaEnv = await ctl(['peers', '--json'], { env: { MNEDC_SOCKET: server.path } });
    assert.deepEqual(JSON.parse(viaEnv.stdout), serverPeers);
    const overridden = await ctl(['--socket', join(dir, 'elsewhere.sock'), 'peers'], { env: { MNEDC_SOCKET: server.path } });
    assert.equal(overridden.code, 3);
    assert.match(overridden.stderr, /elsewhere\.sock/);
  });
});

describe('against a client daemon', () => {
  let client: ControlServer;
  before(async () => { client = await daemon(fakeClient().methods); });
  after(() => client.close());
  const on = (...argv: string[]) => ['--socket', client.path, ...argv];

  test('status', TIMEOUT, async () => {
    const human = await ctl(on('status'));
    assert.equal(human.code, 0);
    assert.equal(human.stdout,
      'daemon           client\n' +
      'version          0.1.0\n' +
      'pid              777\n' +
      'uptime           1m 5s\n' +
      'state            connected (since 42s ago)\n' +
      'server           relay.example:3334\n' +
      'device           device-a\n' +
      'ip               10.0.0.2/24\n' +
      'ip6              fd12:3456:789a::a00:2/64\n' +
      'interface        mnedc0\n' +
      'offload          on\n' +
      'discovery        full\n' +
      'multicast        mdns, ssdp, broadcast\n' +
      'reconnects       1\n' +
      'failed attempts  7\n' +
      'last error       -\n');
    assert.deepEqual(JSON.parse((await ctl(on('status', '--json'))).stdout), clientStatus);
  });

  test('peers', TIMEOUT, async () => {
    assert.equal((await ctl(on('peers'))).stdout,
      'DEVICE    IP        HOSTNAME  SINCE    UNDERLAY\n' +
      'device-b  10.0.0.3  beta      10m ago  10.1.0.7\n');
    assert.deepEqual(JSON.parse((await ctl(on('peers', '--json'))).stdout), clientPeers);
  });

  test('stats', TIMEOUT, async () => {
    assert.equal((await ctl(on('stats'))).stdout,
      '         RX PKTS  RX BYTES  TX PKTS  TX BYTES\n' +
      'tunnel       500  62.5 KiB      450   2.0 MiB\n' +
      'session      450   2.1 MiB      500  68.4 KiB\n' +
      '\n' +
      'tunnel tx drops    0\n' +
      'tunnel rx errors   0\n' +
      'tunnel rx batches  120\n' +
      'offline drops      4\n' +
      'malformed drops    5\n' +
      'drops from relay   6\n' +
      'ipv6 drops         7\n' +
      'reconnects         1\n' +
      'failed attempts    8\n' +
      'rtt                3.3 ms\n');
    assert.deepEqual(JSON.parse((await ctl(on('stats', '--json'))).stdout), clientStats);
  });

  test('server-only commands are usage errors naming the client socket', TIMEOUT, async () => {
    for (const argv of [['leases'], ['kick', 'device-b'], ['release', 'device-b', '--json']]) {
      const result = await ctl(on(...argv));
      assert.equal(result.code, 2);
      assert.equal(result.stdout, '');
      assert.equal(result.stderr, `mnedcctl: ${argv[0]} is a server command; ${client.path} is a client daemon\n`);
    }
  });
});

describe('with both default sockets live', () => {
  let server: ControlServer;
  let client: ControlServer;
  let io: Partial<RunIo>;
  before(async () => {
    server = await daemon(fakeServer().methods);
    client = await daemon(fakeClient().methods);
    io = { defaultSockets: [server.path, client.path] };
  });
  after(async () => {
    await server.close();
    await client.close();
  });

  test('status, peers and stats show both daemons', TIMEOUT, async () => {
    const human = await ctl(['status'], io);
    assert.equal(human.code, 0);
    assert.match(human.stdout, new RegExp(`^server daemon \\(${server.path}\\):\ndaemon         server\n`));
    assert.match(human.stdout, new RegExp(`\n\nclient daemon \\(${client.path}\\):\ndaemon           client\n`));
    assert.deepEqual(JSON.parse((await ctl(['status', '--json'], io)).stdout), { server: serverStatus, client: clientStatus });
    assert.deepEqual(JSON.parse((await ctl(['peers', '--json'], io)).stdout), { server: serverPeers, client: clientPeers });
    assert.deepEqual(JSON.parse((await ctl(['stats', '--json'], io)).stdout), { server: serverStats, client: clientStats });
  });

  test('server-only commands go to the server alone', TIMEOUT, async () => {
    assert.deepEqual(JSON.parse((await ctl(['leases', '--json'], io)).stdout), leases);
  });

  test('with only one of them live, output is that daemon\'s alone', TIMEOUT, async () => {
    const onlyClient = await ctl(['peers', '--json'], { defaultSockets: [join(dir, 'absent.sock'), client.path] });
    assert.equal(onlyClient.code, 0);
    assert.deepEqual(JSON.parse(onlyClient.stdout), clientPeers);
    const leasesOnClient = await ctl(['leases'], { defaultSockets: [join(dir, 'absent.sock'), client.path] });
    assert.equal(leasesOnClient.code, 2);
  });
});

describe('usage', () => {
  for (const [argv, message] of [
    [[], 'no command given'],
    [['frobnicate'], "unknown command 'frobnicate'"],
    [['kick'], 'kick needs a device ID'],
    [['release', '--json'], 'release needs a device ID'],
    [['peers', '--verbose'], "unknown option '--verbose'"],
    [['status', 'extra'], "unexpected argument 'extra'"],
    [['kick', 'a', 'b'], "unexpected argument 'b'"],
    [['status', '--socket'], '--socket needs a path'],
    [['status', '--socket', ''], '--socket needs a path'],
  ] as Array<[string[], string]>) {
    test(`mnedcctl ${argv.join(' ')} is a usage error`, TIMEOUT, async () => {
      const result = await ctl(argv);
      assert.equal(result.code, 2);
      assert.equal(result.stdout, '');
      assert.ok(result.stderr.startsWith(`mnedcctl: ${message}\nusage: mnedcctl [--socket PATH] `), result.stderr);
    });
  }

  test('the short usage is the command\'s own when the command is known', TIMEOUT, async () => {
    assert.match((await ctl(['kick'])).stderr, /\nusage: mnedcctl \[--socket PATH\] kick ID \[--json\]\nTry 'mnedcctl kick --help'/);
  });

  for (const command of ['status', 'peers', 'leases', 'stats', 'kick', 'release', 'watch']) {
    test(`mnedcctl ${command} --help`, TIMEOUT, async () => {
      // No daemon is needed for help, so none is running here.
      const result = await ctl([command, '--help']);
      assert.equal(result.code, 0);
      assert.equal(result.stderr, '');
      const operand = command === 'kick' || command === 'release' ? ' ID' : command === 'peers' || command === 'leases' ? ' [--filter TEXT] [--limit N]' : '';
      assert.ok(result.stdout.startsWith(`usage: mnedcctl [--socket PATH] ${command}${operand} [--json]\n\n`), result.stdout);
      assert.deepEqual(await ctl(['-h', command]), result);
    });
  }

  test('mnedcctl --help lists every command', TIMEOUT, async () => {
    const result = await ctl(['--help']);
    assert.equal(result.code, 0);
    for (const command of ['status', 'peers', 'leases', 'stats', 'kick ID', 'release ID', 'watch']) {
      assert.match(result.stdout, new RegExp(`\n  ${command} +\\S`));
    }
    assert.deepEqual(await ctl(['-h']), result);
  });
});

describe('without a daemon', () => {
  test('a named socket that does not exist exits 3 naming it', TIMEOUT, async () => {
    const path = join(dir, 'missing.sock');
    assert.deepEqual(await ctl(['--socket', path, 'status']),
      { code: 3, stdout: '', stderr: `mnedcctl: no daemon listening on ${path} (no such socket)\n` });
  });

  test('the defaults are both named', TIMEOUT, async () => {
    const result = await ctl(['peers']);
    assert.equal(result.code, 3);
    assert.equal(result.stderr,
      `mnedcctl: no daemon listening on ${join(dir, 'no-server.sock')} (no such socket) or ${join(dir, 'no-client.sock')} (no such socket)\n`);
  });

  test('a socket nobody listens on is reported as refused', TIMEOUT, async () => {
    const server = await daemon(fakeServer().methods);
    const path = server.path;
    const stale = socketPath('stale');
    linkSync(path, stale);
    await server.close();
    const result = await ctl(['--socket', stale, 'status']);
    assert.equal(result.code, 3);
    assert.equal(result.stderr, `mnedcctl: no daemon listening on ${stale} (connection refused)\n`);
  });

  test('a daemon that never answers is given up on', TIMEOUT, async () => {
    const server = await daemon({ status: () => new Promise(() => undefined) });
    try {
      const result = await ctl(['--socket', server.path, 'status'], { timeoutMs: 200 });
      assert.equal(result.code, 3);
      assert.equal(result.stderr, `mnedcctl: no answer to status from the daemon on ${server.path} within 0.2 s\n`);
    } finally {
      await server.close();
    }
  });

  test('a daemon failing its status call exits 1', TIMEOUT, async () => {
    const server = await daemon({ status: () => { throw new Error('not ready'); } });
    try {
      assert.deepEqual(await ctl(['--socket', server.path, 'peers']), { code: 1, stdout: '', stderr: 'mnedcctl: status: not ready\n' });
    } finally {
      await server.close();
    }
  });
});

describe('watch', () => {
  const event = { event: 'up', deviceId: 'device-b', ip: '10.0.0.3', hostname: 'beta', at: NOW };

  test('prints one line per notification and exits 0 when interrupted', TIMEOUT, async () => {
    const fake = fakeServer();
    const server = await daemon(fake.methods);
    try {
      const stdout = new Capture();
      const stderr = new Capture();
      const controller = new AbortController();
      const done = run(['--socket', server.path, 'watch'], { stdout, stderr, env: {}, now: () => NOW, signal: controller.signal });
      const context = await fake.watched;
      await stderr.until(/watching/);
      context.notify('peer', event);
      context.notify('peer', { ...event, event: 'down', hostname: '' });
      context.notify('lease', { deviceId: 'device-b' });
      await stdout.until(/lease/);
      controller.abort();
      assert.equal(await done, 0);
      assert.equal(stdout.text,
        `${formatClock(NOW)} up   device-b 10.0.0.3 beta\n` +
        `${formatClock(NOW)} down device-b 10.0.0.3 -\n` +
        `${formatClock(NOW)} lease {"deviceId":"device-b"}\n`);
      assert.equal(stderr.text, `mnedcctl: watching the server daemon on ${server.path}\n`);
    } finally {
      await server.close();
    }
  });

  test('--json prints one compact object per line', TIMEOUT, async () => {
    const fake = fakeClient();
    const server = await daemon(fake.methods);
    try {
      const stdout = new Capture();
      const controller = new AbortController();
      const stderr = new Capture();
      const done = run(['watch', '--json', '--socket', server.path], { stdout, stderr, env: {}, signal: controller.signal });
      await stderr.until(/watching/);
      (await fake.watched).notify('peer', event);
      await stdout.until(/\n/);
      controller.abort();
      assert.equal(await done, 0);
      assert.equal(stdout.text, `${JSON.stringify({ method: 'peer', params: event })}\n`);
    } finally {
      await server.close();
    }
  });

  test('exits 3 when the daemon goes away', TIMEOUT, async () => {
    const fake = fakeServer();
    const server = await daemon(fake.methods);
    const stdout = new Capture();
    const stderr = new Capture();
    const done = run(['--socket', server.path, 'watch'], { stdout, stderr, env: {} });
    await stderr.until(/watching/);
    await server.close();
    assert.equal(await done, 3);
    assert.equal(stderr.text, `mnedcctl: watching the server daemon on ${server.path}\n` +
      `mnedcctl: the daemon on ${server.path} closed the connection\n`);
  });
});

describe('watch on both default daemons', () => {
  test('labels each line with the daemon it came from', TIMEOUT, async () => {
    const serverFake = fakeServer();
    const clientFake = fakeClient();
    const server = await daemon(serverFake.methods);
    const client = await daemon(clientFake.methods);
    try {
      const stdout = new Capture();
      const stderr = new Capture();
      const controller = new AbortController();
      const done = run(['watch', '--json'], {
        stdout, stderr, env: {}, signal: controller.signal, defaultSockets: [server.path, client.path],
      });
      await stderr.until(/watching/);
      assert.equal(stderr.text, `mnedcctl: watching the server daemon on ${server.path} and the client daemon on ${client.path}\n`);
      (await serverFake.watched).notify('peer', { event: 'up', deviceId: 'device-b', ip: '10.0.0.3', hostname: 'beta', at: NOW });
      await stdout.until(/\n/);
      (await clientFake.watched).notify('peer', { event: 'down', deviceId: 'device-c', ip: '10.0.0.4', hostname: 'gamma', at: NOW });
      await stdout.until(/\n.*\n/);
      controller.abort();
      assert.equal(await done, 0);
      assert.deepEqual(stdout.text.trim().split('\n').map((line) => JSON.parse(line)), [
        { daemon: 'server', method: 'peer', params: { event: 'up', deviceId: 'device-b', ip: '10.0.0.3', hostname: 'beta', at: NOW } },
        { daemon: 'client', method: 'peer', params: { event: 'down', deviceId: 'device-c', ip: '10.0.0.4', hostname: 'gamma', at: NOW } },
      ]);
    } finally {
      await server.close();
      await client.close();
    }
  });
});

describe('interruption', () => {
  test('an interruption before any answer ends other commands with 130', TIMEOUT, async () => {
    let called!: () => void;
    const calledPeers = new Promise<void>((resolve) => { called = resolve; });
    const server = await daemon({
      status: () => serverStatus,
      peers: () => { called(); return new Promise(() => undefined); },
    });
    try {
      const controller = new AbortController();
      const done = run(['--socket', server.path, 'peers'], { stdout: new Capture(), stderr: new Capture(), env: {}, signal: controller.signal });
      await calledPeers;
      controller.abort();
      assert.equal(await done, 130);
    } finally {
      await server.close();
    }
  });
});
