import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, type RpcMethods } from '@mnedc/common';
import { run, type RunIo } from '../src';
import { pagerCommand } from '../src/pager';
import type { Lease } from '../src/api';
import { Capture, NOW, serverStatus } from './fixtures';

const TIMEOUT = { timeout: 15_000 };
let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedcctl-list-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

const many: Lease[] = Array.from({ length: 10_000 }, (_, i) => ({
  deviceId: `edge-${i}`, ip: `10.0.${i >> 8}.${i & 255}`, hostname: `host-${i}`, connected: i % 2 === 0, lastSeen: NOW, createdAt: NOW,
  underlay: ['192.168.1.10'], remote: i % 2 === 0 ? '192.168.1.10:4000' : null,
}));

async function ctl(argv: string[], io: Partial<RunIo> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await run(argv, { stdout, stderr, env: {}, now: () => NOW, defaultSockets: [join(dir, 'none.sock')], ...io });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('peers and leases --filter, --limit', () => {
  let server: ControlServer;
  const calls: unknown[] = [];
  before(async () => {
    // A daemon from before --filter: it records the parameters and ignores them.
    const methods: RpcMethods = { status: () => serverStatus, leases: (params) => { calls.push(params); return many; }, peers: () => [] };
    server = await ControlServer.listen(join(dir, 'd.sock'), methods);
  });
  after(() => server.close());
  const on = (...argv: string[]) => ['--socket', server.path, ...argv];

  test('passes them to the daemon and selects the same rows itself from one that ignores them', TIMEOUT, async () => {
    const out = await ctl(on('leases', '--filter', 'EDGE-99*', '--limit', '3', '--json'));
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(calls.at(-1), { filter: 'EDGE-99*', limit: 3 });
    assert.deepEqual((JSON.parse(out.stdout) as Lease[]).map((l) => l.deviceId), ['edge-99', 'edge-990', 'edge-991']);
    const byIp = await ctl(on('leases', '--filter', '10.0.39.15'));
    assert.match(byIp.stdout, /^DEVICE.*\nedge-9999 +10\.0\.39\.15 +host-9999 /);
    assert.equal(byIp.stdout.split('\n').length, 3);
    await ctl(on('leases'));
    assert.equal(calls.at(-1) ?? null, null, 'no parameters without the options');
  });

  test('renders 10,000 rows well within a second', TIMEOUT, async () => {
    const started = Date.now();
    const out = await ctl(on('leases'));
    assert.equal(out.stdout.split('\n').length, 10_002);
    assert.ok(Date.now() - started < 1000, `${Date.now() - started} ms`);
  });

  test('refuses bad values and other commands', TIMEOUT, async () => {
    for (const [argv, message] of [
      [['leases', '--limit', '0'], /--limit "0": not a whole number from 1 to 1000000/],
      [['leases', '--limit', '2x'], /--limit "2x"/],
      [['leases', '--filter', ''], /--filter "": give 1 to 256 printable characters/],
      [['leases', '--filter'], /--filter needs a text/],
      [['stats', '--filter', 'x'], /--filter is an option of peers and leases, not of stats/],
      [['kick', 'dev', '--limit', '2'], /--limit is an option of peers and leases, not of kick/],
    ] as const) {
      const out = await ctl(on(...argv));
      assert.equal(out.code, 2, argv.join(' '));
      assert.match(out.stderr, message);
    }
  });

  test('pages a table to a terminal through $PAGER, never JSON or a pipe', TIMEOUT, async () => {
    assert.equal(pagerCommand({}, true, false), 'less -FRX');
    assert.equal(pagerCommand({ PAGER: 'most' }, true, false), 'most');
    assert.equal(pagerCommand({ PAGER: 'cat' }, true, false), undefined);
    assert.equal(pagerCommand({ PAGER: '' }, true, false), undefined);
    assert.equal(pagerCommand({}, false, false), undefined);
    assert.equal(pagerCommand({}, true, true), undefined);
    const paged = join(dir, 'paged.txt');
    const tty = Object.assign(new Capture(), { isTTY: true });
    const env = { PAGER: `cat > ${paged}` };
    assert.equal(await run(on('leases', '--limit', '2'), { stdout: tty, stderr: new Capture(), env, now: () => NOW }), 0);
    assert.equal(tty.text, '', 'the pager wrote it, not mnedcctl');
    assert.match(readFileSync(paged, 'utf8'), /^DEVICE .*\nedge-0 .*\nedge-1 /);
    const json = Object.assign(new Capture(), { isTTY: true });
    await run(on('leases', '--limit', '1', '--json'), { stdout: json, stderr: new Capture(), env, now: () => NOW });
    assert.equal((JSON.parse(json.text) as Lease[]).length, 1);
    const missing = Object.assign(new Capture(), { isTTY: true });
    const stderr = new Capture();
    await run(on('leases', '--limit', '1'), { stdout: missing, stderr, env: { PAGER: 'no-such-pager-mnedc' }, now: () => NOW });
    assert.match(missing.text, /^DEVICE .*\nedge-0 /, 'without a pager that runs, the table is written directly');
  });
});
