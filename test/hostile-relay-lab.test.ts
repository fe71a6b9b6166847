/**
 * Issue 12 findings 5 and 12: the client against a relay that holds the real identity but lies. The real
 * mnedcd-client runs in c (two NATs deep); a scripted relay (packages/lab/src/fake-relay.ts) in srv.
 */
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { Daemon, Lab, namespacesWithPrefix, Overlay, REPO_ROOT, SERVER_PORT } from '@mnedc/lab';
import { skipUnlessRoot } from './lab-suite';

const FAKE_RELAY = path.join(REPO_ROOT, 'packages/lab/dist/src/fake-relay.js');
const SOUND = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 2000, deadAfterMs: 6000, capabilities: [] };

describe('a client facing a lying relay', { skip: skipUnlessRoot, timeout: 120_000 }, () => {
  let lab: Lab;
  let overlay: Overlay;
  const running: Daemon[] = [];

  before(async () => {
    lab = await Lab.create();
    overlay = new Overlay(lab);
    // The real relay's identity and join string, so the client's pin matches whatever the fake relay says.
    await overlay.printJoin();
  });
  afterEach(async () => {
    // Whatever a test left running (it failed half-way) must not hold the port for the next one.
    for (const d of running.splice(0)) {
      if (d.exited) continue;
      d.signal('SIGKILL');
      await d.waitExit();
    }
  });
  after(async () => {
    await lab?.destroy();
    overlay?.dispose();
    if (lab) assert.deepEqual(await namespacesWithPrefix(lab.prefix), [], 'the lab left namespaces behind');
  });

  async function fakeRelay(script: object[]): Promise<Daemon> {
    const relay = new Daemon('fake relay', lab.spawn('srv', [process.execPath, FAKE_RELAY, String(SERVER_PORT), path.join(overlay.dir, 'srv-state'), JSON.stringify(script)], { pipe: true }));
    running.push(relay);
    await relay.waitFor(/^listening$/);
    return relay;
  }

  async function stop(...daemons: Daemon[]): Promise<void> {
    for (const d of daemons) {
      d.signal('SIGTERM');
      await d.waitExit(15_000).catch(() => d.signal('SIGKILL'));
    }
  }

  it('refuses a WELCOME with a /1, one covering its route to the relay, or an address outside the subnet; takes a sound one', async () => {
    const relay = await fakeRelay([
      { ...SOUND, ip: '10.0.0.2', prefix: 1, serverIp: '10.0.0.1' },
      { ...SOUND, ip: '192.168.0.77', serverIp: '192.168.0.1' },
      { ...SOUND, ip: '10.0.1.2' },
      SOUND,
    ]);
    const client = await overlay.startClientAs('c', 'c', { noWait: true });
    running.push(client);
    const refusals = [
      /^Refusing the lease 192\.168\.0\.10:3334 offered: WELCOME\.prefix: 1 is outside 16\.\.30; retrying in \d+ ms$/,
      /^Refusing the lease 192\.168\.0\.10:3334 offered: WELCOME: 192\.168\.0\.77\/24 covers the relay's own address 192\.168\.0\.10/,
      /^Refusing the lease 192\.168\.0\.10:3334 offered: WELCOME\.serverIp: 10\.0\.0\.1 is outside the announced subnet 10\.0\.1\.0\/24; retrying in \d+ ms$/,
    ];
    for (const refusal of refusals) {
      const line = await client.waitFor(refusal, { timeoutMs: 20_000 });
      assert.equal(line.level, 50, 'logged as an error');
    }
    // Nothing of what was refused reached the kernel.
    const routes = await lab.exec('c', ['ip', '-4', 'route', 'show']);
    assert.doesNotMatch(routes.stdout, /mnedc0|^0\.0\.0\.0\/1|^128\.0\.0\.0\/1/m, routes.stdout);
    const status = await overlay.ctl('c', ['status', '--json']);
    assert.match((status.json as { lastError: string }).lastError, /refused the lease: WELCOME/);
    // The fourth connection gets a sound lease: the client takes it, having tried again on its own.
    await client.waitFor(/^Connected to 192\.168\.0\.10:3334 as 10\.0\.0\.2\/24 on mnedc0$/, { timeoutMs: 20_000 });
    assert.equal(await overlay.overlayIp('c'), '10.0.0.2');
    await relay.waitFor(/^hello 4$/);
    await stop(client, relay);
  });

  it('finding 4: warns at start, naming the fix, when every user can read the file holding the join secret', async () => {
    const relay = await fakeRelay([SOUND]);
    const client = await overlay.startClientAs('c', 'lax', { noWait: true, configMode: 0o644, extra: '[client]\ninterface = mnedc6\n' });
    running.push(client);
    const config = path.join(overlay.dir, 'lax.ini');
    const warned = await client.waitFor(/holds the join secret but every user can read it/);
    assert.equal(warned.level, 40);
    assert.equal(warned.msg, `${config} holds the join secret but every user can read it (mode 0644, owner root, group root); ` +
      `anyone holding the secret can join the network. Fix: chmod 0640 ${config}`);
    await client.waitFor(/^Connected to /, { timeoutMs: 20_000 });
    await stop(client);
    const tight = await overlay.startClientAs('c', 'tight', { noWait: true, extra: '[client]\ninterface = mnedc6\n' });
    running.push(tight);
    await tight.waitFor(/^Connected to /, { timeoutMs: 20_000 });
    assert.ok(!tight.lines.some((l) => /holds the join secret/.test(l.msg)), 'a 0600 file draws no warning');
    await stop(tight, relay);
  });

  it('survives an error that is not the relay\'s fault (its TUN gone when the lease arrives) and keeps retrying', async () => {
    const relay = await fakeRelay([{ ...SOUND, hold: true }]);
    const client = await overlay.startClientAs('c', 'c2', { noWait: true, extra: '[client]\ninterface = mnedc5\n' });
    running.push(client);
    await relay.waitFor(/^hello 1$/, { timeoutMs: 20_000 });
    // The interface disappears under the client (an operator, another program), then the lease comes.
    assert.equal((await lab.exec('c', ['ip', 'link', 'del', 'mnedc5'])).code, 0);
    relay.signal('SIGUSR1');
    const failed = await client.waitFor(/^Dropping the connection: cannot handle what 192\.168\.0\.10:3334 sent: .*mnedc5: No such device/, { timeoutMs: 20_000 });
    assert.equal(failed.level, 50);
    // The daemon lives on and tries again.
    await relay.waitFor(/^hello 2$/, { timeoutMs: 20_000 });
    assert.equal(client.exited, null, `the client exited: ${client.tail()}`);
    const status = await overlay.ctlAt(path.join(overlay.dir, 'c2.sock'), ['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.match((status.json as { lastError: string }).lastError, /No such device/);
    await stop(client, relay);
  });

  it('drops a relay that floods PINGs and never reads the PONGs, instead of queueing them without bound', async () => {
    const relay = await fakeRelay([{ ...SOUND, flood: true }, SOUND]);
    const client = await overlay.startClientAs('c', 'c3', { noWait: true });
    running.push(client);
    await relay.waitFor(/^flooding 1$/, { timeoutMs: 20_000 });
    // Before, the client had no budget for what it owes the relay: it queued PONGs until the flood ended (30 s).
    const dropped = await client.waitFor(/^Dropping the connection: 192\.168\.0\.10:3334 does not read what this device sends \(\d+ KiB would be queued\)$/,
      { timeoutMs: 25_000 });
    assert.equal(dropped.level, 40);
    const rss = Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${client.pid()}/status`, 'utf8'))![1]) / 1024;
    assert.ok(rss < 200, `client RSS ${rss.toFixed(0)} MiB after the flood`);
    // It lives on and joins the next, sound relay connection.
    await relay.waitFor(/^hello 2$/, { timeoutMs: 20_000 });
    assert.equal(client.exited, null, `the client exited: ${client.tail()}`);
    await stop(client, relay);
  });

  it('drops what a relay forges from outside the overlay (a DNS answer "from 8.8.8.8"), counted; takes what comes from inside it', async () => {
    const relay = await fakeRelay([{ ...SOUND, hold: true, forge: [
      { src: '8.8.8.8', port: 5300, text: 'forged answer' },
      { src: '192.168.0.1', port: 5300, text: 'forged LAN' },
      { src: '10.0.0.1', port: 5300, text: 'from the relay' },
    ] }]);
    const client = await overlay.startClientAs('c', 'c4', { noWait: true });
    running.push(client);
    await relay.waitFor(/^hello 1$/, { timeoutMs: 20_000 });
    // A socket on every address of c, as a resolver waiting for its answer would have.
    const listener = new Daemon('listener', lab.spawn('c', [process.execPath, '-e',
      "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>console.log('got '+m+' from '+r.address));s.bind(5300,()=>console.log('bound'))"], { pipe: true }));
    running.push(listener);
    await listener.waitForRaw(/^bound$/);
    relay.signal('SIGUSR1');
    await listener.waitForRaw(/^got from the relay from 10\.0\.0\.1$/, 20_000);
    const line = await client.waitFor(/^Dropped packets from 192\.168\.0\.10:3334 with a source outside the overlay, e\.g\. 8\.8\.8\.8/, { timeoutMs: 10_000 });
    assert.equal(line.level, 40);
    assert.deepEqual(listener.raw.filter((l) => l.startsWith('got ')), ['got from the relay from 10.0.0.1']);
    const stats = await overlay.ctlAt(path.join(overlay.dir, 'c4.sock'), ['stats', '--json']);
    assert.equal((stats.json as { session: { dropsFromRelay: number } }).session.dropsFromRelay, 2);
    await stop(client, relay, listener);
  });
});
