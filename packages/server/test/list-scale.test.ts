import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ControlClient, ControlServer, RpcError, rpcProblems, type Lease } from '@mnedc/common';
import { parseServerConfig } from '../src';
import { serverMethods } from '../src/control-api';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays('mnedc-list-');
const sockets = mkdtempSync(join(tmpdir(), 'mnedc-list-sock-'));
after(() => rmSync(sockets, { recursive: true, force: true }));

const DEVICES = 10_000;

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
}

describe('mnedcctl leases/peers at 10,000 leases', () => {
  it('the relay selects rows by --filter and --limit and answers within a second', { timeout: 60_000 }, async () => {
    const { server } = await relays.start('subnet = 10.0.0.0/16\n');
    for (let i = 0; i < DEVICES; i++) {
      const got = server.pool.acquire({ deviceId: `edge-${i}`, hostname: `site-${i % 100}`, underlay: [], now: Date.now(), isConnected: () => false });
      assert.ok(got.ok);
    }
    await server.pool.pending(`edge-${DEVICES - 1}`);
    const methods = serverMethods(server, () => parseServerConfig('[server]\ninterface =\n', 't.ini'), 'test');
    const control = await ControlServer.listen(join(sockets, 'server.sock'), methods);
    const ctl = await ControlClient.connect(control.path);
    try {
      const all = await timed(() => ctl.call<Lease[]>('leases'));
      assert.equal(all.value.length, DEVICES);
      assert.ok(all.ms < 1000, `all ${DEVICES} leases in ${all.ms.toFixed(0)} ms`);
      const one = await timed(() => ctl.call<Lease[]>('leases', { filter: 'edge-9999' }));
      assert.deepEqual(one.value.map((l) => l.deviceId), ['edge-9999']);
      assert.ok(one.ms < 1000, `one lease in ${one.ms.toFixed(0)} ms`);
      assert.deepEqual(rpcProblems('server', { result: 'leases' }, one.value), []);
      const site = await ctl.call<Lease[]>('leases', { filter: 'SITE-7', limit: 5 });
      assert.deepEqual(site.map((l) => l.deviceId), ['edge-7', 'edge-70', 'edge-71', 'edge-72', 'edge-73']);
      const glob = await ctl.call<Lease[]>('leases', { filter: '10.0.39.*' });
      // edge-i holds 10.0.0.2 + i: edge-9982 to edge-9999 are 10.0.39.0 to 10.0.39.17.
      assert.deepEqual(glob.map((l) => l.deviceId), Array.from({ length: 18 }, (_, i) => `edge-${9982 + i}`));
      assert.deepEqual(await ctl.call('peers', { filter: 'edge' }), []);
      await assert.rejects(ctl.call('leases', { limit: -1 }), (e: unknown) => e instanceof RpcError && /limit: -1 is not a whole number/.test(e.message));
      await assert.rejects(ctl.call('peers', { filter: 7 }), (e: unknown) => e instanceof RpcError && /params.filter: expected a string/.test(e.message));
    } finally {
      ctl.close();
      await control.close();
    }
  });
});
