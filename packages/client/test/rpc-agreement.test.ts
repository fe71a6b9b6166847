import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { ControlClient, ControlServer, RPC_SCHEMA, rpcProblems } from '@mnedc/common';
import { parseServerConfig, RelayServer } from '@mnedc/server';
import { Backoff, clientMethods, parseClientConfig, RelayClient, RetryPolicy } from '../src';
import { FakeDevice } from './fake-device';

const dir = mkdtempSync(join(tmpdir(), 'mnedc-rpc-client-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fake TUN with the counters the real one reports (TunStats), which the client's stats pass through. */
class CountingDevice extends FakeDevice {
  stats() {
    return { rxPackets: 1, rxBytes: 2, txPackets: 3, txBytes: 4, txDrops: 0, rxErrors: 0, rxBatches: 1 };
  }
}

function until(condition: () => boolean, what: string, subscribe: (wake: () => void) => void, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    const check = () => { if (condition()) { clearTimeout(timer); resolve(); } };
    subscribe(check);
    check();
  });
}

describe('RPC types agree with the client', () => {
  it('every method and notification answers over the control socket with exactly the declared fields', async () => {
    const serverConfig = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n`, 's.ini');
    const server = new RelayServer({ config: serverConfig, log: pino({ level: 'silent' }), serverDeviceId: 'server' });
    const { port } = await server.start();
    const device = (deviceId: string) => {
      const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${server.joinString}\ndevice_id = ${deviceId}\n`, 'c.ini');
      return new RelayClient({
        config, log: pino({ level: 'silent' }), deviceId, hostname: deviceId, underlay: () => ['192.168.9.9'], device: new CountingDevice(),
        credentials: { join: config.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey }, retry: new RetryPolicy(new Backoff(50, 400)),
      });
    };
    const a = device('dev-a');
    const b = device('dev-b');
    const methods = clientMethods(a, { version: 'test', deviceId: 'dev-a', interfaceName: 'fake0', startedAt: Date.now() });
    assert.deepEqual(Object.keys(methods).sort(), Object.keys(RPC_SCHEMA.client.results).sort(), 'the client serves exactly the declared methods');
    const control = await ControlServer.listen(join(dir, 'client.sock'), methods);
    const ctl = await ControlClient.connect(control.path);
    const notifications: Array<{ method: string; params: { event?: string; deviceId?: string } }> = [];
    const wakes: Array<() => void> = [];
    ctl.onNotification((method, params) => { notifications.push({ method, params: params as never }); wakes.forEach((w) => w()); });
    const saw = (event: string, deviceId: string) =>
      until(() => notifications.some((n) => n.params.event === event && n.params.deviceId === deviceId), `${event} ${deviceId}`, (w) => wakes.push(w));
    const called = new Set<string>();
    const answer = async (method: string) => {
      const result = await ctl.call(method);
      called.add(method);
      assert.deepEqual(rpcProblems('client', { result: method }, result), [], `${method} returned ${JSON.stringify(result)}`);
      return result;
    };
    try {
      await answer('watch');
      a.start();
      await until(() => a.state === 'connected', 'dev-a connected', (w) => a.on('state', w));
      b.start();
      await saw('up', 'dev-b');
      await answer('status');
      assert.equal((await answer('peers') as unknown[]).length, 1, 'a peer listed, so that its fields are checked');
      await answer('stats');
      await b.stop();
      await saw('down', 'dev-b');
      for (const n of notifications) assert.deepEqual(rpcProblems('client', { notification: n.method }, n.params), [], JSON.stringify(n));
      assert.deepEqual([...called].sort(), Object.keys(RPC_SCHEMA.client.results).sort(), 'every declared method was called');
    } finally {
      ctl.close();
      await control.close();
      await Promise.all([a.stop(), b.stop()]);
      await server.stop();
    }
  });
});
