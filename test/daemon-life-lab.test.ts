/**
 * The daemons as systemd and local software see them: sd_notify readiness, status, watchdog and stop;
 * peer events handed to hooks, peers.json and a hosts file; SIGHUP applying a new log level live.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, namespacesWithPrefix, notifySocket, Overlay, pings } from '@mnedc/lab';
import { skipUnlessRoot } from './lab-suite';

describe('daemon life in the lab', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  let lab: Lab;
  let overlay: Overlay;

  before(async () => {
    lab = await Lab.create();
    overlay = new Overlay(lab);
  });

  after(async () => {
    await lab?.destroy();
    overlay?.dispose();
    if (lab) assert.deepEqual(await namespacesWithPrefix(lab.prefix), []);
  });

  it('sd_notify: READY waits for the first lease: a relay that comes up after the client, READY once the address is on the TUN', async () => {
    await overlay.printJoin();
    const socketPath = path.join(overlay.dir, 'notify-b.sock');
    const notify = await notifySocket(lab, 'b', socketPath);
    const client = await overlay.startClient('b', { env: { NOTIFY_SOCKET: socketPath }, noWait: true });
    await notify.waitFor(/^STATUS=reconnecting in \d+ s: /);
    await overlay.startServer();
    // The relay is up within the client's bounded wait (10 s), so the first READY is the lease's.
    const ready = await notify.waitFor(/^READY=1$/, { timeoutMs: 20_000 });
    const before = notify.lines.slice(0, notify.lines.indexOf(ready)).filter((l) => l.msg.startsWith('STATUS='));
    assert.match(before.at(-1)?.msg ?? '', /^STATUS=connected to /, `READY came with: ${before.map((l) => l.msg).join(' | ')}`);
    assert.match(await overlay.overlayIp('b'), /^10\.0\.0\.\d+$/, 'the address is on the interface at READY');
    client.signal('SIGTERM');
    await client.waitExit();
    overlay.server.signal('SIGTERM');
    await overlay.server.waitExit();
  });

  it('sd_notify: READY after a bounded wait without a relay, STATUS on (dis)connect, WATCHDOG at the asked rate, STOPPING on SIGTERM', async () => {
    await overlay.printJoin();
    const socketPath = path.join(overlay.dir, 'notify-a.sock');
    const notify = await notifySocket(lab, 'a', socketPath);
    // No server: the client is up and retrying on its own; after its bounded wait it is READY, and its
    // STATUS says it is not joined (boot and `systemctl start` must not hang on the relay).
    const client = await overlay.startClient('a', { env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '400000' }, noWait: true });
    const ready = await notify.waitFor(/^READY=1$/, { timeoutMs: 30_000 });
    const failed = notify.lines.find((l) => /^STATUS=reconnecting in \d+ s: /.test(l.msg));
    assert.ok(failed && notify.lines.indexOf(failed) < notify.lines.indexOf(ready), 'attempts failed before READY');
    assert.ok((ready.t as number) - (failed.t as number) > 5, `READY ${((ready.t as number) - (failed.t as number)).toFixed(1)} s after the first failure, expected ~10 s`);
    const lastStatus = notify.lines.slice(0, notify.lines.indexOf(ready)).filter((l) => l.msg.startsWith('STATUS=')).at(-1);
    assert.match(lastStatus?.msg ?? '', /^STATUS=reconnecting in \d+ s: /, 'READY comes with the STATUS of the failed attempt');
    assert.equal(notify.lines.filter((l) => l.msg === 'READY=1').length, 1);
    // Everything the client says once a server exists comes after this mark (it may be quick about it).
    const beforeServer = notify.lines.length;
    const serverNotify = await notifySocket(lab, 'srv', path.join(overlay.dir, 'notify-srv.sock'));
    await overlay.startServer({ env: { NOTIFY_SOCKET: path.join(overlay.dir, 'notify-srv.sock') } });
    await serverNotify.waitFor(/^READY=1$/);
    const joined = await notify.waitFor(/^STATUS=connected to 192\.168\.0\.10:3334 as /, { from: beforeServer, timeoutMs: 20_000 });
    const ip = await overlay.overlayIp('a');
    assert.match(ip, /^10\.0\.0\.\d+$/, 'the address is on the interface when STATUS says connected');
    assert.equal(joined.msg, `STATUS=connected to 192.168.0.10:3334 as ${ip}`);

    // WATCHDOG_USEC=400000 asks for a ping at least every 400 ms; the client pings every 200 ms.
    const firstPings = notify.lines.filter((l) => l.msg === 'WATCHDOG=1').length;
    await notify.waitFor(/^WATCHDOG=1$/, { from: notify.lines.length });
    const watchdogs = (): number[] => notify.lines.filter((l) => l.msg === 'WATCHDOG=1').map((l) => l.t as number);
    while (watchdogs().length < firstPings + 8) await notify.waitFor(/^WATCHDOG=1$/, { from: notify.lines.length });
    const times = watchdogs().slice(-8);
    const gaps = times.slice(1).map((t, i) => t - times[i]!).sort((x, y) => x - y);
    const median = gaps[Math.floor(gaps.length / 2)]!;
    assert.ok(median > 0.15 && median < 0.3, `median watchdog period ${median.toFixed(3)} s, expected ~0.2 s`);

    const lost = notify.lines.length;
    overlay.server.signal('SIGKILL');
    await notify.waitFor(/^STATUS=reconnecting in \d+ s: /, { from: lost });

    client.signal('SIGTERM');
    await notify.waitFor(/^STOPPING=1$/);
    await client.waitExit();
    assert.deepEqual(client.exited, { code: 0, signal: null });
  });

  it('hands peer events to hooks, peers.json and the hosts file; a hanging hook is killed and the tunnel keeps working', async () => {
    await overlay.startServer();
    const record = path.join(overlay.dir, 'hook-record');
    const hooks = overlay.hookDir('a');
    // Hooks exist before the client starts, so its very first event runs them.
    mkdirSync(hooks, { recursive: true });
    writeFileSync(path.join(hooks, '10-record'),
      `#!/bin/sh\necho "$1 $MNEDC_EVENT $MNEDC_PEER_ID $MNEDC_PEER_IP $MNEDC_PEER_HOSTNAME" >> ${record}\n`);
    writeFileSync(path.join(hooks, '20-hang'), '#!/bin/sh\nsleep 1000\n');
    chmodSync(path.join(hooks, '10-record'), 0o755);
    chmodSync(path.join(hooks, '20-hang'), 0o755);
    const a = await overlay.startClient('a', { extra: '[discovery]\nhook_timeout_ms = 800\n' });
    const b = await overlay.startClient('b');
    const bIp = await overlay.overlayIp('b');
    await a.waitFor(/^Peer device-b .* is up/);
    await a.waitFor(/^Hook 20-hang timed out after 800 ms: killed \(peer device-b up\)/, { timeoutMs: 10_000 });
    const lines = readFileSync(record, 'utf8').trim().split('\n');
    assert.ok(lines.some((l) => l.startsWith(`up up device-b ${bIp} `)), lines.join('\n'));
    assert.ok(await pings(lab, 'a', bIp), 'the tunnel works while and after a hook hangs');
    const peers = JSON.parse(readFileSync(overlay.peersFile('a'), 'utf8')) as { peers: Array<{ deviceId: string; ip: string }> };
    assert.ok(peers.peers.some((p) => p.deviceId === 'device-b' && p.ip === bIp), JSON.stringify(peers));
    assert.match(readFileSync(overlay.hostsFile('a'), 'utf8'), new RegExp(`^${bIp.replace(/\./g, '\\.')}\\s.*device-b\\.mnedc`, 'm'));

    const mark = a.lines.length;
    assert.ok(existsSync(overlay.hostsFile('b')));
    b.signal('SIGTERM');
    await b.waitExit();
    // A stopped client's names go with it (the packaged path unit then takes them out of /etc/hosts).
    assert.equal(existsSync(overlay.hostsFile('b')), false, 'b left its hosts file behind');
    await a.waitFor(/^Peer device-b .* is down/, { from: mark });
    await a.waitFor(/^Hook 20-hang timed out after 800 ms: killed \(peer device-b down\)/, { from: mark, timeoutMs: 10_000 });
    assert.ok(readFileSync(record, 'utf8').trim().split('\n').some((l) => l.startsWith(`down down device-b ${bIp} `)));
    const after = JSON.parse(readFileSync(overlay.peersFile('a'), 'utf8')) as { peers: Array<{ deviceId: string }> };
    assert.ok(!after.peers.some((p) => p.deviceId === 'device-b'));
  });

  it('SIGHUP applies a new log level without dropping any session', async () => {
    const a = overlay.client('a');
    const statusBefore = (await overlay.ctl('a', ['status', '--json'])).json as { reconnects: number; since: number };
    const sinceBefore = ((await overlay.ctl('srv', ['peers', '--json'])).json as Array<{ deviceId: string; since: number }>)
      .find((p) => p.deviceId === 'device-a')!.since;
    overlay.rewriteConfig('a', '[log]\nlevel = warn\n');
    overlay.rewriteConfig('srv', '[log]\nlevel = warn\n');
    const mark = a.lines.length;
    const serverMark = overlay.server.lines.length;
    a.signal('SIGHUP');
    overlay.server.signal('SIGHUP');
    await a.waitFor(/^Reloaded .*applied \[log\] level/, { from: mark });
    await overlay.server.waitFor(/^Reloaded .*applied \[log\] level/, { from: serverMark });
    // A peer joining now is an info event: a watcher sees it, the logs at warn must not.
    const watch = await overlay.watch('a');
    await overlay.startClient('c');
    await watch.waitForRaw(/"deviceId":"device-c"/);
    watch.signal('SIGTERM');
    assert.deepEqual(a.lines.slice(mark + 1).filter((l) => /^Peer /.test(l.msg)), [], 'info lines after raising the level to warn');
    assert.deepEqual(overlay.server.lines.slice(serverMark + 1).filter((l) => /joined/.test(l.msg)), []);
    const statusAfter = (await overlay.ctl('a', ['status', '--json'])).json as typeof statusBefore;
    assert.equal(statusAfter.reconnects, statusBefore.reconnects, 'the client did not reconnect');
    assert.equal(statusAfter.since, statusBefore.since, 'still the same connection');
    const sinceAfter = ((await overlay.ctl('srv', ['peers', '--json'])).json as Array<{ deviceId: string; since: number }>)
      .find((p) => p.deviceId === 'device-a')!.since;
    assert.equal(sinceAfter, sinceBefore, 'the server kept the same session');
  });

  it('on SIGTERM the server tells devices it is going away, saves leases and exits 0; devices return promptly', async () => {
    const a = overlay.client('a');
    const ipA = await overlay.overlayIp('a');
    const reloadMark = a.lines.length;
    overlay.rewriteConfig('a', '[log]\nlevel = info\n');
    a.signal('SIGHUP');
    await a.waitFor(/^Reloaded .*applied \[log\] level/, { from: reloadMark });
    const mark = a.lines.length;
    overlay.server.signal('SIGTERM');
    await overlay.server.waitExit();
    assert.deepEqual(overlay.server.exited, { code: 0, signal: null });
    const told = await a.waitFor(/^Server closed the session: server shutting down/, { from: mark });
    assert.equal(told.code, 'shutdown');
    const saved = JSON.parse(readFileSync(path.join(overlay.dir, 'srv-state', 'leases.json'), 'utf8')) as { leases: Record<string, { ip: string }> };
    assert.equal(saved.leases['device-a']?.ip, ipA);
    // The GOODBYE asks for a retry in 1–1.5 s (spread across the fleet) instead of the backoff schedule.
    const waiting = await a.waitFor(/^Lost .* reconnecting in/, { from: mark });
    assert.ok((waiting.delayMs as number) >= 1000 && (waiting.delayMs as number) <= 1500, `retry in ${String(waiting.delayMs)} ms`);
    await overlay.startServer();
    const back = await a.waitFor(/^Connected to /, { from: mark, timeoutMs: 15_000 });
    assert.equal(back.ip, ipA);
  });
});
