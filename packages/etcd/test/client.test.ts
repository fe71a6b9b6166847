/**
 * The client against real etcd members (Debian's etcd, on loopback, temporary data directories): KV,
 * create-if-absent transactions under contention, leases, paging, failover to another member, auth, and
 * watches that survive a silent member and compaction.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { EtcdClient, EtcdCluster, EtcdError, GRPC, PrefixWatch, type KeyValue, type WatchEvent } from '../src';

/** Polls `check` every 50 ms until it holds; throws with `what` after `ms`. */
async function until(check: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A watch's view of its prefix, rebuilt from resets and events as a relay's routes would be. */
function mirror(client: EtcdClient, prefix: string, options = {}) {
  const state = new Map<string, string>();
  const log: string[] = [];
  const watch = new PrefixWatch(client, prefix, {
    reset(kvs: KeyValue[]) {
      state.clear();
      for (const kv of kvs) state.set(kv.key, kv.value);
      log.push(`reset ${kvs.length}`);
    },
    events(events: WatchEvent[]) {
      for (const e of events) {
        if (e.type === 'put') state.set(e.kv.key, e.kv.value);
        else state.delete(e.kv.key);
      }
    },
  }, options);
  return { state, log, watch };
}

describe('etcd client, one member', () => {
  let cluster: EtcdCluster;
  let client: EtcdClient;
  before(async () => {
    cluster = await EtcdCluster.start();
    client = new EtcdClient({ endpoints: cluster.endpoints });
  });
  after(async () => {
    client?.close();
    await cluster?.stop();
  });

  it('puts, gets, deletes, and lists a prefix in pages at one revision', async () => {
    for (let i = 0; i < 25; i++) await client.put(`/t/list/${String(i).padStart(2, '0')}`, `v${i}`);
    await client.put('/t/listx', 'outside the prefix');
    const { kvs, revision } = await client.list('/t/list/', 4);
    assert.equal(kvs.length, 25);
    assert.deepEqual(kvs.map((kv) => kv.value), Array.from({ length: 25 }, (_, i) => `v${i}`));
    assert.ok(revision >= 26);
    assert.equal((await client.get('/t/list/03'))?.value, 'v3');
    assert.equal(await client.delete('/t/list/', { prefix: true }), 25);
    assert.equal(await client.get('/t/list/03'), undefined);
    assert.equal((await client.get('/t/listx'))?.value, 'outside the prefix');
  });

  it('create-if-absent: of 20 racing allocations of one key exactly one wins, the others read the winner', async () => {
    const other = new EtcdClient({ endpoints: cluster.endpoints });
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? client : other).txn(
        [{ key: '/t/ip/10.0.0.7', target: 'CREATE', result: 'EQUAL', value: 0 }],
        [{ put: { key: '/t/ip/10.0.0.7', value: `dev-${i}` } }],
        [{ get: { key: '/t/ip/10.0.0.7' } }],
      )));
      const winners = results.map((r, i) => (r.succeeded ? i : -1)).filter((i) => i >= 0);
      assert.equal(winners.length, 1);
      for (const r of results.filter((x) => !x.succeeded)) {
        const got = r.results[0]!;
        assert.ok('get' in got);
        assert.equal(got.get.kvs[0]!.value, `dev-${winners[0]}`);
      }
    } finally {
      other.close();
    }
  });

  it('leases: keys live while kept alive and go with the lease; a gone lease keeps alive to 0', async () => {
    const lease = await client.grantLease(30);
    assert.equal(lease.ttl, 30);
    await client.put('/t/lease/a', 'x', { lease: lease.id });
    assert.equal((await client.get('/t/lease/a'))?.lease, lease.id);
    assert.ok((await client.keepAlive(lease.id)) > 0);
    await client.revokeLease(lease.id);
    assert.equal(await client.get('/t/lease/a'), undefined);
    assert.equal(await client.keepAlive(lease.id), 0);
    await client.revokeLease(lease.id); // revoking twice is no error
    await assert.rejects(client.put('/t/lease/b', 'x', { lease: lease.id }), (e: Error) => e instanceof EtcdError && e.code === GRPC.NOT_FOUND);
  });

  it('a watch sees the prefix, then every change once, in order', async () => {
    await client.put('/t/w/a', '1');
    const m = mirror(client, '/t/w/');
    try {
      await until(() => m.log.length > 0, 'the first list');
      for (let i = 0; i < 30; i++) await client.put(`/t/w/k${i % 5}`, String(i));
      await client.delete('/t/w/a');
      await until(() => m.state.get('/t/w/k4') === '29' && !m.state.has('/t/w/a'), 'the changes');
      assert.deepEqual(Object.fromEntries(m.state), { '/t/w/k0': '25', '/t/w/k1': '26', '/t/w/k2': '27', '/t/w/k3': '28', '/t/w/k4': '29' });
      assert.deepEqual(m.log, ['reset 1']);
    } finally {
      m.watch.close();
    }
  });

  it('a quiet stream is reopened from the last revision, losing nothing', async () => {
    const m = mirror(client, '/t/q/', { quietMs: 300 });
    try {
      await until(() => m.log.length > 0, 'the first list');
      await until(() => m.watch.streams >= 3, 'two reopenings');
      await client.put('/t/q/x', 'after the reopenings');
      await until(() => m.state.get('/t/q/x') === 'after the reopenings', 'the put');
      assert.deepEqual(m.log, ['reset 0'], 'no re-list for a reopening');
    } finally {
      m.watch.close();
    }
  });

  it('with auth on: fetches a token, fetches another when it is refused, and says what is wrong without one', async () => {
    await client.call('/v3/auth/user/add', { name: 'root', password: 'root-pw' });
    await client.call('/v3/auth/user/grant', { user: 'root', role: 'root' });
    await client.call('/v3/auth/enable', {});
    const authed = new EtcdClient({ endpoints: cluster.endpoints, auth: { user: 'root', password: 'root-pw' } });
    const wrong = new EtcdClient({ endpoints: cluster.endpoints, auth: { user: 'root', password: 'nope' } });
    try {
      await authed.put('/t/auth', 'yes');
      assert.equal((await authed.get('/t/auth'))?.value, 'yes');
      await assert.rejects(client.get('/t/auth'), /user name is empty/);
      await assert.rejects(wrong.get('/t/auth'), /authentication failed/);
      const m = mirror(authed, '/t/auth');
      try {
        await until(() => m.state.get('/t/auth') === 'yes', 'the watch with a token');
        // A token the members no longer know, as after a restart: the client fetches a new one.
        (authed as unknown as { token: string }).token = 'stale.1';
        await authed.put('/t/auth', 'again');
        await until(() => m.state.get('/t/auth') === 'again', 'the change');
      } finally {
        m.watch.close();
      }
    } finally {
      await authed.call('/v3/auth/disable', {});
      authed.close();
      wrong.close();
    }
  });
});

describe('etcd client, three members', () => {
  let cluster: EtcdCluster;
  before(async () => {
    cluster = await EtcdCluster.start({ members: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  it('moves to another member when its member is killed, for requests and for a watch', async () => {
    const client = new EtcdClient({ endpoints: cluster.endpoints, timeoutMs: 2_000 });
    const m = mirror(client, '/f/');
    try {
      await client.put('/f/before', '1');
      await until(() => m.state.get('/f/before') === '1', 'the watch');
      const first = client.endpoint;
      const victim = cluster.members.find((member) => member.clientUrl === first)!;
      await victim.kill();
      await client.put('/f/after', '2');
      assert.notEqual(client.endpoint, first);
      await until(() => m.state.get('/f/after') === '2', 'the watch on another member');
      victim.start('existing');
      await victim.ready();
    } finally {
      m.watch.close();
      client.close();
    }
  });

  it('a watch whose member goes silent is reopened elsewhere, and re-lists when its revision was compacted meanwhile', async () => {
    const client = new EtcdClient({ endpoints: cluster.endpoints, timeoutMs: 1_000 });
    const writer = new EtcdClient({ endpoints: [...cluster.endpoints].reverse() });
    const m = mirror(client, '/c/', { quietMs: 1_000 });
    try {
      await writer.put('/c/k', '0');
      await until(() => m.state.get('/c/k') === '0', 'the watch');
      const silent = cluster.members.find((member) => member.clientUrl === client.endpoint)!;
      assert.notEqual(writer.endpoint, silent.clientUrl);
      // SIGSTOP: the member neither answers nor closes anything, as a hung machine would.
      silent.signal('SIGSTOP');
      try {
        for (let i = 1; i <= 20; i++) await writer.put('/c/k', String(i));
        await writer.put('/c/gone', 'x');
        await writer.delete('/c/gone');
        const { revision } = await writer.status();
        await writer.compact(revision);
        await until(() => m.state.get('/c/k') === '20', 'the watch back, on another member', 20_000);
        assert.equal(m.state.has('/c/gone'), false);
        assert.ok(m.watch.lists >= 2, `re-listed after the compaction (${m.log.join(', ')})`);
      } finally {
        silent.signal('SIGCONT');
      }
    } finally {
      m.watch.close();
      client.close();
      writer.close();
    }
  });
});

/** A CA, a certificate for 127.0.0.1 (server and client use) and a client certificate, made with openssl. */
function makeCertificates(dir: string): { ca: string; server: { cert: string; key: string }; client: { cert: string; key: string } } {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=test etcd CA');
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  for (const name of ['server', 'client']) {
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', `${name}.crt`);
  }
  const at = (file: string) => join(dir, file);
  return { ca: at('ca.crt'), server: { cert: at('server.crt'), key: at('server.key') }, client: { cert: at('client.crt'), key: at('client.key') } };
}

describe('etcd client over TLS', () => {
  let dir: string;
  let cluster: EtcdCluster;
  let files: ReturnType<typeof makeCertificates>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mnedc-etcd-tls-'));
    files = makeCertificates(dir);
    cluster = await EtcdCluster.start({ tls: { certFile: files.server.cert, keyFile: files.server.key, caFile: files.ca } });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('talks https with the CA and a client certificate, and says what is wrong without them', async () => {
    assert.match(cluster.endpoints[0]!, /^https:/);
    const tls = { ca: readFileSync(files.ca), cert: readFileSync(files.client.cert), key: readFileSync(files.client.key) };
    const good = new EtcdClient({ endpoints: cluster.endpoints, tls });
    const noClientCert = new EtcdClient({ endpoints: cluster.endpoints, tls: { ca: tls.ca }, timeoutMs: 1_000 });
    const noCa = new EtcdClient({ endpoints: cluster.endpoints, timeoutMs: 1_000 });
    try {
      await good.put('/tls/k', 'v');
      assert.equal((await good.get('/tls/k'))?.value, 'v');
      const m = mirror(good, '/tls/');
      try {
        await until(() => m.state.get('/tls/k') === 'v', 'a watch over TLS');
      } finally {
        m.watch.close();
      }
      await assert.rejects(noCa.get('/tls/k'), /etcd unavailable: .*certificate/i);
      await assert.rejects(noClientCert.get('/tls/k'), /etcd unavailable/);
    } finally {
      good.close();
      noClientCert.close();
      noCa.close();
    }
  });
});

describe('etcd client against a member that misbehaves', () => {
  /** An HTTP server on loopback answering every request with `answer`. */
  async function fake(answer: (path: string, respond: import('node:http').ServerResponse) => void): Promise<{ url: string; server: Server; hits: () => number }> {
    let hits = 0;
    const server = createHttpServer((request, response) => {
      hits++;
      request.resume();
      request.on('end', () => answer(request.url ?? '', response));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, hits: () => hits };
  }

  it('gives up on an answer that trickles in, at the deadline, not when the member stops sending', async () => {
    const trickle = await fake((_path, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => response.write(' '), 100);
      response.on('close', () => clearInterval(timer));
    });
    const client = new EtcdClient({ endpoints: [trickle.url], timeoutMs: 500 });
    const started = Date.now();
    try {
      await assert.rejects(client.get('/k'), /no whole answer in 500 ms/);
      assert.ok(Date.now() - started < 2_000);
    } finally {
      client.close();
      trickle.server.closeAllConnections();
      trickle.server.close();
    }
  });

  it('refuses a listing that does not move on, and backs off from watch streams that end at once', async () => {
    const looping = await fake((path, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      if (path === '/v3/kv/range') response.end(JSON.stringify({ header: { revision: '5' }, kvs: [{ key: Buffer.from('/p/a').toString('base64') }], more: true }));
      else response.end();
    });
    const client = new EtcdClient({ endpoints: [looping.url], timeoutMs: 500 });
    try {
      // /p/a then /p/a again: the second page starts where the first did.
      const pages = await fake((_path, response) => response.end(JSON.stringify({ header: { revision: '5' }, kvs: [{ key: Buffer.from('/p/').toString('base64') }], more: true })));
      const stuck = new EtcdClient({ endpoints: [pages.url] });
      await assert.rejects(stuck.list('/p/', 1), /does not move on/);
      stuck.close();
      pages.server.close();
      const states: boolean[] = [];
      const watch = new PrefixWatch(client, '/w/', { reset: () => {}, events: () => {}, state: (live) => states.push(live) }, { minRetryMs: 100, maxRetryMs: 400 });
      const before = looping.hits();
      await new Promise((r) => setTimeout(r, 1_500));
      watch.close();
      assert.ok(watch.streams < 12, `${watch.streams} streams in 1.5 s: backing off`);
      assert.ok(looping.hits() - before < 30);
      assert.ok(states.includes(false), 'reported not live');
    } finally {
      client.close();
      looping.server.close();
    }
  });
});
