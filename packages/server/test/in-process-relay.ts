import type { KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach } from 'node:test';
import pino from 'pino';
import { WireClient } from '@mnedc/lab';
import { parseServerConfig, RelayServer } from '../src';

/**
 * RelayServers in the test process on loopback, and the devices that talk to them: all stopped after each
 * test, their state directories removed after the file. Call once at the top of a test file.
 */
export function inProcessRelays(prefix = 'mnedc-relay-') {
  const stateDirs: string[] = [];
  const servers: RelayServer[] = [];
  const clients: WireClient[] = [];
  let joinString = '';
  afterEach(async () => {
    clients.splice(0).forEach((c) => c.close());
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });
  after(() => stateDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  return {
    /** The join string of the relay started last. */
    get joinString(): string {
      return joinString;
    },
    /** A relay with `extra` appended to its [server] section (or further sections), on a state dir of its own unless given. */
    async start(extra = '', stateDir?: string): Promise<{ server: RelayServer; port: number; stateDir: string }> {
      const dir = stateDir ?? this.stateDir();
      const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n${extra}`, 'test.ini');
      const server = new RelayServer({ config, log: pino({ level: 'silent' }), serverDeviceId: 'server-test' });
      servers.push(server);
      const address = await server.start();
      joinString = server.joinString;
      return { server, port: address.port, stateDir: dir };
    },
    /** A device joining the relay started last, closed after the test. */
    async join(port: number, deviceId: string, extra: Record<string, unknown> = {}, key?: KeyObject): Promise<WireClient> {
      return this.keep(await WireClient.join(port, joinString, deviceId, extra, key));
    },
    /** A state directory removed after the file, for a test to prepare before a relay starts on it. */
    stateDir(): string {
      const dir = mkdtempSync(join(tmpdir(), prefix));
      stateDirs.push(dir);
      return dir;
    },
    /** Closes `client` after the test too. */
    keep(client: WireClient): WireClient {
      clients.push(client);
      return client;
    },
  };
}
