/**
 * Issue 12 against the real mnedcd-server process on loopback: each attack of a device holding the join
 * string, or of a stranger on the LAN, run as it was found, with the bound the relay now keeps.
 * Memory attacks run for 30 s each while the relay's RSS is sampled every second.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { encodeFrame, FrameType, PING_BYTES } from '@mnedc/protocol';
import { ipPacket, RelayProcess, REPO_ROOT, WireClient } from '@mnedc/lab';

const ATTACK = path.join(REPO_ROOT, 'packages/lab/dist/src/attack.js');
const ATTACK_SECONDS = 32;
/** What the relay may keep beyond its queues, whatever the attack: V8's heap headroom, TLS state, buffers. */
const FIXED_OVERHEAD_MIB = 96;

interface Stats {
  refused: Record<string, number>;
  cut: { overBudget: number };
  totals: { drops: Record<string, number> };
}

const relays: RelayProcess[] = [];
/** Attack processes still running when a test fails are killed with the relays. */
const attackers = new Set<ChildProcess>();
const devices: WireClient[] = [];

async function relay(extra = ''): Promise<RelayProcess> {
  const started = await RelayProcess.start(extra);
  relays.push(started);
  return started;
}

async function device(r: RelayProcess, deviceId: string, extra: Record<string, unknown> = {}, localAddress?: string): Promise<WireClient> {
  const d = new WireClient(r.port, r.join, undefined, true, localAddress ? { localAddress } : {});
  devices.push(d);
  await once(d.socket, 'secureConnect');
  d.hello(deviceId, extra);
  await d.until(() => d.welcome !== null || d.reject !== null || d.closed, `an answer to ${deviceId}`, 10_000);
  return d;
}

async function stats(r: RelayProcess): Promise<Stats> {
  return (await r.ctl(['stats', '--json'])).json as Stats;
}

/** Runs attack.js to its end, sampling the relay's RSS every second meanwhile. */
async function attack(r: RelayProcess, args: string[]): Promise<{ result: Record<string, unknown>; rssMiB: number[] }> {
  const child = spawn(process.execPath, [ATTACK, args[0]!, String(r.port), ...args.slice(1)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d; });
  child.stderr.on('data', (d: Buffer) => { err += d; });
  attackers.add(child);
  const rssMiB: number[] = [];
  const sampler = setInterval(() => {
    if (!r.daemon.exited) rssMiB.push(r.rssKib() / 1024);
  }, 1000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearInterval(sampler);
  attackers.delete(child);
  assert.equal(code, 0, `attack.js ${args[0]} failed: ${err}`);
  return { result: JSON.parse(out) as Record<string, unknown>, rssMiB };
}

/** Two honest devices that pass a packet both ways: the overlay still works for everyone else. */
async function exchange(a: WireClient, b: WireClient, tag: string): Promise<void> {
  const [ia, ib] = [a.data.length, b.data.length];
  a.send(ipPacket(a.ip, b.ip, `${tag} a→b`));
  b.send(ipPacket(b.ip, a.ip, `${tag} b→a`));
  await b.until(() => b.data.length > ib, `${tag}: a's packet at b`, 10_000);
  await a.until(() => a.data.length > ia, `${tag}: b's packet at a`, 10_000);
}

afterEach(() => devices.splice(0).forEach((d) => d.close()));
after(async () => {
  attackers.forEach((child) => child.kill('SIGKILL'));
  await Promise.all(relays.splice(0).map((r) => r.dispose()));
});

describe('the relay under attack (real daemon, loopback)', { timeout: 240_000 }, () => {
  it('finding 1: a device that floods PINGs and never reads is cut, counted and logged; relay RSS stays bounded for 30 s', async () => {
    // Each cut attacker comes back as a new device at once: the rates that would slow it are not under test here.
    const r = await relay('[server]\nsubnet = 10.0.0.0/16\n[limits]\nmax_clients = 8\nnew_device_burst = 100000\nnew_devices_per_minute = 100000\n');
    const [a, b] = [await device(r, 'honest-a'), await device(r, 'honest-b')];
    await exchange(a, b, 'before');
    const idleMiB = r.rssKib() / 1024;
    const { result, rssMiB } = await attack(r, ['pong-flood', r.join, String(ATTACK_SECONDS)]);
    const bound = idleMiB + 8 * 2 + FIXED_OVERHEAD_MIB;
    assert.ok(rssMiB.length >= 30, `sampled ${rssMiB.length} times`);
    assert.ok(Math.max(...rssMiB) <= bound, `relay RSS peaked at ${Math.max(...rssMiB).toFixed(0)} MiB (idle ${idleMiB.toFixed(0)}, bound ${bound.toFixed(0)}): ${rssMiB.map((m) => m.toFixed(0)).join(' ')}`);
    assert.ok(Number(result.cut) >= 1, `the attacker was cut: ${JSON.stringify(result)}`);
    const s = await stats(r);
    assert.ok(s.cut.overBudget >= Number(result.cut), `cut.overBudget ${s.cut.overBudget}, attacker saw ${String(result.cut)}`);
    await r.daemon.waitFor(/^Closed flood-\S+: it does not read what is sent to it \(\d+ KiB would be queued, beyond its budget of 2048 KiB/);
    await exchange(a, b, 'after');
  });

  it('finding 2: tiny packets in big TLS records for devices that never read pin no read chunks; RSS stays bounded for 30 s', async () => {
    const r = await relay('[limits]\nmax_clients = 8\n');
    const [a, b] = [await device(r, 'honest-a'), await device(r, 'honest-b')];
    await exchange(a, b, 'before');
    const idleMiB = r.rssKib() / 1024;
    const { result, rssMiB } = await attack(r, ['pin-chunks', r.join, String(ATTACK_SECONDS), '2']);
    const bound = idleMiB + 8 * 2 + FIXED_OVERHEAD_MIB;
    assert.ok(rssMiB.length >= 30, `sampled ${rssMiB.length} times`);
    assert.ok(Math.max(...rssMiB) <= bound, `relay RSS peaked at ${Math.max(...rssMiB).toFixed(0)} MiB (idle ${idleMiB.toFixed(0)}, bound ${bound.toFixed(0)}): ${rssMiB.map((m) => m.toFixed(0)).join(' ')}`);
    assert.equal(result.victimsClosed, 0, 'the victims stayed connected: the attack ran its course');
    const s = await stats(r);
    assert.ok(s.totals.drops.queueFull! > 1000, `the victims' queues filled: ${JSON.stringify(s.totals.drops)}`);
    await exchange(a, b, 'after');
  });

  it('finding 3: with every handshake slot held by a stranger on 17 addresses, honest devices still join within 2 s', async () => {
    const r = await relay();
    // A device joins once from 127.0.0.1 before the flood, so that address is a known source.
    (await device(r, 'known-before', {}, '127.0.0.1')).close();
    const flood = attack(r, ['slot-flood', '-', '12', '17']);
    // The flood holds 17 × 64 ≥ 1,024 slots once it is up; the relay says so when it evicts for newcomers.
    await r.daemon.waitFor(/^Closed unfinished handshakes to make room|^Refused connections from 127\.0\.0\.\d+: too many handshakes in progress \(/, { timeoutMs: 10_000 });
    for (const [id, from] of [['stranger-1', '127.0.0.100'], ['known-again', '127.0.0.1'], ['stranger-2', '127.0.0.101']] as const) {
      const started = Date.now();
      const d = await device(r, id, {}, from);
      const ms = Date.now() - started;
      assert.ok(d.welcome, `${id} from ${from} was not admitted: ${JSON.stringify(d.reject)} closed=${d.closed}`);
      assert.ok(ms < 2000, `${id} from ${from} took ${ms} ms to join`);
    }
    const { result } = await flood;
    const s = await stats(r);
    assert.ok(s.refused.evicted! > 0, `the table was full and strangers were evicted: ${JSON.stringify(s.refused)} flood ${JSON.stringify(result)}`);
  });

  it('finding 7: new device IDs are rate-limited and capped, each refusal counted and logged', async () => {
    const r = await relay('[limits]\nnew_device_burst = 20\nnew_devices_per_minute = 6\nmax_devices = 30\n');
    const minted: WireClient[] = [];
    for (let i = 0; i < 25; i++) {
      const d = await device(r, `minted-${i}`);
      minted.push(d);
      d.close();
    }
    const outcomes = minted.map((d) => (d.welcome ? 'welcome' : `${d.reject?.code}:${d.reject?.retryAfterMs ?? ''}`));
    assert.deepEqual(outcomes.slice(0, 20), Array(20).fill('welcome'));
    for (const o of outcomes.slice(20)) assert.match(o, /^busy:\d+$/, `beyond the burst: ${outcomes.join(' ')}`);
    await r.daemon.waitFor(/^Rejected new device minted-20: new devices arrive faster than \[limits\] new_devices_per_minute/);
    assert.equal((await stats(r)).refused.newDeviceRate, 5);
    // A known device still joins while new ones are held back.
    const back = new WireClient(r.port, r.join, minted[3]!.key);
    devices.push(back);
    await once(back.socket, 'secureConnect');
    back.hello('minted-3');
    await back.until(() => back.welcome !== null || back.reject !== null, 'an answer to minted-3', 10_000);
    assert.equal(back.welcome?.ip, minted[3]!.welcome!.ip);

    const capped = await relay('[limits]\nmax_devices = 3\n');
    const joined = [];
    for (let i = 0; i < 4; i++) joined.push(await device(capped, `dev-${i}`));
    assert.deepEqual(joined.map((d) => d.welcome ? 'welcome' : d.reject?.code), ['welcome', 'welcome', 'welcome', 'busy']);
    assert.match(joined[3]!.reject!.reason, /as many devices as it takes \(3\)/);
    assert.equal((await stats(capped)).refused.maxDevices, 1);
    await capped.daemon.waitFor(/^Rejected new device dev-3: 3 devices are bound, the limit is 3 \(\[limits\] max_devices\)/);
  });

  it('finding 11: a device that rejoins in a loop (each join is a peer snapshot) is told to wait', async () => {
    const r = await relay('[limits]\ndevice_join_burst = 5\ndevice_joins_per_minute = 6\n');
    const first = await device(r, 'looper');
    const key = first.key;
    const outcomes: string[] = [first.welcome ? 'welcome' : 'reject'];
    for (let i = 0; i < 6; i++) {
      const again = new WireClient(r.port, r.join, key);
      devices.push(again);
      await once(again.socket, 'secureConnect');
      again.hello('looper');
      await again.until(() => again.welcome !== null || again.reject !== null, 'an answer', 10_000);
      outcomes.push(again.welcome ? 'welcome' : `${again.reject!.code}`);
      // When the next join is allowed (≤ 10 s at 6 a minute), spread by up to half again so a fleet does not return at once.
      if (again.reject) assert.ok(again.reject.retryAfterMs! > 1000 && again.reject.retryAfterMs! <= 15_000, `retry after ${again.reject.retryAfterMs} ms`);
    }
    assert.deepEqual(outcomes, ['welcome', 'welcome', 'welcome', 'welcome', 'welcome', 'busy', 'busy']);
    assert.equal((await stats(r)).refused.deviceJoinRate, 2);
  });

  it('finding 10: a DATA_GSO super-packet with a tiny gso_size is refused and counted, the sender keeps its session', async () => {
    const r = await relay();
    const a = await device(r, 'gso-a', { capabilities: ['gso'] });
    const b = await device(r, 'gso-b', { capabilities: ['gso'] });
    const payload = Buffer.alloc(4000, 1);
    const superPacket = (gsoSize: number): Buffer => {
      const packet = ipPacket(a.ip, b.ip, Buffer.concat([Buffer.alloc(8), payload]));
      const header = Buffer.alloc(10);
      header[0] = 1; // NEEDS_CSUM
      header[1] = 5; // UDP_L4
      header.writeUInt16LE(28, 2);
      header.writeUInt16LE(gsoSize, 4);
      header.writeUInt16LE(20, 6);
      header.writeUInt16LE(6, 8);
      return Buffer.concat([header, packet]);
    };
    a.sendGso(superPacket(100));
    a.sendGso(superPacket(1200));
    await b.until(() => b.gso.length === 1, 'the sane super-packet');
    assert.equal(b.gso[0]!.readUInt16LE(4), 1200);
    assert.equal((await stats(r)).totals.drops.malformed, 1);
    await r.daemon.waitFor(/^Dropped packets \(malformed\), e\.g\. from gso-a .*gso_size 100 \(minimum 536\)/);
    assert.ok(!a.closed);
  });

  it('finding 13: on SIGTERM every one of 100 devices gets GOODBYE before its connection closes', async () => {
    const r = await relay();
    // From four source addresses: one is allowed 64 handshakes at once.
    const hundred = await Promise.all(Array.from({ length: 100 }, (_, i) => device(r, `leaver-${i}`, {}, `127.0.0.${2 + (i % 4)}`)));
    assert.equal(hundred.filter((d) => d.welcome).length, 100);
    // Each device also keeps a little traffic in flight, as real ones do.
    const ping = encodeFrame(FrameType.Ping, Buffer.alloc(PING_BYTES));
    for (const d of hundred) d.socket.write(ping);
    await r.stop('SIGTERM');
    assert.deepEqual(r.daemon.exited, { code: 0, signal: null });
    await Promise.all(hundred.map((d) => d.until(() => d.closed, `${d.welcome!.ip} to be closed`, 10_000)));
    const told = hundred.filter((d) => d.goodbye?.code === 'shutdown' && d.goodbye.reconnectMs! >= 1000 && d.goodbye.reconnectMs! <= 1500);
    assert.ok(told.length >= 99, `${told.length} of 100 devices got GOODBYE`);
    // Spread over 1–1.5 s, so the fleet does not return in one burst.
    assert.ok(new Set(told.map((d) => d.goodbye!.reconnectMs)).size > 10, 'reconnect hints are spread');
  });
});
