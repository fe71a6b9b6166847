import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readSync, readdirSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import type { PeerInfo } from '@mnedc/protocol';
import { DiscoveryHandoff, MAX_QUEUED_EVENTS, type DiscoveryConfig, type SelfInfo } from '../src/discovery';

const dirs: string[] = [];
const handoffs: DiscoveryHandoff[] = [];
afterEach(async () => { for (const h of handoffs.splice(0)) await h.close(); });
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-discovery-'));
  dirs.push(dir);
  return dir;
}

interface LogLine { level: number; msg: string; [key: string]: unknown }
const WARN = 40;
const DEBUG = 20;

function captureLog(): { log: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write(s: string) { lines.push(JSON.parse(s) as LogLine); } });
  return { log, lines };
}

function handoff(config: Partial<DiscoveryConfig>, maxConcurrentHooks?: number) {
  const { log, lines } = captureLog();
  const h = new DiscoveryHandoff({ hookDir: '', hookTimeoutMs: 10_000, peersFile: '', hostsFile: '', ...config }, log,
    maxConcurrentHooks === undefined ? {} : { maxConcurrentHooks });
  handoffs.push(h);
  return { h, lines };
}

function hook(dir: string, name: string, body: string, mode = 0o755): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
  return path;
}

/** Rejects if `promise` takes longer than `ms`: every wait in these tests is bounded. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (inotify, bounded) until `path` exists and its content satisfies `ready`. */
async function untilFile(path: string, ready: (text: string) => boolean, ms = 5000): Promise<string> {
  const read = (): string | null => {
    try {
      const text = readFileSync(path, 'utf8');
      return ready(text) ? text : null;
    } catch {
      return null;
    }
  };
  const watcher = watch(dirname(path));
  try {
    return await within(new Promise<string>((resolve) => {
      const check = (): void => { const text = read(); if (text !== null) resolve(text); };
      watcher.on('change', check);
      check();
    }), ms, `${basename(path)} to be written`);
  } finally {
    watcher.close();
  }
}

function alive(pid: number): boolean {
  try {
    // A zombie (exited, not yet reaped by an init that may not reap) counts as gone.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * SIGKILL to a process group returns before every member has exited, and Node has no event for the death
 * of a process it did not spawn: poll, bounded, until the pid is gone.
 */
async function gone(pid: number, timeoutMs = 1000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

const peer = (id: string, ip: string, hostname = id, underlay: string[] = [], since = 1_700_000_000_000): PeerInfo =>
  ({ deviceId: id, ip, hostname, underlay, since });
const SELF: SelfInfo = { deviceId: 'me', ip: '10.0.0.2', hostname: 'gateway' };
const none = { up: [], down: [] };

describe('DiscoveryHandoff files', () => {
  it('writes peers.json sorted by IP, pretty, mode 0644 even under a strict umask, replacing it atomically', () => {
    const dir = tempDir();
    const peersFile = join(dir, 'run', 'mnedc', 'peers.json');
    const { h } = handoff({ peersFile });
    const peers = [peer('c', '10.0.1.2', 'c', ['192.168.1.5', '10.1.1.1'], 5), peer('a', '10.0.0.10'), peer('b', '10.0.0.9')];
    const oldMask = process.umask(0o077);
    try {
      const before = Date.now();
      h.update(SELF, peers, { up: peers, down: [] });
      const text = readFileSync(peersFile, 'utf8');
      const doc = JSON.parse(text) as { updatedAt: number; self: SelfInfo | null; peers: PeerInfo[] };
      assert.ok(doc.updatedAt >= before && doc.updatedAt <= Date.now());
      assert.deepEqual(doc.self, SELF);
      assert.deepEqual(doc.peers.map((p) => p.ip), ['10.0.0.9', '10.0.0.10', '10.0.1.2'], 'numeric, not string order');
      assert.deepEqual(doc.peers[2], { deviceId: 'c', ip: '10.0.1.2', hostname: 'c', underlay: ['192.168.1.5', '10.1.1.1'], since: 5 });
      assert.match(text, /^\{\n {2}"updatedAt": \d+,\n/);
      assert.ok(text.endsWith('}\n'));
      assert.equal(statSync(peersFile).mode & 0o777, 0o644);

      // A reader holding the old file keeps reading the complete old version: the new one is renamed over it.
      const fd = openSync(peersFile, 'r');
      const inode = statSync(peersFile).ino;
      h.update(null, [peers[0]!], { up: [], down: [peers[1]!, peers[2]!] });
      const buf = Buffer.alloc(text.length + 10);
      const n = readSync(fd, buf, 0, buf.length, 0);
      closeSync(fd);
      assert.equal(buf.subarray(0, n).toString('utf8'), text);
      assert.notEqual(statSync(peersFile).ino, inode);
      const doc2 = JSON.parse(readFileSync(peersFile, 'utf8')) as { self: unknown; peers: PeerInfo[] };
      assert.equal(doc2.self, null);
      assert.deepEqual(doc2.peers.map((p) => p.deviceId), ['c']);
      assert.deepEqual(readdirSync(dirname(peersFile)), ['peers.json'], 'no temporary file left behind');
    } finally {
      process.umask(oldMask);
    }
  });

  it('writes a hosts file with self, unique hostnames only, sanitised names', () => {
    const dir = tempDir();
    const hostsFile = join(dir, 'hosts');
    const { h } = handoff({ hostsFile });
    const peers = [
      peer('web-1', '10.0.0.5', 'web'),
      peer('web-2', '10.0.0.4', 'WEB'), // same hostname as web-1 after lowercasing
      peer('Dev_X', '10.0.0.12', 'Büro PC_1'),
      peer('odd', '10.0.0.13', '-- ..'),
      peer('long', '10.0.0.14', 'x'.repeat(80)),
      peer('twin', '10.0.0.15', 'gateway'), // same hostname as self
      peer('lo', '10.0.0.16', 'localhost'),
    ];
    h.update(SELF, peers, { up: peers, down: [] });
    const text = readFileSync(hostsFile, 'utf8');
    const lines = text.split('\n');
    assert.match(lines[0]!, /^# .*generated by mnedcd-client.*overwritten/i);
    const entries = lines.filter((l) => l && !l.startsWith('#')).map((l) => l.split('\t'));
    assert.deepEqual(entries, [
      ['10.0.0.2', 'me.mnedc'],
      ['10.0.0.4', 'web-2.mnedc'],
      ['10.0.0.5', 'web-1.mnedc'],
      ['10.0.0.12', 'dev-x.mnedc buro-pc-1.mnedc buro-pc-1'],
      ['10.0.0.13', 'odd.mnedc'],
      ['10.0.0.14', `long.mnedc ${'x'.repeat(63)}.mnedc ${'x'.repeat(63)}`],
      ['10.0.0.15', 'twin.mnedc'],
      ['10.0.0.16', 'lo.mnedc'], // localhost is nobody's name
    ]);
    assert.equal(statSync(hostsFile).mode & 0o777, 0o644);

    // When the duplicate goes away, the remaining device gets its hostname back.
    h.update(SELF, [peers[0]!], { up: [], down: peers.slice(1) });
    assert.deepEqual(readFileSync(hostsFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')),
      ['10.0.0.2\tme.mnedc gateway.mnedc gateway', '10.0.0.5\tweb-1.mnedc web.mnedc web']);
  });

  it('logs write errors instead of throwing, still runs hooks, and writes at new paths after reconfigure', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'plain'), 'not a directory');
    const hookDir = join(dir, 'hooks');
    const out = join(dir, 'out');
    hook(hookDir, 'record', `echo "$MNEDC_PEER_ID" >> ${out}`);
    const { h, lines } = handoff({ hookDir, peersFile: join(dir, 'plain', 'peers.json'), hostsFile: join(dir, 'plain', 'hosts') });
    h.update(SELF, [peer('a', '10.0.0.3')], { up: [peer('a', '10.0.0.3')], down: [] });
    assert.ok(lines.some((l) => l.level === WARN && /Could not write the peers file/.test(l.msg)));
    assert.ok(lines.some((l) => l.level === WARN && /Could not write the hosts file/.test(l.msg)));
    await within(h.idle(), 5000, 'hooks');
    assert.equal(readFileSync(out, 'utf8'), 'a\n');

    h.reconfigure({ hookDir, hookTimeoutMs: 10_000, peersFile: join(dir, 'new', 'peers.json'), hostsFile: join(dir, 'new', 'hosts') });
    assert.equal(existsSync(join(dir, 'new')), false, 'written at the next update, not before');
    h.update(SELF, [peer('a', '10.0.0.3')], none);
    assert.equal((JSON.parse(readFileSync(join(dir, 'new', 'peers.json'), 'utf8')) as { peers: unknown[] }).peers.length, 1);
    assert.match(readFileSync(join(dir, 'new', 'hosts'), 'utf8'), /^10\.0\.0\.3\ta\.mnedc\b/m);
  });
});

describe('DiscoveryHandoff hooks', () => {
  it('runs executable hooks in name order with argv and environment, for up and down, in order; skips the rest', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const out = join(dir, 'out');
    mkdirSync(out);
    const order = join(dir, 'order');
    const record = (tag: string): string =>
      `env > "${out}/${tag}.$1.$MNEDC_PEER_ID.env"\necho "${tag} $1 $MNEDC_PEER_ID $(grep -c "\\"$MNEDC_PEER_ID\\"" "$MNEDC_PEERS_FILE")" >> ${order}`;
    hook(hookDir, '20-second', record('second'));
    hook(hookDir, '10-first', record('first'));
    hook(hookDir, '.hidden', record('hidden'));
    hook(hookDir, 'backup~', record('backup'));
    hook(hookDir, 'old.dpkg-old', record('dpkg'));
    hook(hookDir, 'edit.swp', record('swp'));
    hook(hookDir, 'notexec', record('notexec'), 0o644);
    mkdirSync(join(hookDir, 'subdir'));
    const peersFile = join(dir, 'peers.json');
    process.env.MNEDC_TEST_INHERITED = 'yes';
    process.env.NOTIFY_SOCKET = '/run/systemd/notify'; // the daemon's, not for hooks
    const { h, lines } = handoff({ hookDir, peersFile }, 1);
    const a = peer('dev-a', '10.0.0.3', 'alpha', ['192.168.1.10', '172.16.0.4'], 1_700_000_000_123);
    const b = peer('dev-b', '10.0.0.4', 'beta');
    h.update(SELF, [a, b], { up: [a, b], down: [] });
    h.update(SELF, [b], { up: [], down: [a] });
    await within(h.idle(), 10_000, 'hooks to finish');
    delete process.env.MNEDC_TEST_INHERITED;
    delete process.env.NOTIFY_SOCKET;

    assert.deepEqual(readFileSync(order, 'utf8').trim().split('\n'), [
      // peers.json is the current state, not the state at the event: both updates were made before the first
      // hook ran, so dev-a's 'up' hooks already find it gone. Hooks must rely on MNEDC_PEER_* for their event.
      'first up dev-a 0', 'second up dev-a 0',
      'first up dev-b 1', 'second up dev-b 1',
      'first down dev-a 0', 'second down dev-a 0',
    ]);
    const env = Object.fromEntries(readFileSync(join(out, 'first.up.dev-a.env'), 'utf8').trim().split('\n').map((l) => {
      const i = l.indexOf('=');
      return [l.slice(0, i), l.slice(i + 1)];
    }));
    assert.equal(env.MNEDC_EVENT, 'up');
    assert.equal(env.MNEDC_PEER_ID, 'dev-a');
    assert.equal(env.MNEDC_PEER_IP, '10.0.0.3');
    assert.equal(env.MNEDC_PEER_HOSTNAME, 'alpha');
    assert.equal(env.MNEDC_PEER_UNDERLAY, '192.168.1.10 172.16.0.4');
    assert.equal(env.MNEDC_PEER_SINCE, '1700000000123');
    assert.equal(env.MNEDC_SELF_ID, 'me');
    assert.equal(env.MNEDC_SELF_IP, '10.0.0.2');
    assert.equal(env.MNEDC_PEERS_FILE, peersFile);
    assert.equal(env.MNEDC_TEST_INHERITED, 'yes');
    assert.equal(env.NOTIFY_SOCKET, undefined);
    assert.deepEqual(readdirSync(out).sort(), [
      'first.down.dev-a.env', 'first.up.dev-a.env', 'first.up.dev-b.env',
      'second.down.dev-a.env', 'second.up.dev-a.env', 'second.up.dev-b.env',
    ]);
    assert.equal(readFileSync(join(out, 'second.down.dev-a.env'), 'utf8').includes('MNEDC_EVENT=down\n'), true);
    assert.deepEqual(h.stats(), { hookRuns: 6, hookFailures: 0, hookTimeouts: 0, queued: 0, running: 0, dropped: 0 });
    assert.equal(lines.filter((l) => l.level >= WARN).length, 0, JSON.stringify(lines.filter((l) => l.level >= WARN)));
  });

  it('kills a hook that outlives its timeout, with its whole process group, and carries on', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const pidFile = join(dir, 'pid');
    const childFile = join(dir, 'child');
    const order = join(dir, 'order');
    hook(hookDir, '10-slow', `[ "$MNEDC_PEER_ID" = slow ] || exit 0\necho $$ > ${pidFile}\nsleep 1000 &\necho $! > ${childFile}\nwait`);
    hook(hookDir, '20-record', `echo "$MNEDC_PEER_ID" >> ${order}`);
    const { h, lines } = handoff({ hookDir, hookTimeoutMs: 300 });
    const started = Date.now();
    h.update(SELF, [], { up: [peer('slow', '10.0.0.3'), peer('fast', '10.0.0.4')], down: [] });
    await within(h.idle(), 5000, 'hooks to finish');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 300, `done after ${elapsed} ms`);
    assert.ok(elapsed < 2000, `SIGTERM should have sufficed, took ${elapsed} ms`);
    assert.equal(readFileSync(order, 'utf8'), 'slow\nfast\n', 'later hooks and events still run');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const child = Number(readFileSync(childFile, 'utf8'));
    assert.equal(await gone(pid), true, 'the hook is dead');
    assert.equal(await gone(child), true, 'its background child (same process group) is dead');
    const stats = h.stats();
    assert.equal(stats.hookTimeouts, 1);
    assert.equal(stats.hookFailures, 0);
    assert.equal(stats.hookRuns, 4);
    const warn = lines.find((l) => l.level === WARN && l.hook === '10-slow');
    assert.ok(warn, 'a warning names the hook');
    assert.match(warn.msg, /Hook 10-slow timed out after 300 ms: killed/);
    assert.equal(warn.peer, 'slow');
    assert.equal(warn.event, 'up');
  });

  it('SIGKILLs the process group 2 s after a SIGTERM the hook ignores', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const pidFile = join(dir, 'pid');
    hook(hookDir, 'stubborn', `trap '' TERM\necho $$ > ${pidFile}\nsleep 1000 &\necho $! >> ${pidFile}\nwait\nwait`);
    const { h } = handoff({ hookDir, hookTimeoutMs: 200 });
    const started = Date.now();
    h.update(SELF, [], { up: [peer('a', '10.0.0.3')], down: [] });
    await within(h.idle(), 6000, 'the stubborn hook to be killed');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 2200, `killed after ${elapsed} ms`);
    for (const pid of readFileSync(pidFile, 'utf8').trim().split('\n').map(Number)) assert.equal(await gone(pid), true, `pid ${pid}`);
    assert.equal(h.stats().hookTimeouts, 1);
  });

  it('logs and counts failing hooks and hooks that cannot start', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    hook(hookDir, '10-fails', 'echo "some output"\necho "cannot reach $MNEDC_PEER_IP" >&2\nexit 3');
    mkdirSync(hookDir, { recursive: true });
    writeFileSync(join(hookDir, '20-badinterp'), '#!/nonexistent/interpreter\n');
    chmodSync(join(hookDir, '20-badinterp'), 0o755);
    const { h, lines } = handoff({ hookDir });
    h.update(SELF, [], { up: [], down: [peer('gone', '10.0.0.7')] });
    await within(h.idle(), 5000, 'hooks');
    assert.deepEqual(h.stats(), { hookRuns: 2, hookFailures: 2, hookTimeouts: 0, queued: 0, running: 0, dropped: 0 });
    const failed = lines.find((l) => l.level === WARN && l.hook === '10-fails');
    assert.ok(failed);
    assert.match(failed.msg, /^Hook 10-fails failed for peer gone down: exit code 3/);
    assert.equal(failed.code, 3);
    assert.equal(failed.event, 'down');
    assert.equal(failed.peer, 'gone');
    assert.equal(failed.stderr, 'cannot reach 10.0.0.7');
    const unstarted = lines.find((l) => l.level === WARN && l.hook === '20-badinterp');
    assert.ok(unstarted);
    assert.match(unstarted.msg, /^Hook 20-badinterp could not be started for peer gone down/);
  });

  it('keeps the tail of a hook\'s output, and is not held up by a background process holding its pipes', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const bgFile = join(dir, 'bg');
    hook(hookDir, 'chatty', `i=0\nwhile [ $i -lt 3000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done\n` +
      `sleep 30 &\necho $! > ${bgFile}\nexit 4`);
    const { h, lines } = handoff({ hookDir, hookTimeoutMs: 10_000 });
    const started = Date.now();
    h.update(SELF, [], { up: [peer('a', '10.0.0.3')], down: [] });
    await within(h.idle(), 5000, 'the hook');
    const bg = Number(readFileSync(bgFile, 'utf8'));
    try {
      assert.ok(Date.now() - started < 3000, 'done soon after the hook itself exited');
      assert.equal(alive(bg), true, 'a background process the hook started is left alone');
      assert.deepEqual(h.stats(), { hookRuns: 1, hookFailures: 1, hookTimeouts: 0, queued: 0, running: 0, dropped: 0 });
      const failed = lines.find((l) => l.level === WARN && l.hook === 'chatty');
      assert.ok(failed);
      const stderr = failed.stderr as string;
      assert.ok(stderr.length <= 2048 && stderr.length > 1900, `${stderr.length} bytes kept`);
      assert.ok(stderr.endsWith('line 2999 of noise'));
      assert.match(failed.msg, /exit code 4/);
    } finally {
      try { process.kill(bg, 'SIGKILL'); } catch { /* gone */ }
    }
  });

  it('treats a missing hook directory as no hooks, and picks up a new one on reconfigure', async () => {
    const dir = tempDir();
    const missing = join(dir, 'nope');
    const { h, lines } = handoff({ hookDir: missing });
    h.update(SELF, [], { up: [peer('a', '10.0.0.3')], down: [] });
    h.update(SELF, [], { up: [peer('b', '10.0.0.4')], down: [] });
    await within(h.idle(), 5000, 'events');
    assert.equal(lines.filter((l) => l.level >= WARN).length, 0);
    assert.equal(lines.filter((l) => l.level === DEBUG && /does not exist/.test(l.msg)).length, 1, 'said once');
    assert.equal(h.stats().hookRuns, 0);

    // The directory appears later: the next event scans it again, no restart needed.
    const out = join(dir, 'out');
    hook(missing, 'record', `echo "$MNEDC_PEER_ID" >> ${out}`);
    h.update(SELF, [], { up: [peer('c', '10.0.0.5')], down: [] });
    await within(h.idle(), 5000, 'events');
    assert.equal(readFileSync(out, 'utf8'), 'c\n');

    const other = join(dir, 'other');
    hook(other, 'record', `echo "other $MNEDC_PEER_ID" >> ${out}`);
    h.reconfigure({ hookDir: other, hookTimeoutMs: 1000, peersFile: '', hostsFile: '' });
    h.update(SELF, [], { up: [peer('d', '10.0.0.6')], down: [] });
    await within(h.idle(), 5000, 'events');
    h.reconfigure({ hookDir: '', hookTimeoutMs: 1000, peersFile: '', hostsFile: '' });
    h.update(SELF, [], { up: [peer('e', '10.0.0.7')], down: [] });
    assert.equal(h.stats().queued, 0, 'hooks disabled: nothing queued');
    await within(h.idle(), 5000, 'events');
    assert.equal(readFileSync(out, 'utf8'), 'c\nother d\n');
  });

  it('close() drops the queue and kills a running hook', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const pidFile = join(dir, 'pid');
    const order = join(dir, 'order');
    hook(hookDir, 'sleeper', `echo "$MNEDC_PEER_ID" >> ${order}\necho $$ > ${pidFile}\nsleep 1000`);
    const { h } = handoff({ hookDir, hookTimeoutMs: 300 });
    h.update(SELF, [], { up: [peer('a', '10.0.0.3'), peer('b', '10.0.0.4'), peer('c', '10.0.0.5')], down: [] });
    const pid = Number(await untilFile(pidFile, (t) => t.endsWith('\n')));
    assert.equal(h.stats().running, 1);
    assert.equal(h.stats().queued, 2);
    const started = Date.now();
    await within(h.close(), 300 + 3000 + 500, 'close');
    assert.ok(Date.now() - started < 2000, 'killed at its timeout, not later');
    assert.equal(await gone(pid), true);
    assert.deepEqual(h.stats(), { hookRuns: 1, hookFailures: 0, hookTimeouts: 1, queued: 0, running: 0, dropped: 0 });
    assert.equal(readFileSync(order, 'utf8'), 'a\n', 'queued events dropped');
    h.update(SELF, [], { up: [peer('d', '10.0.0.6')], down: [] });
    assert.equal(h.stats().queued, 0, 'nothing queued after close');
  });

  it('runs 500 queued events in order with at most maxConcurrentHooks hook processes', { timeout: 120_000 }, async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    const log = join(dir, 'log');
    for (const name of ['h1', 'h2', 'h3', 'h4', 'h5', 'h6']) {
      // O_APPEND writes of one short line are atomic: the log is a faithful order of starts and ends. Every
      // 50th event's hooks take a while, so that their overlap (bounded by 4) shows in the log.
      hook(hookDir, name, `echo "S $MNEDC_PEER_ID ${name}" >> ${log}\ncase $MNEDC_PEER_ID in *[05]0) sleep 0.1;; esac\necho "E $MNEDC_PEER_ID ${name}" >> ${log}`);
    }
    const { h, lines } = handoff({ hookDir, peersFile: join(dir, 'peers.json'), hostsFile: join(dir, 'hosts') }, 4);
    const peers = Array.from({ length: 500 }, (_, i) => peer(`p${String(i).padStart(3, '0')}`, `10.0.${i >> 8}.${(i & 255) + 1}`));
    h.update(SELF, peers, { up: peers, down: [] });
    assert.ok(h.stats().queued >= 499);
    let maxRunning = 0;
    const sampler = setInterval(() => { maxRunning = Math.max(maxRunning, h.stats().running); }, 1);
    try {
      await within(h.idle(), 110_000, '3000 hook runs');
    } finally {
      clearInterval(sampler);
    }
    assert.ok(maxRunning <= 4, `sampled ${maxRunning} running`);
    const records = readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ') as [string, string, string]);
    assert.equal(records.length, 500 * 6 * 2);
    let running = 0;
    let maxSeen = 0;
    let current = '';
    const finished = new Set<string>();
    for (const [mark, id, name] of records) {
      if (mark === 'S') {
        if (id !== current) {
          // A new event starts only after every hook of the previous one ended, and events keep their order.
          assert.equal(running, 0, `${id} started while ${current} still ran`);
          assert.ok(current === '' || id > current, `${id} after ${current}`);
          if (current) assert.equal([...finished].filter((k) => k.startsWith(`${current} `)).length, 6);
          current = id;
        }
        maxSeen = Math.max(maxSeen, ++running);
      } else {
        assert.equal(id, current);
        running--;
        finished.add(`${id} ${name}`);
      }
    }
    assert.ok(maxSeen <= 4, `${maxSeen} hooks overlapped`);
    assert.ok(maxSeen >= 2, `hooks of one event should run concurrently, saw at most ${maxSeen} at once`);
    assert.equal(finished.size, 3000);
    assert.deepEqual(h.stats(), { hookRuns: 3000, hookFailures: 0, hookTimeouts: 0, queued: 0, running: 0, dropped: 0 });
    assert.equal(lines.filter((l) => l.level >= WARN).length, 0);
  });

  it('bounds the queue: drops the oldest events with one rate-limited warning', async () => {
    const dir = tempDir();
    const hookDir = join(dir, 'peer.d');
    hook(hookDir, 'noop', 'exit 0');
    const { h, lines } = handoff({ hookDir });
    const many = Array.from({ length: MAX_QUEUED_EVENTS + 50 }, (_, i) => peer(`p${i}`, `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`));
    h.update(SELF, [], { up: many, down: [] });
    // The first remaining event was taken by the runner at once; the rest wait.
    assert.deepEqual(h.stats(), { hookRuns: 0, hookFailures: 0, hookTimeouts: 0, queued: MAX_QUEUED_EVENTS - 1, running: 0, dropped: 50 });
    h.update(SELF, [], { up: many.slice(0, 10), down: [] });
    assert.equal(h.stats().dropped, 59, '9999 + 10 pending: 9 more dropped');
    assert.equal(h.stats().queued, MAX_QUEUED_EVENTS);
    const warnings = lines.filter((l) => l.level === WARN && /queue is full/.test(l.msg));
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]!.dropped, 50);
    await within(h.close(), 5000, 'close');
    assert.equal(h.stats().queued, 0);
    assert.ok(h.stats().hookRuns <= 1);
  });
});
