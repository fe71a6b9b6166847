import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ControlClient, ControlServer, RPC_SCHEMA, rpcProblems } from '@mnedc/common';
import { parseServerConfig } from '../src';
import { serverMethods } from '../src/control-api';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays('mnedc-rpc-');
const sockets = mkdtempSync(join(tmpdir(), 'mnedc-rpc-sock-'));
after(() => rmSync(sockets, { recursive: true, force: true }));

/** The notifications a watcher received, and a bounded wait for the next one that matches. */
function watcher(client: ControlClient) {
  const seen: Array<{ method: string; params: unknown }> = [];
  let wake = () => {};
  client.onNotification((method, params) => { seen.push({ method, params }); wake(); });
  return {
    seen,
    async until(match: (params: Record<string, unknown>) => boolean, what: string, timeoutMs = 5000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!seen.some((n) => match(n.params as Record<string, unknown>))) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${what} notification within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => { const t = setTimeout(resolve, left); wake = () => { clearTimeout(t); resolve(); }; });
      }
    },
  };
}

describe('RPC types agree with the relay', () => {
  it('every method and notification answers over the control socket with exactly the declared fields', async () => {
    const { server, port } = await relays.start();
    const methods = serverMethods(server, () => parseServerConfig('[server]\ninterface =\n', 't.ini'), 'test');
    assert.deepEqual(Object.keys(methods).sort(), Object.keys(RPC_SCHEMA.server.results).sort(), 'the relay serves exactly the declared methods');
    const control = await ControlServer.listen(join(sockets, 'server.sock'), methods);
    const ctl = await ControlClient.connect(control.path);
    const watching = await ControlClient.connect(control.path);
    const called = new Set<string>();
    const answer = async (method: string, params?: unknown) => {
      const result = await ctl.call(method, params);
      called.add(method);
      assert.deepEqual(rpcProblems('server', { result: method }, result), [], `${method} returned ${JSON.stringify(result)}`);
      return result;
    };
    try {
      const events = watcher(watching);
      assert.deepEqual(rpcProblems('server', { result: 'watch' }, await watching.call('watch')), []);
      called.add('watch');
      await relays.join(port, 'dev-a');
      await relays.join(port, 'dev-b');
      await events.until((e) => e.event === 'up' && e.deviceId === 'dev-b', 'up');

      await answer('status');
      // Lists with members, so that their elements' fields are checked too.
      assert.equal((await answer('peers') as unknown[]).length, 2);
      assert.equal((await answer('leases') as unknown[]).length, 2);
      assert.equal(((await answer('stats')) as { clients: unknown[] }).clients.length, 2);
      await answer('join');
      await answer('kick', { deviceId: 'dev-a' });
      await events.until((e) => e.event === 'down' && e.deviceId === 'dev-a', 'down');
      await answer('release', { deviceId: 'dev-a' });
      await answer('forget', { deviceId: 'dev-b' });
      await answer('rotateJoin');
      assert.deepEqual(await answer('cluster'), { network: null, relay: server.relayId, etcd: null, stateReadable: true,
        relays: [{ id: server.relayId, advertise: `127.0.0.1:${port}`, since: server.startedAt, devices: 0, self: true,
          link: 'self', problem: '', rttMs: -1, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 }] });

      for (const n of events.seen) assert.deepEqual(rpcProblems('server', { notification: n.method }, n.params), [], JSON.stringify(n));
      assert.deepEqual([...called].sort(), Object.keys(RPC_SCHEMA.server.results).sort(), 'every declared method was called');
    } finally {
      ctl.close();
      watching.close();
      await control.close();
    }
  });
});
