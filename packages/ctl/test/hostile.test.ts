/**
 * A hostile daemon (or a hostile peer whose hostname a daemon passes on) must not get control characters
 * onto the terminal through mnedcctl: every string it prints is escaped, every value stays on its line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, RpcError, RPC_ERRORS, type CallContext, type RpcMethods } from '@mnedc/common';
import { run } from '../src';
import { Capture, NOW, clientPeers, clientStats, clientStatus, leases, serverPeers, serverStats, serverStatus } from './fixtures';

const TIMEOUT = { timeout: 10_000 };
/** A newline with a fake line behind it, a colour escape, CR, BEL, a C1 CSI, a right-to-left override. */
const EVIL = '\nmnedcctl: FAKE\u001b[31m\r\u0007\u009b\u202e';
const ESCAPED = '\\nmnedcctl: FAKE\\x1b[31m\\r\\x07\\x9b\\u202e';
/** What must never reach the terminal raw (newlines are checked by counting lines). */
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/;

/** Every string in `value` with EVIL appended, except the fields mnedcctl needs to talk to the daemon at all. */
function poison<T>(value: T): T {
  if (typeof value === 'string') return `${value}${EVIL}` as T;
  if (Array.isArray(value)) return value.map(poison) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, k === 'daemon' ? v : poison(v)])) as T;
  }
  return value;
}


let dir: string;
let counter = 0;
before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedcctl-hostile-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

async function ctl(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await run(argv, { stdout, stderr, env: {}, now: () => NOW });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

function checkHuman(text: string, lines: number, what: string): void {
  assert.doesNotMatch(text, RAW, `${what}: a raw control character`);
  assert.equal(text.split('\n').length - 1, lines, `${what}: ${JSON.stringify(text)}`);
  assert.ok(text.includes(ESCAPED), `${what} shows the escaped text`);
}

describe('mnedcctl against a hostile daemon', () => {
  const watchers: CallContext[] = [];
  let watched!: () => void;
  const watching = new Promise<void>((resolve) => { watched = resolve; });
  const hostileError = (params: unknown) => new RpcError(RPC_ERRORS.notFound, `device ${String((params as { deviceId: string }).deviceId)}${EVIL} is gone`);
  const serverMethods: RpcMethods = {
    // Field names a newer (or hostile) daemon adds are shown too, so they are escaped like values.
    status: () => poison({ ...serverStatus, [`extra${EVIL}`]: 'x' }),
    peers: () => poison(serverPeers),
    leases: () => poison(leases),
    stats: () => poison({ ...serverStats, refused: { ...serverStats.refused, [`new${EVIL}`]: 1 },
      totals: { ...serverStats.totals, drops: { ...serverStats.totals.drops, [`new${EVIL}`]: 2 } } }),
    kick: (params) => ({ kicked: true, deviceId: `${(params as { deviceId: string }).deviceId}${EVIL}` }),
    release: (params) => { throw hostileError(params); },
    forget: () => poison({ forgotten: true, deviceId: 'device-c', ip: '10.0.0.4', binding: true }),
    join: () => poison({ join: 'mnedc1.x.y', fingerprint: 'SHA256:x' }),
    watch: (_params, context) => { watchers.push(context); watched(); return { watching: true }; },
  };
  const clientMethods: RpcMethods = {
    status: () => poison(clientStatus),
    peers: () => poison(clientPeers),
    stats: () => ({ ...clientStats, session: { ...clientStats.session, [`new${EVIL}`]: 3 } }),
  };
  let server: ControlServer;
  let client: ControlServer;
  before(async () => {
    server = await ControlServer.listen(join(dir, `s${++counter}.sock`), serverMethods);
    client = await ControlServer.listen(join(dir, `c${++counter}.sock`), clientMethods);
  });
  after(async () => { await server.close(); await client.close(); });

  test('every human-readable command escapes what the daemon sent, one value per line', TIMEOUT, async () => {
    const expectedLines: Array<[ControlServer, string[], number]> = [
      [server, ['status'], 13], [server, ['peers'], 3], [server, ['leases'], 3], [server, ['stats'], 30],
      [server, ['kick', 'device-a'], 1], [server, ['forget', 'device-c'], 1], [server, ['join'], 1],
      [client, ['status'], 16], [client, ['peers'], 2],
    ];
    for (const [daemon, argv, lines] of expectedLines) {
      const result = await ctl(['--socket', daemon.path, ...argv]);
      assert.equal(result.code, 0, result.stderr);
      checkHuman(result.stdout, lines, argv.join(' '));
    }
  });

  test('a counter name is escaped like a value', TIMEOUT, async () => {
    const result = await ctl(['--socket', client.path, 'stats']);
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stdout, RAW);
    assert.equal(result.stdout.split('\n').length - 1, 15, result.stdout);
    assert.match(result.stdout, /^new\\nmnedcctl: fake\\x1b\[31m\\r\\x07\\x9b\\u202e +3$/m);
  });

  test('--json carries the same values, with nothing unprintable left raw', TIMEOUT, async () => {
    for (const [argv, expected] of [[['peers'], poison(serverPeers)], [['leases'], poison(leases)], [['status'], poison({ ...serverStatus, [`extra${EVIL}`]: 'x' })]] as const) {
      const result = await ctl(['--socket', server.path, ...argv, '--json']);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), expected);
      assert.doesNotMatch(result.stdout, RAW);
    }
  });

  test('error messages and watch lines are escaped too', TIMEOUT, async () => {
    const failed = await ctl(['--socket', server.path, 'release', 'device-a']);
    assert.equal(failed.code, 1);
    assert.equal(failed.stderr, `mnedcctl: release: device device-a${ESCAPED} is gone\n`);

    const controller = new AbortController();
    const stdout = new Capture();
    const done = run(['--socket', server.path, 'watch'], { stdout, stderr: new Capture(), env: {}, now: () => NOW, signal: controller.signal });
    await watching;
    watchers[0]!.notify('peer', poison({ event: 'up', deviceId: 'device-b', ip: '10.0.0.3', hostname: 'beta' }));
    watchers[0]!.notify(`future${EVIL}`, { text: EVIL });
    await stdout.until(/future/);
    controller.abort();
    assert.equal(await done, 0);
    assert.doesNotMatch(stdout.text, RAW);
    assert.equal(stdout.text.split('\n').length - 1, 2, stdout.text);
    assert.ok(stdout.text.includes(`device-b${ESCAPED} 10.0.0.3${ESCAPED} beta${ESCAPED}`), stdout.text);
  });

  test('a device ID operand with control characters is a usage error', TIMEOUT, async () => {
    const result = await ctl(['--socket', server.path, 'kick', 'a\nb\u001b']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^mnedcctl: kick: the device ID "a\\nb\\u001b" holds control characters/);
  });
});
