/**
 * TUN tests. Every test gets its own network namespace and runs the
 * device-touching code in a child (test/tun-child.ts) under `ip netns exec`:
 * nothing here may create a device, address or route in the host namespace.
 * Needs root; skipped otherwise.
 */
import * as assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { test } from 'node:test';
import { VNET_HDR_BYTES } from '@mnedc/protocol';
import { BATCH_HEADER_BYTES, forEachPacket } from '../src/index';
import type { TunStats } from '../src';

const CHILD = path.join(__dirname, 'tun-child.js');
const WAIT_MS = 8000;

const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces + TUN)'
    : !fs.existsSync('/dev/net/tun')
      ? 'no /dev/net/tun'
      : undefined;

interface ChildOptions {
  nodeFlags?: string[];
  /** Command prefix, e.g. setpriv to drop capabilities. */
  wrapper?: string[];
}

interface ChildEvent {
  event: string;
  [key: string]: unknown;
}

/** A child in a namespace; events are consumed in order with bounded waits. */
class NetnsChild {
  private readonly proc: ChildProcess;
  private readonly queue: ChildEvent[] = [];
  private waiter: (() => void) | undefined;
  private stderr = '';
  private exited = false;
  private readonly exit: Promise<void>;

  constructor(ns: string, scenario: string, args: string[], opt: ChildOptions) {
    const argv = [...(opt.wrapper ?? []), process.execPath, ...(opt.nodeFlags ?? []), CHILD, scenario, ...args];
    this.proc = spawn('ip', ['netns', 'exec', ns, ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      // The child verifies it is really inside this namespace before touching the network.
      env: { ...process.env, MNEDC_TUN_TEST_NETNS: ns },
    });
    this.exit = new Promise((resolve) =>
      this.proc.once('close', () => {
        this.exited = true;
        this.wake();
        resolve();
      }),
    );
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    readline.createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      try {
        this.queue.push(JSON.parse(line) as ChildEvent);
      } catch {
        this.stderr += `[non-JSON stdout] ${line}\n`;
      }
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Next event; a child-side failure is rethrown with its stack. */
  async next(expected: string): Promise<ChildEvent> {
    const deadline = Date.now() + WAIT_MS;
    while (this.queue.length === 0) {
      if (this.exited) throw new Error(`child exited before "${expected}"; stderr:\n${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for child event "${expected}"; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const ev = this.queue.shift()!;
    if (ev.event === 'error') throw new Error(`child failed: ${String(ev.stack ?? ev.message)}\nstderr:\n${this.stderr}`);
    assert.equal(ev.event, expected, `unexpected child event ${JSON.stringify(ev)}`);
    return ev;
  }

  async result<T>(): Promise<T> {
    return (await this.next('done')).result as T;
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  async kill(): Promise<void> {
    if (!this.exited) this.proc.kill('SIGKILL');
    await Promise.race([this.exit, new Promise((r) => setTimeout(r, WAIT_MS).unref())]);
  }
}

/** Runs fn with a fresh namespace and child; both are torn down even on failure. */
async function inNetns<T>(
  scenario: string,
  args: string[],
  fn: (child: NetnsChild, ns: string) => Promise<T>,
  opt: ChildOptions = {},
): Promise<T> {
  const ns = `mntun-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  let child: NetnsChild | undefined;
  try {
    child = new NetnsChild(ns, scenario, args, opt);
    return await fn(child, ns);
  } finally {
    await child?.kill();
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  broadcast?: string;
  tentative?: boolean;
  dadfailed?: boolean;
}
interface IpLink {
  ifname: string;
  flags: string[];
  mtu: number;
  addr_info: IpAddrInfo[];
}

function ipAddr(ns: string, dev: string): IpLink {
  const out = execFileSync('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', dev], { encoding: 'utf8' });
  const links = JSON.parse(out) as IpLink[];
  assert.equal(links.length, 1, `expected one link ${dev}`);
  return links[0]!;
}

function inet(link: IpLink): IpAddrInfo[] {
  return link.addr_info.filter((a) => a.family === 'inet');
}

function inet6(link: IpLink): IpAddrInfo[] {
  return link.addr_info.filter((a) => a.family === 'inet6');
}

interface IpRoute {
  type?: string;
  dst: string;
}

function routes(ns: string, dev: string, ...table: string[]): IpRoute[] {
  return JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'route', 'show', ...table, 'dev', dev], { encoding: 'utf8' })) as IpRoute[];
}

/** The kernel's broadcast routes for dev: the local table's entries of type broadcast. */
function broadcastRoutes(ns: string, dev: string): string[] {
  return routes(ns, dev, 'table', 'local')
    .filter((r) => r.type === 'broadcast')
    .map((r) => r.dst);
}

function routeGet(ns: string, dst: string): string {
  return execFileSync('ip', ['-n', ns, 'route', 'get', dst], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The child reports the addon's own counters. */
type Stats = TunStats;

async function checkConfigure(requested: string, expectName: RegExp): Promise<void> {
  await inNetns('configure', [requested], async (child, ns) => {
    const { name } = (await child.next('configured')) as { name: string } & ChildEvent;
    assert.match(name, expectName);
    let link = ipAddr(ns, name);
    assert.equal(link.mtu, 1400);
    assert.ok(link.flags.includes('UP'), `flags ${link.flags.join(',')}`);
    assert.ok(link.flags.includes('NOARP') && link.flags.includes('POINTOPOINT'), 'IFF_TUN device');
    assert.deepEqual(
      inet(link).map((a) => [a.local, a.prefixlen]),
      [['10.99.0.1', 24]],
    );
    child.send('next');

    await child.next('reconfigured');
    link = ipAddr(ns, name);
    assert.equal(link.mtu, 9000);
    // The primary address is replaced, not added to.
    assert.deepEqual(
      inet(link).map((a) => [a.local, a.prefixlen]),
      [['10.99.1.7', 16]],
    );
    assert.ok(link.flags.includes('UP'));
    const routes = JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'route', 'show', 'dev', name], { encoding: 'utf8' })) as {
      dst: string;
    }[];
    assert.deepEqual(
      routes.map((r) => r.dst),
      ['10.99.0.0/16'],
    );
    child.send('next');

    await child.next('down');
    assert.ok(!ipAddr(ns, name).flags.includes('UP'));
    child.send('next');
    await child.result();
    // Non-persistent: close() removes the device.
    const after = JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show'], { encoding: 'utf8' })) as IpLink[];
    assert.ok(!after.some((l) => l.ifname === name), `${name} should be gone after close()`);
  });
}

const opts = { timeout: 30_000, skip: skipReason ?? false };

test('forEachPacket walks records as zero-copy views and rejects truncation', () => {
  const pkts = [Buffer.from('abc'), Buffer.alloc(0), Buffer.from('hello world')];
  const batch = Buffer.concat(
    pkts.flatMap((p) => {
      const h = Buffer.alloc(BATCH_HEADER_BYTES);
      h.writeUInt32BE(p.length);
      return [h, p];
    }),
  );
  const seen: [string, number][] = [];
  forEachPacket(batch, pkts.length, (p, off) => {
    assert.equal(p.buffer, batch.buffer, 'view, not copy');
    seen.push([p.toString(), off]);
  });
  assert.deepEqual(seen, [
    ['abc', 0],
    ['', 7],
    ['hello world', 11],
  ]);
  assert.throws(() => forEachPacket(batch.subarray(0, batch.length - 1), 3, () => {}), /overruns/);
  assert.throws(() => forEachPacket(batch, 4, () => {}), /truncated at record 3/);
});

test('open with a given name, configure, reconfigure, down, close', opts, () => checkConfigure('mntest0', /^mntest0$/));

test('open with a kernel-chosen name', opts, () => checkConfigure('', /^mnedc\d+$/));

test('read path delivers bursts as multi-packet batches via make_callback', opts, () =>
  inNetns('read', [], async (child) => {
    const r = await child.result<{
      seen: { dst: string; dport: number; payload: string }[];
      batchCounts: number[];
      asyncIds: number[];
      order: string[];
      stats: Stats;
    }>();
    assert.deepEqual(
      r.seen.map((s) => s.payload).sort(),
      Array.from({ length: 64 }, (_, i) => `pkt-${i}`).sort(),
    );
    assert.ok(r.seen.every((s) => s.dst === '10.99.0.2' && s.dport === 9));
    assert.ok(
      r.batchCounts.some((c) => c > 1),
      `a burst must coalesce into batches, got counts ${r.batchCounts.join(',')}`,
    );
    assert.ok(r.batchCounts.every((c) => c <= 256));
    assert.ok(r.stats.rxBatches < r.stats.rxPackets, JSON.stringify(r.stats));
    assert.equal(r.stats.rxBatches, r.batchCounts.length);
    assert.equal(
      r.stats.rxPackets,
      r.batchCounts.reduce((a, b) => a + b, 0),
    );
    assert.ok(r.stats.rxBytes >= 64 * 28);
    // napi_make_callback: an async context is current, and ticks/microtasks run before the loop continues.
    assert.ok(r.asyncIds.every((id) => id > 0), `executionAsyncId ${r.asyncIds.join(',')}`);
    assert.deepEqual(r.order, ['callback', 'tick', 'microtask', 'immediate']);
  }),
);

test('a drain is bounded by 256 packets and by the 1 MiB scratch', opts, () =>
  inNetns('limits', [], async (child) => {
    type B = { count: number; bytes: number; udp: number };
    const r = await child.result<{ small: B[]; big: B[]; stats: Stats }>();
    const counts = (bs: B[]): number[] => bs.map((b) => b.count);
    assert.equal(Math.max(...counts(r.small)), 256, `small burst batches ${counts(r.small).join(',')}`);
    assert.equal(
      r.small.reduce((a, b) => a + b.udp, 0),
      300,
    );
    // Records of 8032 bytes: a read needs 65540 bytes free, so at most 123 fit in 1 MiB.
    const maxBig = Math.max(...counts(r.big));
    assert.ok(maxBig > 1 && maxBig <= 123, `big burst batches ${counts(r.big).join(',')}`);
    assert.ok(r.big.every((b) => b.bytes <= 1 << 20));
    assert.equal(
      r.big.reduce((a, b) => a + b.udp, 0),
      200,
    );
    assert.equal(r.stats.rxErrors, 0);
  }),
);

test('writeBatch injects packets in one call; refused packets count as drops', opts, () =>
  inNetns('write', [], async (child) => {
    const r = await child.result<{
      written: number;
      single: boolean;
      got: { payload: string; from: string; sport: number }[];
      stats: Stats;
    }>();
    assert.equal(r.written, 32, 'junk packet must not count as written');
    assert.equal(r.single, true);
    assert.deepEqual(
      r.got.map((g) => g.payload),
      [...Array.from({ length: 32 }, (_, i) => `w-${i}`), 'single'],
    );
    assert.ok(r.got.every((g) => g.from === '10.99.0.2' && g.sport === 4000));
    assert.equal(r.stats.txPackets, 33);
    assert.equal(r.stats.txDrops, 1);
    assert.equal(r.stats.txBytes, txBytesExpected());
  }),
);

/** The write scenario's 33 accepted packets: 28 header bytes each plus "w-0".."w-31" and "single". */
function txBytesExpected(): number {
  let n = 33 * 28 + 'single'.length;
  for (let i = 0; i < 32; i++) n += `w-${i}`.length;
  return n;
}

// The C addon keeps its own #define; the codec that parses and writes the header must agree with it.
test('the addon opens an offloading device with the virtio_net_hdr size @mnedc/protocol uses', opts, () =>
  inNetns('vnet', [], async (child) => {
    const r = await child.result<{ vnetHeader: number }>();
    assert.equal(r.vnetHeader, VNET_HDR_BYTES);
  }));

test('offloads: reads carry a virtio header; writes take bare, partial-checksum and UDP super-packets', opts, () =>
  inNetns('offload', [], async (child) => {
    const r = await child.result<{
      vnetHeader: number;
      offloads: number;
      plainVnet: number;
      headers: number[][];
      outgoing: { payload: string }[];
      written: number;
      got: string[];
      uso: string[] | null;
      plainKinds: string;
      stats: Stats;
    }>();
    assert.equal(r.vnetHeader, 10);
    assert.equal(r.plainVnet, 0);
    assert.equal(r.offloads & 0x03, 0x03, 'checksum and TSO4 offloads on');
    assert.deepEqual(r.outgoing.map((o) => o.payload), ['out-0', 'out-1']);
    for (const h of r.headers) {
      assert.equal(h[1], 0, 'no segmentation for a small datagram');
      // With checksum offload the kernel leaves the UDP checksum to us, and says where it goes.
      if (h[0]! & 1) assert.deepEqual([h[6], h[7], h[8], h[9]], [20, 0, 6, 0]);
    }
    assert.equal(r.written, 2);
    assert.deepEqual(r.got, ['bare', 'partial']);
    if (r.uso) assert.deepEqual(r.uso, ['a'.repeat(100), 'b'.repeat(100), 'c'.repeat(50)]);
    assert.match(r.plainKinds, /without offloads/);
    assert.equal(r.stats.txDrops, 0);
  }),
);

test('argument, errno and closed-device errors', opts, () =>
  inNetns('errors', [], async (child) => {
    type E = { message: string; code: string };
    const r = await child.result<{ busy: E; invalid: E; ipv6Off: E; down: E }>();
    assert.equal(r.busy.code, 'EBUSY');
    assert.equal(r.invalid.code, 'EINVAL');
    assert.deepEqual(r.ipv6Off, {
      message: 'SIOCSIFADDR fd00::1/64 on mnerr1: Permission denied (IPv6 is disabled on this interface; call enableIpv6() first)',
      code: 'EACCES',
    });
    assert.deepEqual(r.down, { message: 'SIOCADDRT 239.255.255.250/32 dev mnerr1: Network is down', code: 'ENETDOWN' });
  }),
);

test('the subnet broadcast follows the prefix, and a datagram to it written into the TUN is delivered', opts, () =>
  inNetns('broadcast', [], async (child, ns) => {
    const { name } = (await child.next('configured')) as { name: string } & ChildEvent;
    assert.deepEqual(
      inet(ipAddr(ns, name)).map((a) => [a.local, a.prefixlen, a.broadcast]),
      [['10.99.0.1', 24, '10.99.0.255']],
    );
    assert.deepEqual(broadcastRoutes(ns, name), ['10.99.0.255']);
    child.send('next');

    await child.next('widened');
    assert.deepEqual(
      inet(ipAddr(ns, name)).map((a) => [a.local, a.prefixlen, a.broadcast]),
      [['10.99.0.1', 16, '10.99.255.255']],
    );
    assert.deepEqual(broadcastRoutes(ns, name), ['10.99.255.255']);
    child.send('next');

    // A /32 has no broadcast; the /16's must not stay behind.
    await child.next('narrowed');
    assert.deepEqual(
      inet(ipAddr(ns, name)).map((a) => [a.local, a.prefixlen, a.broadcast]),
      [['10.99.0.1', 32, undefined]],
    );
    assert.deepEqual(broadcastRoutes(ns, name), []);
    child.send('next');

    const r = await child.result<{ written: boolean; got: { payload: string; from: string }[] }>();
    assert.equal(r.written, true);
    assert.deepEqual(r.got, [{ payload: 'to everyone', from: '10.99.0.2' }]);
  }),
);

const hasPing = fs.existsSync('/usr/bin/ping') || fs.existsSync('/bin/ping');

test('IPv6: only the configured addresses, usable at once; ping leaves through the TUN; configure again is harmless', { ...opts, skip: skipReason ?? (hasPing ? false : 'no ping') }, () =>
  inNetns('ipv6', [], async (child, ns) => {
    const expected = [
      ['fd12:3456:789a::a09:5', 64],
      ['fe80::a09:5', 64],
    ];
    const addresses6 = (link: IpLink): (string | number)[][] =>
      inet6(link)
        .map((a) => [a.local, a.prefixlen])
        .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
    const ev = (await child.next('configured')) as { name: string; enabled: string | null } & ChildEvent;
    const { name } = ev;
    assert.equal(ev.enabled, null);
    let link = ipAddr(ns, name);
    assert.equal(link.mtu, 1400);
    assert.ok(link.flags.includes('UP') && link.flags.includes('NOARP'), `flags ${link.flags.join(',')}`);
    assert.deepEqual(inet(link).map((a) => [a.local, a.prefixlen]), [['10.9.0.5', 24]]);
    // No address of the kernel's own making (addr_gen_mode none), and no DAD on a NOARP device.
    assert.deepEqual(addresses6(link), expected);
    for (const a of inet6(link)) assert.ok(!a.tentative && !a.dadfailed, `${a.local} ${JSON.stringify(a)}`);
    child.send('next');

    await child.next('reconfigured');
    link = ipAddr(ns, name);
    assert.deepEqual(addresses6(link), expected);
    assert.deepEqual(inet(link).map((a) => [a.local, a.prefixlen]), [['10.9.0.5', 24]]);
    assert.match(routeGet(ns, 'fd12:3456:789a::a09:7'), new RegExp(`dev ${name} `));
    child.send('next');

    const r = await child.result<{ echoes: { src: string; dst: string; type: number }[] }>();
    assert.deepEqual(r.echoes[0], { src: 'fd12:3456:789a::a09:5', dst: 'fd12:3456:789a::a09:7', type: 128 });
  }),
);

test('addRoute sends multicast groups out of the TUN; adding one again is harmless', opts, () =>
  inNetns('routes', [], async (child, ns) => {
    const { name } = (await child.next('configured')) as { name: string } & ChildEvent;
    // Without the route there is nowhere to send it: the namespace has no default route.
    assert.throws(() => routeGet(ns, '239.255.255.250'), /Network is unreachable/);
    child.send('next');

    await child.next('routed');
    for (const group of ['239.255.255.250', '224.0.0.251']) {
      assert.match(routeGet(ns, group), new RegExp(`^multicast ${group.replace(/\./g, '\\.')} dev ${name} `));
    }
    assert.deepEqual(
      routes(ns, name).map((r) => r.dst).sort(),
      ['10.99.0.0/24', '224.0.0.251', '239.255.255.250'],
    );
    child.send('next');
    await child.result();
  }),
);

test('close() inside the batch handler stops delivery and removes the device', opts, () =>
  inNetns('closeInside', [], async (child) => {
    const r = await child.result<{ calls: number; afterClose: string }>();
    assert.equal(r.calls, 1);
    assert.equal(r.afterClose, 'writePacket mnci0: tun device is closed');
  }),
);

const hasSetpriv = fs.existsSync('/usr/bin/setpriv') || fs.existsSync('/bin/setpriv');

test('without CAP_NET_ADMIN, open fails with the errno-style error', { ...opts, skip: skipReason ?? (hasSetpriv ? false : 'no setpriv') }, () =>
  inNetns(
    'eperm',
    [],
    async (child) => {
      const r = await child.result<{ message: string; code: string; errno: number; syscall: string }>();
      assert.deepEqual(r, { message: 'TUNSETIFF mnperm0: Operation not permitted', code: 'EPERM', errno: -1, syscall: 'TUNSETIFF' });
    },
    { wrapper: ['setpriv', '--bounding-set=-net_admin'] },
  ),
);

test('pause() stops delivery; resume() delivers what queued meanwhile', opts, () =>
  inNetns('pause', [], async (child) => {
    const r = await child.result<{ callsWhilePaused: number; received: number; stats: Stats }>();
    assert.equal(r.callsWhilePaused, 0);
    assert.equal(r.received, 16);
  }),
);

test('a throwing handler becomes an uncaught exception and delivery continues', opts, () =>
  inNetns('throws', [], async (child) => {
    const r = await child.result<{ message: string; calls: number }>();
    assert.equal(r.message, 'boom from onBatch');
    assert.ok(r.calls >= 2);
  }),
);

test('GC finalizer closes an abandoned device; a started one stays alive', opts, () =>
  inNetns('gc', [], async (child) => {
    const r = await child.result<{ got: number }>();
    assert.equal(r.got, 1);
  }, { nodeFlags: ['--expose-gc'] }),
);

test('Worker teardown with a live poll handle neither crashes nor leaks the device', opts, () =>
  inNetns('workers', [], async (child) => {
    const r = await child.result<{ exits: number[] }>();
    // terminate() reports exit code 1; the others exit 0.
    assert.deepEqual(r.exits, [0, 0, 0, 1]);
  }),
);
