/**
 * What the client says, and how soon it tries again, when it cannot join: a real relay on loopback with
 * the wrong secret or identity, servers that are not mnedc relays, and no server at all.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { parseServerConfig, RelayServer } from '@mnedc/server';
import { Backoff, parseClientConfig, RelayClient, RetryPolicy } from '../src';
import { FakeDevice } from './fake-device';

interface Line { level: number; msg: string; failure?: string; delayMs?: number }

const dirs: string[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function relay(): Promise<{ server: RelayServer; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-failures-'));
  dirs.push(dir);
  const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n`, 's.ini');
  const server = new RelayServer({ config, log: pino({ level: 'silent' }), serverDeviceId: 'server' });
  const { port } = await server.start();
  cleanups.push(() => server.stop());
  return { server, port };
}

/** A TCP server that is not a relay: `behave` gets each connection. */
async function impostor(behave: (socket: Socket) => void): Promise<number> {
  const open = new Set<Socket>();
  const server: Server = createServer((socket) => {
    open.add(socket);
    socket.on('error', () => undefined).on('close', () => open.delete(socket));
    behave(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    open.forEach((socket) => socket.destroy());
  }));
  return (server.address() as AddressInfo).port;
}

/**
 * A client on `port` whose log lines are kept. Its schedules are the shipped ones scaled down (jitter at the
 * top of each range) so a test sees several attempts quickly: outage 10–40 ms, mistake 200 ms doubling.
 */
function client(port: number, join: string): { client: RelayClient; lines: Line[] } {
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (text: string) => { lines.push(JSON.parse(text) as Line); } });
  const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${join}\ndevice_id = dev-f\n`, 'c.ini');
  const retry = new RetryPolicy(new Backoff(10, 40, () => 0.999999), new Backoff(200, 300_000, () => 0.999999));
  const c = new RelayClient({ config, log, deviceId: 'dev-f', hostname: 'f', underlay: () => [], device: new FakeDevice(),
    credentials: { join: config.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey }, retry });
  c.start();
  cleanups.push(() => c.stop());
  return { client: c, lines };
}

/** Resolves once the client has failed `n` attempts (each ends in state 'waiting'). */
function attempts(c: RelayClient, n: number, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (c.counters.failedAttempts < n) return;
      clearTimeout(timer);
      c.off('state', check);
      resolve();
    };
    const timer = setTimeout(() => { c.off('state', check); reject(new Error(`${c.counters.failedAttempts} failed attempts, expected ${n}`)); }, timeoutMs);
    c.on('state', check);
    check();
  });
}

/** Lines at warning level or above: what an operator sees with journalctl -p warning. */
const loud = (lines: Line[]) => lines.filter((l) => l.level >= 40);

describe('a client that cannot join', () => {
  it('a wrong join secret: one error line per attempt, and waits that double (the long schedule)', async () => {
    const { server, port } = await relay();
    const wrong = `${server.joinString.split('.').slice(0, 2).join('.')}.${Buffer.alloc(32, 9).toString('base64url')}`;
    const { client: c, lines } = client(port, wrong);
    await attempts(c, 3);
    const told = loud(lines).slice(0, 3);
    assert.deepEqual(loud(lines).length, 3, `one line per attempt: ${JSON.stringify(loud(lines))}`);
    for (const line of told) {
      assert.equal(line.level, 50);
      assert.match(line.msg, /^Server 127\.0\.0\.1:\d+ rejected this device: the join secret is wrong or was rotated; .*; retrying in \d+ ms$/);
      assert.equal(line.failure, 'mistake');
    }
    assert.deepEqual(told.map((l) => l.delayMs), [200, 400, 800]);
    assert.match(c.lastError, /^rejected \(auth\): the join secret is wrong/);
    assert.equal(c.counters.reconnects, 0, 'no session, so no reconnection');
  });

  it('another server\'s identity: one error line per attempt, nothing sent, waits that double', async () => {
    const real = await relay();
    const other = await relay();
    const { client: c, lines } = client(other.port, real.server.joinString);
    await attempts(c, 2);
    assert.equal(loud(lines).length, 2, JSON.stringify(loud(lines)));
    for (const line of loud(lines)) {
      assert.equal(line.level, 50);
      assert.match(line.msg, /^Refusing 127\.0\.0\.1:\d+: server identity changed: it presented SHA256:\S+ but the join string pins SHA256:\S+\. .*; retrying in \d+ ms$/);
    }
    assert.deepEqual(loud(lines).map((l) => l.delayMs), [200, 400]);
    assert.equal(other.server.pool.size, 0);
  });

  for (const [what, behave] of [
    ['a web server', (s: Socket) => s.once('data', () => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'))],
    ['an SSH server', (s: Socket) => s.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')],
  ] as const) {
    it(`${what}: one error line naming it and saying it does not speak TLS, no OpenSSL text; the long schedule`, async () => {
      const port = await impostor(behave);
      const { client: c, lines } = client(port, (await relay()).server.joinString);
      await attempts(c, 2);
      assert.equal(loud(lines).length, 2, JSON.stringify(loud(lines)));
      const [line] = loud(lines);
      assert.equal(line!.msg, `Cannot join 127.0.0.1:${port}: it does not speak TLS (a web, SSH or other server?); is it an mnedc relay? ` +
        'Check [client] server; retrying in 200 ms');
      assert.equal(line!.level, 50);
      assert.equal(c.lastError, 'it does not speak TLS (a web, SSH or other server?); is it an mnedc relay? Check [client] server');
    });
  }

  it('no relay listening: a warning per attempt, "connection refused", short waits (an outage, not a mistake)', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const { client: c, lines } = client(port, (await relay()).server.joinString);
    await attempts(c, 4);
    assert.deepEqual(loud(lines).map((l) => l.delayMs).slice(0, 4), [10, 20, 40, 40], 'the outage schedule, capped');
    for (const line of loud(lines)) {
      assert.equal(line.level, 40);
      assert.equal(line.failure, 'outage');
      assert.match(line.msg, /^Cannot join 127\.0\.0\.1:\d+: connection refused \(nothing listens there: the relay is down or restarting\); retrying in \d+ ms$/);
    }
  });

  it('a server that closes at once (as a relay beyond its handshake limits does): an outage, short waits', async () => {
    const port = await impostor((s) => s.destroy());
    const { client: c, lines } = client(port, (await relay()).server.joinString);
    await attempts(c, 4);
    const waits = loud(lines).map((l) => l.delayMs);
    assert.deepEqual(waits.slice(0, 4), [10, 20, 40, 40], 'the outage schedule, capped');
    for (const line of loud(lines)) {
      assert.equal(line.level, 40);
      assert.equal(line.failure, 'outage');
      assert.match(line.msg, /^Cannot join 127\.0\.0\.1:\d+: it closed the connection before TLS was up/);
    }
  });
});
