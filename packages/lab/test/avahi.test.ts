/**
 * The mDNS and SSDP harness (src/avahi.ts, src/ssdp.ts) on its own, no mnedc involved.
 *
 * Parsers and message builders are tested as plain functions. The real runs need root, iproute2 and (for
 * mDNS) avahi-daemon, avahi-utils and dbus-daemon, and skip themselves otherwise. Each builds its own pair
 * of namespaces `mnav<hex>-a` / `-b` (SSDP: `mnsd<hex>-…`) joined by a veth pair created directly inside
 * them (10.213.0.1-2/24, fd13:213::1-2/64), so nothing touches the root namespace, and removes them, its
 * processes, mounts and temporary directories afterwards, also if the test process exits early.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { avahiConfig, avahiUnavailable, parseAvahiBrowse, parseAvahiTxt, startAvahi, unescapeAvahiLabel, type Avahi } from '../src/avahi';
import {
  answersFor, buildMSearch, buildSearchResponse, parseArgs, parseMx, parseSearchResponse, parseSsdp, SSDP_CLI, type SsdpAnswer,
} from '../src/ssdp';

// ------------------------------------------------------------------------------------- no root needed --

describe('avahi-browse output and configuration', () => {
  it('parses resolved entries, unescaping names and TXT strings, and skips the rest', () => {
    const output = [
      '+;veth-b;IPv4;svc\\032test\\0591;_test._tcp;local',
      '=;veth-b;IPv4;svc\\032test\\0591;_test._tcp;local;host-a.local;10.213.0.1;4242;"k=v" "q=\\"x;y\\"" "\\195\\169"',
      '=;veth-b;IPv6;a\\.b\\\\c;_test._tcp;local;host-a.local;fe80::1;80;',
      '=;veth-b;IPv6;a\\.b\\\\c;_test._tcp;local;host-a.local;fe80::1;80;',
      '=;veth-b;IPv4;broken;_test._tcp;local;host-a.local;10.0.0.1;notaport;',
      'Failed to resolve service ...',
    ].join('\n');
    assert.deepEqual(parseAvahiBrowse(output), [
      { interface: 'veth-b', protocol: 'ipv4', name: 'svc test;1', type: '_test._tcp', domain: 'local', host: 'host-a.local',
        address: '10.213.0.1', port: 4242, txt: ['k=v', 'q="x;y"', 'é'] },
      { interface: 'veth-b', protocol: 'ipv6', name: 'a.b\\c', type: '_test._tcp', domain: 'local', host: 'host-a.local',
        address: 'fe80::1', port: 80, txt: [] },
    ]);
    assert.equal(unescapeAvahiLabel('caf\\195\\169'), 'café');
    assert.throws(() => parseAvahiTxt('"open'));
  });

  it('generates the configuration the harness promises', () => {
    const conf = avahiConfig({ interfaces: ['veth-a', 'tun0'], ipv6: false, hostName: 'h1' }).split('\n');
    for (const line of ['host-name=h1', 'allow-interfaces=veth-a,tun0', 'use-ipv4=yes', 'use-ipv6=no', 'allow-point-to-point=yes',
      'enable-dbus=yes', 'enable-wide-area=no', 'publish-workstation=no', 'disallow-other-stacks=no']) {
      assert.ok(conf.includes(line), `missing ${line}`);
    }
  });

  it('refuses bad arguments before starting anything', async () => {
    await assert.rejects(startAvahi('bad name', { interfaces: ['eth0'], hostName: 'h' }), /bad namespace name/);
    await assert.rejects(startAvahi('mnav-none-such', { interfaces: ['eth0'], hostName: 'h' }), /no network namespace/);
  });
});

describe('SSDP messages', () => {
  it('builds an M-SEARCH and a response that parse back', () => {
    const search = parseSsdp(buildMSearch('ssdp:all', 1));
    assert.ok(search);
    assert.equal(search.startLine, 'M-SEARCH * HTTP/1.1');
    assert.equal(search.headers.get('man'), '"ssdp:discover"');
    assert.equal(search.headers.get('host'), '239.255.255.250:1900');
    assert.equal(search.headers.get('mx'), '1');
    const response = buildSearchResponse({ st: 'upnp:rootdevice', usn: 'uuid:x::upnp:rootdevice', location: 'http://10.0.0.1/d.xml' });
    const answer = parseSearchResponse(response, { address: '10.0.0.1', port: 1900 });
    assert.equal(answer?.usn, 'uuid:x::upnp:rootdevice');
    assert.equal(answer?.cacheControl, 'max-age=1800');
    assert.match(response.toString(), /\r\nEXT: \r\n/);
    assert.match(response.toString(), /\r\nSERVER: [^ ]+\/[^ ]+ UPnP\/1\.1 mnedc-lab\/0\.1\r\n/);
  });

  it('answers per UDA: ssdp:all with every target, a type of the same or higher version, nothing else', () => {
    const type = 'urn:schemas-upnp-org:device:Basic:2';
    assert.deepEqual(answersFor('ssdp:all', 'uuid:u', type).map((a) => a.usn), ['uuid:u::upnp:rootdevice', 'uuid:u', `uuid:u::${type}`]);
    assert.deepEqual(answersFor('urn:schemas-upnp-org:device:Basic:1', 'uuid:u', type), [
      { st: 'urn:schemas-upnp-org:device:Basic:1', usn: 'uuid:u::urn:schemas-upnp-org:device:Basic:1' },
    ]);
    assert.deepEqual(answersFor('urn:schemas-upnp-org:device:Basic:3', 'uuid:u', type), []);
    assert.deepEqual(answersFor('uuid:other', 'uuid:u', type), []);
    assert.equal(parseMx('0'), undefined);
    assert.equal(parseMx('9'), 5);
    assert.equal(parseMx('x'), undefined);
  });

  it('rejects what is not HTTPU, oversized datagrams and bad command lines', () => {
    assert.equal(parseSsdp(Buffer.from('\x00\x01 binary')), undefined);
    assert.equal(parseSsdp(Buffer.alloc(0)), undefined);
    assert.equal(parseSsdp(Buffer.alloc(9000, 0x41)), undefined);
    assert.equal(parseSsdp(Buffer.from('M-SEARCH * HTTP/1.1\r\nno colon\r\n\r\n')), undefined);
    assert.equal(parseSearchResponse(Buffer.from('HTTP/1.1 200 OK\r\nST: a\r\n\r\n'), { address: 'x', port: 1 }), undefined);
    assert.throws(() => parseArgs(['dance']));
    assert.throws(() => parseArgs(['search', '--what', 'x']));
    assert.deepEqual([...parseArgs(['search', '--st', 'ssdp:all', '--ipv6']).values], [['st', 'ssdp:all']]);
  });
});

// ---------------------------------------------------------------------------------- namespace helpers --

function rootSkipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const r = spawnSync('ip', ['netns', 'list'], { timeout: 10_000, stdio: 'ignore' });
  if (r.error || r.status !== 0) return 'ip (iproute2) unavailable';
  return false;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { timeout: 30_000, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
}

/**
 * Two namespaces joined by veth-a / veth-b, both ends created inside them, DAD off (addresses usable at
 * once), IPv4 and ULA IPv6 addresses.
 */
function makePair(prefix: string): { a: string; b: string } {
  const a = `${prefix}-a`;
  const b = `${prefix}-b`;
  sh('ip', ['netns', 'add', a]);
  sh('ip', ['netns', 'add', b]);
  sh('ip', ['link', 'add', 'veth-a', 'netns', a, 'type', 'veth', 'peer', 'name', 'veth-b', 'netns', b]);
  for (const [ns, dev, n] of [[a, 'veth-a', 1], [b, 'veth-b', 2]] as const) {
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
    sh('ip', ['-n', ns, 'addr', 'add', `10.213.0.${n}/24`, 'dev', dev]);
    sh('ip', ['-n', ns, 'addr', 'add', `fd13:213::${n}/64`, 'dev', dev]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }
  return { a, b };
}

function namespacesWith(prefix: string): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(prefix));
}

/** Cleanup also on exit and on SIGINT/SIGTERM/SIGHUP (then re-raised), as the pcap test does. */
function exitGuard(cleanupSync: () => void): { release(): void } {
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanupSync();
    release();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  const release = (): void => {
    process.off('exit', cleanupSync).off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
  };
  process.on('exit', cleanupSync).on('SIGINT', onSignal).on('SIGTERM', onSignal).on('SIGHUP', onSignal);
  return { release };
}

async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; attempt < 50; attempt++) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

// ---------------------------------------------------------------------------------------- real avahi --

const avahiSkip = rootSkipReason() || avahiUnavailable() || false;

describe('real avahi in two private namespaces', { skip: avahiSkip, timeout: 120_000 }, () => {
  const prefix = `mnav${randomBytes(2).toString('hex')}`;
  let nsA = '';
  let nsB = '';
  let a: Avahi | undefined;
  let b: Avahi | undefined;
  let guard: { release(): void } | undefined;
  let startupMs = 0;
  const cleanupSync = (): void => {
    // The avahi instances' own exit handlers end their processes; the namespaces are ours.
    for (const ns of namespacesWith(prefix)) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000, stdio: 'ignore' });
  };

  before(async () => {
    guard = exitGuard(cleanupSync);
    ({ a: nsA, b: nsB } = makePair(prefix));
    // A TUN in A: IFF_POINTOPOINT, which avahi 0.8 ignores unless allow-point-to-point=yes.
    sh('ip', ['-n', nsA, 'tuntap', 'add', 'dev', 'tun-a', 'mode', 'tun']);
    sh('ip', ['-n', nsA, 'addr', 'add', '10.213.1.1/24', 'dev', 'tun-a']);
    sh('ip', ['-n', nsA, 'link', 'set', 'tun-a', 'up']);
    const started = Date.now();
    const [startedA, startedB] = await Promise.allSettled([
      startAvahi(nsA, { interfaces: ['veth-a', 'tun-a'], ipv6: true, hostName: 'host-a' }),
      startAvahi(nsB, { interfaces: ['veth-b'], ipv6: true, hostName: 'host-b' }),
    ]);
    // Whichever started is kept, so after() stops it even if the other failed.
    if (startedA!.status === 'fulfilled') a = startedA!.value;
    if (startedB!.status === 'fulfilled') b = startedB!.value;
    for (const result of [startedA!, startedB!]) if (result.status === 'rejected') throw result.reason;
    startupMs = Date.now() - started;
  });

  after(async () => {
    const dirs = [a?.dir, b?.dir].filter((d): d is string => d !== undefined);
    const pids = [a?.holderPid, b?.holderPid].filter((p): p is number => p !== undefined && p > 0);
    await Promise.all([a?.stop(), b?.stop()]);
    cleanupSync();
    guard?.release();
    assert.deepEqual(namespacesWith(prefix), [], 'namespaces left behind');
    for (const dir of dirs) assert.equal(fs.existsSync(dir), false, `${dir} left behind`);
    for (const pid of pids) assert.ok(processGone(pid), `namespace holder ${pid} still running`);
  });

  it('publishes in one namespace and resolves it in the other over IPv4, to the peer\'s IPv4 address', async (t) => {
    let started = Date.now();
    const unpublish = await a!.publish('svc-test', '_test._tcp', 4242, ['path=/x', 'v=1']);
    const publishMs = Date.now() - started;
    try {
      started = Date.now();
      const found = await b!.browse('_test._tcp', { timeoutMs: 5000, protocol: 'ipv4' });
      t.diagnostic(`both instances ready in ${startupMs} ms, publish ${publishMs} ms, IPv4 browse ${Date.now() - started} ms`);
      assert.deepEqual(found, [{ interface: 'veth-b', protocol: 'ipv4', name: 'svc-test', type: '_test._tcp', domain: 'local',
        host: 'host-a.local', address: '10.213.0.1', port: 4242, txt: ['path=/x', 'v=1'] }]);

      started = Date.now();
      const found6 = await b!.browse('_test._tcp', { timeoutMs: 5000, protocol: 'ipv6' });
      t.diagnostic(`IPv6 browse ${Date.now() - started} ms: ${JSON.stringify(found6)}`);
      // avahi publishes only an interface's global-scope addresses (a ULA is one) when it has any:
      // the link-local address is not offered.
      assert.equal(found6.length, 1, JSON.stringify(found6));
      assert.equal(found6[0]!.address, 'fd13:213::1');
      assert.equal(found6[0]!.protocol, 'ipv6');
      assert.equal(found6[0]!.interface, 'veth-b');
    } finally {
      await unpublish();
    }
  });

  it('withdraws the service when the publisher stops (goodbye packets)', async () => {
    const unpublish = await a!.publish('svc-gone', '_gone._tcp', 4243);
    const seen = await b!.browse('_gone._tcp', { timeoutMs: 5000, protocol: 'ipv4' });
    assert.equal(seen.length, 1);
    await unpublish();
    // A goodbye leaves the record for one more second (RFC 6762 10.1).
    await eventually('the service to disappear', 10_000, async () => {
      const left = await b!.browse('_gone._tcp', { timeoutMs: 5000 });
      return left.length === 0 ? true : undefined;
    });
  });

  it('takes the TUN (point-to-point) interface and publishes its address there', () => {
    const log = a!.log().join('\n');
    assert.match(log, /New relevant interface tun-a\.IPv4 for mDNS/);
    assert.match(log, /Registering new address record for 10\.213\.1\.1 on tun-a\.IPv4/);
  });

  it('gives every instance its own bus and pid file, none on the host', async () => {
    const pidA = (await a!.exec(['cat', '/run/avahi-daemon/pid'])).stdout.trim();
    const pidB = (await b!.exec(['cat', '/run/avahi-daemon/pid'])).stdout.trim();
    assert.match(pidA, /^\d+$/);
    assert.match(pidB, /^\d+$/);
    assert.notEqual(pidA, pidB);
    // The pid file names the daemon as the host sees it (same PID namespace), in the test's namespace.
    assert.equal(fs.readlinkSync(`/proc/${pidA}/ns/net`), fs.readlinkSync(`/proc/${a!.holderPid}/ns/net`));
    assert.notEqual(fs.readlinkSync(`/proc/${pidA}/ns/net`), fs.readlinkSync('/proc/self/ns/net'));
    assert.notEqual(fs.readlinkSync(`/proc/${pidA}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'));
    assert.equal(fs.existsSync('/run/avahi-daemon/pid'), false, 'an avahi pid file on the host');
  });

  it('offers the link-local IPv6 address once the interface has no global one', async (t) => {
    sh('ip', ['-n', nsA, 'addr', 'del', 'fd13:213::1/64', 'dev', 'veth-a']);
    const unpublish = await a!.publish('svc-ll', '_ll._tcp', 4244);
    try {
      const linkLocal = sh('ip', ['-n', nsA, '-6', '-o', 'addr', 'show', 'dev', 'veth-a', 'scope', 'link']).match(/inet6 (fe80::[0-9a-f:]+)\//)?.[1];
      assert.ok(linkLocal, 'veth-a has no link-local address');
      const found = await eventually('the link-local address', 15_000, async () => {
        const services = await b!.browse('_ll._tcp', { timeoutMs: 5000, protocol: 'ipv6' });
        return services.find((s) => s.address === linkLocal);
      });
      t.diagnostic(`without a ULA, IPv6 resolves to ${found.address} (no scope; interface ${found.interface})`);
      assert.equal(found.interface, 'veth-b');
    } finally {
      await unpublish();
    }
  });
});

// ----------------------------------------------------------------------------------------------- SSDP --

interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const ssdpSkip = rootSkipReason();

describe('SSDP between two private namespaces', { skip: ssdpSkip, timeout: 60_000 }, () => {
  const prefix = `mnsd${randomBytes(2).toString('hex')}`;
  const usn = `uuid:${randomBytes(16).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-')}`;
  const live = new Set<ChildProcess>();
  let nsA = '';
  let nsB = '';
  let guard: { release(): void } | undefined;

  const start = (args: string[]): Proc => {
    const child = spawn('ip', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const proc: Proc = {
      child,
      stdout: '',
      stderr: '',
      exited: new Promise((resolve) => {
        child.once('close', (code, signal) => {
          live.delete(child);
          resolve({ code, signal });
        });
        child.once('error', (e) => {
          live.delete(child);
          proc.stderr += e.message;
          resolve({ code: -1, signal: null });
        });
      }),
    };
    child.stdout!.on('data', (d: Buffer) => (proc.stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (proc.stderr += d.toString()));
    return proc;
  };
  const killAll = (): void => {
    for (const child of live) {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  const cleanupSync = (): void => {
    killAll();
    for (const ns of namespacesWith(prefix)) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000, stdio: 'ignore' });
  };
  /** Resolves on the responder's ready line; rejects if it exits first or after 10 s. */
  const waitReady = (proc: Proc): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (proc.stdout.includes('"event":"ready"')) finish();
      };
      const onClose = (): void => finish(new Error(`responder exited: ${proc.stderr}`));
      const timer = setTimeout(() => finish(new Error(`responder not ready in 10 s: ${proc.stderr}`)), 10_000);
      function finish(err?: Error): void {
        clearTimeout(timer);
        proc.child.stdout!.off('data', check);
        proc.child.off('close', onClose);
        if (err) reject(err);
        else resolve();
      }
      // Registered after start()'s own listener, so the chunk is already in proc.stdout.
      proc.child.stdout!.on('data', check);
      proc.child.once('close', onClose);
      check();
    });
  const search = async (args: string[]): Promise<SsdpAnswer[]> => {
    const proc = start(['netns', 'exec', nsB, process.execPath, SSDP_CLI, 'search', ...args]);
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 20_000);
    const exit = await proc.exited;
    clearTimeout(timer);
    assert.equal(exit.code, 0, `searcher failed: ${proc.stderr}`);
    return proc.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as SsdpAnswer);
  };

  before(() => {
    guard = exitGuard(cleanupSync);
    ({ a: nsA, b: nsB } = makePair(prefix));
  });

  after(async () => {
    killAll();
    await Promise.all([...live].map((c) => new Promise((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve(null) : c.once('close', resolve)))));
    cleanupSync();
    guard?.release();
    assert.deepEqual(namespacesWith(prefix), [], 'namespaces left behind');
  });

  it('answers an IPv4 M-SEARCH from the other namespace with its USN', async (t) => {
    const responder = start(['netns', 'exec', nsA, process.execPath, SSDP_CLI, 'respond', '--interface-address', '10.213.0.1', '--usn', usn,
      '--location', 'http://10.213.0.1:80/desc.xml']);
    await waitReady(responder);
    const started = Date.now();
    const answers = await search(['--interface-address', '10.213.0.2', '--st', 'ssdp:all', '--timeout-ms', '2000']);
    t.diagnostic(`IPv4 search: ${answers.length} answers, ${Date.now() - started} ms for a 2000 ms window with node's start-up`);
    const root = answers.find((x) => x.usn === usn);
    assert.ok(root, JSON.stringify(answers));
    assert.equal(root.address, '10.213.0.1');
    assert.equal(root.location, 'http://10.213.0.1:80/desc.xml');
    assert.ok(answers.some((x) => x.st === 'upnp:rootdevice' && x.usn === `${usn}::upnp:rootdevice`));
    assert.ok(answers.every((x) => x.ext && /^max-age=\d+$/.test(x.cacheControl) && /UPnP\/1\.1/.test(x.server)));
    const narrowed = await search(['--interface-address', '10.213.0.2', '--st', usn, '--timeout-ms', '1500', '--count', '2']);
    assert.deepEqual(narrowed.map((x) => [x.st, x.usn]), [[usn, usn]]);
    responder.child.kill('SIGTERM');
    assert.equal((await responder.exited).code, 0);
  });

  it('answers an IPv6 M-SEARCH on ff02::c, from its link-local address', async () => {
    const responder = start(['netns', 'exec', nsA, process.execPath, SSDP_CLI, 'respond', '--ipv6', '--interface', 'veth-a', '--usn', usn,
      '--location', 'http://[fd13:213::1]:80/desc.xml']);
    await waitReady(responder);
    const answers = await search(['--ipv6', '--interface', 'veth-b', '--st', 'upnp:rootdevice', '--timeout-ms', '2000']);
    assert.equal(answers.length, 1, JSON.stringify(answers));
    assert.equal(answers[0]!.usn, `${usn}::upnp:rootdevice`);
    assert.match(answers[0]!.address, /^fe80::[0-9a-f:]+%veth-b$/);
    responder.child.kill('SIGTERM');
    assert.equal((await responder.exited).code, 0);
  });
});
