import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer } from '@mnedc/common';
import type { ClientStatus } from '../src';
import { run } from '../src';
import { waitOnline } from '../src/wait-online';
import { Capture, clientStatus, serverStatus } from './fixtures';

const TIMEOUT = { timeout: 20_000 };
let dir: string;
let n = 0;
before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedc-wait-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** A client daemon whose status is whatever `current` holds when asked. */
async function fakeClient(current: { status: ClientStatus }, path = join(dir, `c${++n}.sock`)): Promise<ControlServer> {
  return ControlServer.listen(path, { status: () => current.status });
}

describe('mnedcctl wait-online', () => {
  test('waits through a daemon not there yet, then waiting, then connected with the address on its TUN', TIMEOUT, async () => {
    const path = join(dir, `c${++n}.sock`);
    const current = { status: { ...clientStatus, state: 'waiting', lastError: 'connect ECONNREFUSED' } as ClientStatus };
    let onTun = false;
    const asked: string[] = [];
    const waiting = waitOnline(path, 15_000, undefined, (name, ip) => { asked.push(`${ip} ${name}`); return onTun; });
    // The daemon starts after the wait did; then it connects, and only later is the address seen on the TUN.
    const server = await fakeClient(current, path);
    try {
      current.status = { ...clientStatus, state: 'connected' };
      while (asked.length === 0) await new Promise((r) => setTimeout(r, 20));
      onTun = true;
      const outcome = await waiting;
      assert.deepEqual(outcome, { online: true, detail: `${clientStatus.ip} on ${clientStatus.interface}` });
      assert.equal(asked[0], `${clientStatus.ip} ${clientStatus.interface}`);
    } finally {
      await server.close();
    }
  });

  test('gives up after --timeout with exit 1 and the client\'s own reason', TIMEOUT, async () => {
    const current = { status: { ...clientStatus, state: 'waiting', lastError: 'the server rejected this device: bad secret' } as ClientStatus };
    const server = await fakeClient(current);
    try {
      const stdout = new Capture();
      const stderr = new Capture();
      const started = Date.now();
      const code = await run(['wait-online', '--timeout', '1', '--socket', server.path], { stdout, stderr, env: {} });
      assert.equal(code, 1);
      assert.ok(Date.now() - started >= 1000 && Date.now() - started < 5000, `${Date.now() - started} ms`);
      assert.equal(stderr.text, 'mnedcctl: the overlay is not up after 1 s: the client is waiting: the server rejected this device: bad secret\n');
    } finally {
      await server.close();
    }
  });

  test('no daemon at all: exit 1 after the timeout, naming the socket', TIMEOUT, async () => {
    const stderr = new Capture();
    const code = await run(['wait-online', '--timeout', '0.3', '--socket', join(dir, 'none.sock')], { stdout: new Capture(), stderr, env: {} });
    assert.equal(code, 1);
    assert.match(stderr.text, /^mnedcctl: the overlay is not up after 0\.3 s: no daemon listening on .*none\.sock/);
  });

  test('a long wait leaves no listener behind on the interrupt signal (no MaxListenersExceededWarning)', TIMEOUT, async () => {
    const current = { status: { ...clientStatus, state: 'waiting', lastError: 'connect ETIMEDOUT' } as ClientStatus };
    const server = await fakeClient(current);
    const warnings: Error[] = [];
    const onWarning = (w: Error) => { warnings.push(w); };
    process.on('warning', onWarning);
    try {
      // 200 ms polls: over 3 s is more than the 10 listeners an EventTarget takes before it warns.
      const interrupt = new AbortController();
      const outcome = await waitOnline(server.path, 3200, interrupt.signal);
      assert.equal(outcome.online, false);
      assert.equal(getEventListeners(interrupt.signal, 'abort').length, 0);
      await new Promise((r) => setImmediate(r)); // a warning is emitted on a later tick
      assert.deepEqual(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message), []);
    } finally {
      process.off('warning', onWarning);
      await server.close();
    }
  });

  test('a server daemon\'s socket is refused at once', TIMEOUT, async () => {
    const server = await ControlServer.listen(join(dir, `s${++n}.sock`), { status: () => serverStatus });
    try {
      const outcome = await waitOnline(server.path, 10_000);
      assert.deepEqual(outcome, { online: false, detail: `${server.path} is not a client daemon's socket` });
    } finally {
      await server.close();
    }
  });
});
