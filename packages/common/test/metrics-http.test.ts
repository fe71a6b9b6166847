import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { request } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { EXPOSITION_CONTENT_TYPE, MetricsServer, type MetricsServerOptions } from '../src';

const servers: MetricsServer[] = [];
const sockets: Socket[] = [];
after(async () => {
  sockets.forEach((s) => s.destroy());
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(render: () => string | Promise<string>, options: MetricsServerOptions = {}): Promise<MetricsServer> {
  const server = await MetricsServer.listen({ host: '127.0.0.1', port: 0 }, render, options);
  servers.push(server);
  return server;
}

function fetchText(server: MetricsServer, method: string, path: string, body?: string): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: server.address.port, method, path, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { text += chunk; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A raw connection that sends `head` and resolves with what the server answered once it closed. */
async function rawConnection(server: MetricsServer, head = ''): Promise<{ socket: Socket; closed: Promise<string> }> {
  const socket = connect(server.address.port, '127.0.0.1');
  sockets.push(socket);
  await once(socket, 'connect');
  let answer = '';
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString(); });
  socket.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(answer)));
  if (head) socket.write(head);
  return { socket, closed };
}

describe('MetricsServer', () => {
  it('answers GET /metrics with the exposition, anything else with 404 or 405, and closes each connection', async () => {
    let calls = 0;
    const server = await serve(() => `# TYPE a_total counter\na_total ${++calls}\n`);
    const got = await fetchText(server, 'GET', '/metrics');
    assert.deepEqual([got.status, got.headers['content-type'], got.headers.connection, got.text],
      [200, EXPOSITION_CONTENT_TYPE, 'close', '# TYPE a_total counter\na_total 1\n']);
    assert.equal((await fetchText(server, 'GET', '/metrics?x=1')).text, '# TYPE a_total counter\na_total 2\n');
    assert.equal((await fetchText(server, 'GET', '/')).status, 404);
    assert.equal((await fetchText(server, 'GET', '/metrics/../etc')).status, 404);
    const post = await fetchText(server, 'POST', '/metrics', 'x'.repeat(1000));
    assert.deepEqual([post.status, post.headers.allow], [405, 'GET, HEAD']);
    const head = await fetchText(server, 'HEAD', '/metrics');
    assert.deepEqual([head.status, head.text], [200, '']);
    assert.equal(calls, 3, 'only GET and HEAD of /metrics read the counters');
  });

  it('answers 500 when the counters cannot be read, reports it, and keeps serving', async () => {
    const reported: string[] = [];
    let fail = true;
    const server = await serve(() => {
      if (fail) throw new Error('stats broke');
      return 'a 1\n';
    }, { onError: (message) => reported.push(message) });
    assert.equal((await fetchText(server, 'GET', '/metrics')).status, 500);
    assert.deepEqual(reported, ['Metrics request failed: stats broke']);
    fail = false;
    assert.equal((await fetchText(server, 'GET', '/metrics')).text, 'a 1\n');
  });

  it('a request body is never read: a huge POST gets its 405 and the connection closed', { timeout: 20_000 }, async () => {
    const server = await serve(() => 'a 1\n');
    const started = Date.now();
    const { socket, closed } = await rawConnection(server, `POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: ${1 << 30}\r\n\r\n`);
    // Keeps sending until the server closes; a server reading the body would wait for all of 1 GiB.
    const chunk = Buffer.alloc(64 * 1024);
    const pump = setInterval(() => { if (!socket.destroyed) socket.write(chunk); }, 5);
    const answer = await closed;
    clearInterval(pump);
    assert.match(answer, /^HTTP\/1\.1 405 /);
    // At once, not when the request timeout (10 s) ends a connection kept alive to drain the body.
    assert.ok(Date.now() - started < 5_000, `closed after ${Date.now() - started} ms`);
  });

  it('holds at most maxConnections open; the next is closed at once, and a slot freed serves again', async () => {
    const server = await serve(() => 'a 1\n', { maxConnections: 2 });
    const idle = [await rawConnection(server), await rawConnection(server)];
    const third = await rawConnection(server, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(await third.closed, '', 'the connection over the cap got no answer');
    idle[0]!.socket.destroy();
    await idle[0]!.closed;
    // The server learns of the close asynchronously: retry until the freed slot is seen.
    let answer = '';
    for (let i = 0; i < 50 && !answer; i++) answer = await (await rawConnection(server, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')).closed;
    assert.match(answer, /^HTTP\/1\.1 200 /);
  });

  it('closes a connection that sends nothing, and one that sends its head too slowly', { timeout: 20_000 }, async () => {
    const server = await serve(() => 'a 1\n', { idleTimeoutMs: 300, headersTimeoutMs: 400 });
    const started = Date.now();
    const silent = await rawConnection(server);
    await silent.closed;
    assert.ok(Date.now() - started < 5_000, 'the silent connection was closed');
    const slow = await rawConnection(server, 'GET /metrics HTTP/1.1\r\n');
    // A header byte every 100 ms keeps the idle timer from firing: only the headers timeout ends it.
    const drip = setInterval(() => { if (!slow.socket.destroyed) slow.socket.write('X'); }, 100);
    const slowStart = Date.now();
    const answer = await slow.closed;
    clearInterval(drip);
    assert.ok(Date.now() - slowStart < 5_000, `the slow head was cut after ${Date.now() - slowStart} ms`);
    assert.doesNotMatch(answer, / 200 /);
  });

  it('rejects with the listen error when the address is taken', async () => {
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as { port: number }).port;
    await assert.rejects(MetricsServer.listen({ host: '127.0.0.1', port }, () => ''), { code: 'EADDRINUSE' });
    taken.close();
  });
});
