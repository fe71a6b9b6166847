/**
 * The network lab reproduces the nested-NAT problem: lower -> upper works,
 * upper -> lower and sibling -> sibling do not. Needs root (netns, nftables).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Lab, UNDERLAY } from '@mnedc/lab';

function skipReason(): string | false {
  if (process.platform !== 'linux') return 'network lab needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'network lab needs root';
  const r = spawnSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 10_000 });
  if (r.error || r.status !== 0) return 'ip netns unavailable';
  const n = spawnSync('nft', ['--version'], { stdio: 'ignore', timeout: 10_000 });
  if (n.error || n.status !== 0) return 'nft unavailable';
  return false;
}

function namespacesWithPrefix(prefix: string): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, `ip netns list failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.startsWith(prefix));
}

const EXPECTED_CHECKS = [
  'same-ip:b,d',
  'up:b->srv',
  'up:c->srv',
  'up:d->srv',
  'up:c->r1lan',
  'sib:c->d-ambiguous',
  'down:srv->b',
  'down:a->c',
  'down:srv->b-route',
  'down:srv->c-route',
  'sib:d->c',
];

const skip = skipReason();

describe('network lab topology', { skip }, () => {
  let lab: Lab | undefined;
  let prefix = '';

  before(async () => {
    lab = await Lab.create();
    prefix = lab.prefix;
  });

  after(async () => {
    if (lab) await lab.destroy();
    if (prefix) assert.deepEqual(namespacesWithPrefix(prefix), [], 'lab namespaces left behind');
  });

  it('lab.sh check passes and reports every check', async () => {
    assert.ok(lab);
    const res = await lab.check();
    assert.equal(res.code, 0, `lab.sh check failed:\n${res.stdout}${res.stderr}`);
    const lines = res.stdout.split('\n');
    for (const id of EXPECTED_CHECKS) {
      assert.ok(
        lines.some((l) => l.startsWith('OK ') && l.split(/\s+/)[1] === id),
        `check ${id} missing or not OK in:\n${res.stdout}`,
      );
    }
    assert.ok(!lines.some((l) => l.startsWith('FAIL')), res.stdout);
  });

  it('b and d have the same private address', async () => {
    assert.ok(lab);
    assert.equal(UNDERLAY.b, UNDERLAY.d);
    for (const node of ['b', 'd'] as const) {
      const r = await lab.exec(node, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /inet 192\.168\.1\.10\/24/);
    }
  });

  it('c (two NATs deep) reaches srv', async () => {
    assert.ok(lab);
    let r = await lab.exec('c', ['ping', '-n', '-c1', '-W1', UNDERLAY.srv], { timeoutMs: 10_000 });
    for (let i = 0; i < 2 && r.code !== 0; i++) {
      r = await lab.exec('c', ['ping', '-n', '-c1', '-W1', UNDERLAY.srv], { timeoutMs: 10_000 });
    }
    assert.equal(r.code, 0, `c -> srv ping failed:\n${r.stdout}${r.stderr}`);
  });

  it('srv cannot reach c, nor b even with an explicit route via r1', async () => {
    assert.ok(lab);
    const r = await lab.exec('srv', ['ping', '-n', '-c1', '-W1', UNDERLAY.c], { timeoutMs: 10_000 });
    assert.notEqual(r.code, 0, `srv -> c unexpectedly answered:\n${r.stdout}`);
    const add = await lab.exec('srv', ['ip', 'route', 'add', '192.168.1.0/24', 'via', UNDERLAY.r1]);
    assert.equal(add.code, 0, add.stderr);
    try {
      const p = await lab.exec('srv', ['ping', '-n', '-c1', '-W1', UNDERLAY.b], { timeoutMs: 10_000 });
      assert.notEqual(p.code, 0, `srv -> b through r1 unexpectedly answered:\n${p.stdout}`);
    } finally {
      await lab.exec('srv', ['ip', 'route', 'del', '192.168.1.0/24', 'via', UNDERLAY.r1]);
    }
  });

  it('exec honours timeoutMs and reports non-zero exits without throwing', async () => {
    assert.ok(lab);
    const t0 = Date.now();
    const r = await lab.exec('a', ['sleep', '30'], { timeoutMs: 300 });
    assert.ok(Date.now() - t0 < 5_000);
    assert.equal(r.code, null);
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.timedOut, true);
    const f = await lab.exec('a', ['sh', '-c', 'cat; exit 3'], { input: 'hello' });
    assert.equal(f.code, 3);
    assert.equal(f.stdout, 'hello');
  });

  it('spawn runs a tracked long-running process inside the namespace', async () => {
    assert.ok(lab);
    const child = lab.spawn('srv', ['sleep', '600']);
    assert.ok(child.pid);
    const pids = await lab.exec('srv', ['ip', 'netns', 'pids', lab.ns('srv')]);
    // `ip netns pids` from inside the namespace still reads /proc globally.
    assert.ok(pids.stdout.split(/\s+/).includes(String(child.pid)), pids.stdout);
    // Left running on purpose: destroy() in after() must kill it.
  });
});
