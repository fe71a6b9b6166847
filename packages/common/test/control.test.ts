import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { linkSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ControlConnectionClosed, ControlServer, ControlSocketInUse, MAX_REQUEST_LINE, NoDaemonError,
  RPC_ERRORS, RpcError, stringParam, type CallContext, type RpcMethods,
} from '../src/control';
import { ControlClient } from '../src/control-client';

const TIMEOUT = { timeout: 5000 };
let dir: string;
let counter = 0;
const socketPath = () => join(dir, `s${++counter}.sock`);

before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedc-control-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** A connection that speaks raw lines, for what ControlClient never sends. */
function rawConnection(path: string): Promise<{ socket: Socket; send(line: string | Buffer): void; next(): Promise<any>; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let buffered = '';
    const lines: string[] = [];
    const waiting: Array<(line: string) => void> = [];
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      buffered += text;
      let end;
      while ((end = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        const waiter = waiting.shift();
        if (waiter) waiter(line);
        else lines.push(line);
      }
    });
    // The server may reset a connection it closes with unread input still queued.
    socket.on('error', () => undefined);
    const ended = new Promise<void>((done) => socket.on('close', () => done()));
    socket.once('connect', () => resolve({
      socket,
      send: (line) => socket.write(line),
      next: () => new Promise((done) => {
        const line = lines.shift();
        if (line !== undefined) done(JSON.parse(line));
        else waiting.push((l) => done(JSON.parse(l)));
      }),
      ended,
    }));
    socket.once('error', reject);
  });
}

const methods: RpcMethods = {
  echo: (params) => params,
  nothing: () => undefined,
  missing: () => { throw new RpcError(RPC_ERRORS.notFound, 'device x is not connected', { deviceId: 'x' }); },
  broken: () => { throw new Error('disk on fire'); },
  brokenAsync: async () => { throw new Error('async fire'); },
  big: () => ({ n: BigInt(1) }),
};

describe('ControlServer and ControlClient', () => {
  test('a call round-trips params and result', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const client = await ControlClient.connect(server.path);
    try {
      assert.deepEqual(await client.call('echo', { a: [1, 'b'] }), { a: [1, 'b'] });
      assert.deepEqual(await client.call('echo', ['x']), ['x']);
      assert.equal(await client.call('nothing'), null);
      assert.equal(server.connections, 1);
    } finally {
      client.close();
      await server.close();
    }
  });

  test('RpcError code, message and data reach the caller', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const client = await ControlClient.connect(server.path);
    try {
      await assert.rejects(client.call('missing'), (err: unknown) => {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, -32001);
        assert.equal(err.message, 'device x is not connected');
        assert.deepEqual(err.data, { deviceId: 'x' });
        return true;
      });
    } finally {
      client.close();
      await server.close();
    }
  });

  test('a method throwing a plain Error gives -32603 and the server keeps serving', TIMEOUT, async () => {
    const reported: unknown[] = [];
    const server = await ControlServer.listen(socketPath(), methods, { onError: (_m, err) => reported.push(err) });
    const client = await ControlClient.connect(server.path);
    try {
      await assert.rejects(client.call('broken'), { name: 'RpcError', code: -32603, message: 'disk on fire' });
      await assert.rejects(client.call('brokenAsync'), { code: -32603, message: 'async fire' });
      await assert.rejects(client.call('big'), { code: -32603, message: /cannot be encoded as JSON/ });
      assert.deepEqual(await client.call('echo', { still: 'here' }), { still: 'here' });
      const other = await ControlClient.connect(server.path);
      assert.deepEqual(await other.call('echo', [1]), [1]);
      other.close();
      assert.equal(reported.length, 3);
    } finally {
      client.close();
      await server.close();
    }
  });

  test('an unknown method gives -32601', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const client = await ControlClient.connect(server.path);
    try {
      await assert.rejects(client.call('nope'), { code: -32601 });
    } finally {
      client.close();
      await server.close();
    }
  });

  test('a malformed line gives -32700 with id null and the connection keeps working', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const raw = await rawConnection(server.path);
    try {
      raw.send('{"jsonrpc":"2.0", oops\n');
      const error = await raw.next();
      assert.equal(error.id, null);
      assert.equal(error.error.code, -32700);
      raw.send('\n{"jsonrpc":"2.0","id":7,"method":"echo","params":{"ok":true}}\r\n');
      assert.deepEqual(await raw.next(), { jsonrpc: '2.0', id: 7, result: { ok: true } });
    } finally {
      raw.socket.destroy();
      await server.close();
    }
  });

  test('batches and non-object requests are rejected with -32600', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const raw = await rawConnection(server.path);
    try {
      raw.send('[{"jsonrpc":"2.0","id":1,"method":"echo"}]\n');
      assert.equal((await raw.next()).error.code, -32600);
      raw.send('42\n');
      assert.equal((await raw.next()).error.code, -32600);
      raw.send('{"jsonrpc":"2.0","id":2,"method":"echo","params":[2]}\n');
      assert.deepEqual((await raw.next()).result, [2]);
    } finally {
      raw.socket.destroy();
      await server.close();
    }
  });

  test('a line over 1 MiB gets an error and the connection is closed', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    const raw = await rawConnection(server.path);
    try {
      raw.send(Buffer.alloc(MAX_REQUEST_LINE + 1, 0x61));
      const error = await raw.next();
      assert.equal(error.id, null);
      assert.equal(error.error.code, -32600);
      await raw.ended;
      const client = await ControlClient.connect(server.path);
      assert.deepEqual(await client.call('echo', [1]), [1]);
      client.close();
    } finally {
      raw.socket.destroy();
      await server.close();
    }
  });

  test('notifications reach the caller and onClose fires when it disconnects', TIMEOUT, async () => {
    let closedCallback!: () => void;
    const unsubscribed = new Promise<void>((resolve) => { closedCallback = resolve; });
    let context!: CallContext;
    const server = await ControlServer.listen(socketPath(), {
      watch: (_params, ctx) => {
        context = ctx;
        ctx.onClose(closedCallback);
        setImmediate(() => ctx.notify('peer', { event: 'up', deviceId: 'b' }));
        return { watching: true };
      },
    });
    const client = await ControlClient.connect(server.path);
    try {
      const received = new Promise<[string, unknown]>((resolve) => client.onNotification((m, p) => resolve([m, p])));
      assert.deepEqual(await client.call('watch'), { watching: true });
      assert.deepEqual(await received, ['peer', { event: 'up', deviceId: 'b' }]);
      assert.deepEqual(context.peer, {});
      client.close();
      await unsubscribed;
      await client.closed;
      context.notify('peer', { late: true });
      assert.equal(server.connections, 0);
    } finally {
      await server.close();
    }
  });

  test('onClose registered after the caller left still fires, so no subscription leaks', TIMEOUT, async () => {
    let proceed!: () => void;
    const gate = new Promise<void>((resolve) => { proceed = resolve; });
    let started!: () => void;
    const called = new Promise<void>((resolve) => { started = resolve; });
    let unsubscribed!: () => void;
    const dropped = new Promise<void>((resolve) => { unsubscribed = resolve; });
    let left!: () => void;
    const serverSawClose = new Promise<void>((resolve) => { left = resolve; });
    const server = await ControlServer.listen(socketPath(), {
      slowWatch: async (_params, ctx) => {
        ctx.onClose(left);
        started();
        await gate;
        ctx.onClose(unsubscribed);
        return { watching: true };
      },
    });
    try {
      const client = await ControlClient.connect(server.path);
      client.call('slowWatch').catch(() => undefined);
      await called;
      client.close();
      await serverSawClose;
      proceed();
      await dropped;
    } finally {
      await server.close();
    }
  });

  test('the client learns when the daemon goes away, and pending calls fail', TIMEOUT, async () => {
    let release!: () => void;
    let started!: () => void;
    const called = new Promise<void>((resolve) => { started = resolve; });
    const server = await ControlServer.listen(socketPath(), {
      hang: () => {
        started();
        return new Promise<void>((resolve) => { release = resolve; });
      },
    });
    const client = await ControlClient.connect(server.path);
    const pending = client.call('hang');
    await called;
    const failed = assert.rejects(pending, ControlConnectionClosed);
    await server.close();
    await client.closed;
    await failed;
    await assert.rejects(client.call('hang'), ControlConnectionClosed);
    release();
  });

  test('close removes the socket file', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    assert.ok(existsSync(server.path));
    await server.close();
    await server.close();
    assert.ok(!existsSync(server.path));
  });

  test('a stale socket file is replaced', TIMEOUT, async () => {
    const first = await ControlServer.listen(socketPath(), methods);
    // A hard link keeps the socket inode after its listener is gone: what a crashed daemon leaves behind.
    const stale = socketPath();
    linkSync(first.path, stale);
    await first.close();
    await assert.rejects(ControlClient.connect(stale), { name: 'NoDaemonError', reason: 'connection refused' });
    const server = await ControlServer.listen(stale, methods);
    const client = await ControlClient.connect(stale);
    try {
      assert.deepEqual(await client.call('echo', [3]), [3]);
    } finally {
      client.close();
      await server.close();
    }
  });

  test('a second listen on a live path rejects with ControlSocketInUse', TIMEOUT, async () => {
    const server = await ControlServer.listen(socketPath(), methods);
    try {
      await assert.rejects(ControlServer.listen(server.path, methods), (err: unknown) => {
        assert.ok(err instanceof ControlSocketInUse);
        assert.equal(err.message, `another daemon is already serving ${server.path}; stop it first`);
        return true;
      });
      const client = await ControlClient.connect(server.path);
      assert.deepEqual(await client.call('echo', [4]), [4]);
      client.close();
    } finally {
      await server.close();
    }
  });

  test('a regular file at the path is left alone', TIMEOUT, async () => {
    const path = socketPath();
    writeFileSync(path, 'precious');
    await assert.rejects(ControlServer.listen(path, methods), /exists and is not a socket/);
    assert.equal(readFileSync(path, 'utf8'), 'precious');
  });

  test('the parent directory is created and the mode is applied despite the umask', TIMEOUT, async () => {
    const previous = process.umask(0o022);
    try {
      const path = join(dir, 'run', 'mnedc', 'server.sock');
      const server = await ControlServer.listen(path, methods);
      assert.equal(statSync(path).mode & 0o777, 0o660);
      assert.equal(statSync(join(dir, 'run', 'mnedc')).mode & 0o777, 0o755);
      await server.close();
      const strict = await ControlServer.listen(path, methods, { mode: 0o600 });
      assert.equal(statSync(path).mode & 0o777, 0o600);
      await strict.close();
    } finally {
      process.umask(previous);
    }
  });

  test('the socket is given to the group when it exists', { ...TIMEOUT, skip: process.getuid?.() !== 0 && 'needs root to chgrp' }, async () => {
    const line = readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.split(':')[2] !== String(process.getgid?.()) && /^[^:]+:[^:]*:\d+:/.test(l));
    if (!line) return;
    const [name, , gid] = line.split(':');
    const server = await ControlServer.listen(socketPath(), methods, { group: name });
    try {
      assert.equal(statSync(server.path).gid, Number(gid));
    } finally {
      await server.close();
    }
    const plain = await ControlServer.listen(socketPath(), methods, { group: 'no-such-group-mnedc-test' });
    assert.equal(statSync(plain.path).gid, process.getgid?.());
    await plain.close();
  });

  test('connecting to a missing path rejects with NoDaemonError naming the path', TIMEOUT, async () => {
    const path = join(dir, 'absent.sock');
    await assert.rejects(ControlClient.connect(path), (err: unknown) => {
      assert.ok(err instanceof NoDaemonError);
      assert.equal(err.path, path);
      assert.equal(err.reason, 'no such socket');
      assert.ok(err.message.includes(path));
      return true;
    });
  });
});

describe('stringParam', () => {
  test('accepts a named or positional string', () => {
    assert.equal(stringParam({ deviceId: 'a' }, 'deviceId'), 'a');
    assert.equal(stringParam(['b'], 'deviceId'), 'b');
    assert.equal(stringParam(['b', 'c'], 'other', 1), 'c');
  });

  test('rejects anything else with -32602', () => {
    for (const params of [undefined, null, {}, [], [1], { deviceId: 5 }, 'a', Object.create({ deviceId: 'inherited' })]) {
      assert.throws(() => stringParam(params, 'deviceId'),
        { name: 'RpcError', code: -32602, message: 'missing string parameter "deviceId"' });
    }
  });
});
