/**
 * The control plane against live daemons in the lab: mnedcctl sees what the overlay really is, counters
 * move with traffic, kick works, and the control socket survives junk.
 */
import { strict as assert } from 'node:assert';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import {
  counterLabel, CUT_TERMS, DROP_TERMS, REFUSAL_TERMS, SESSION_TERMS, statusLabel, TUNNEL_TERMS, type Term,
} from '@mnedc/ctl';
import { DEVICES, pings, type Device } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab } from './lab-suite';

interface PeerRow { deviceId: string; ip: string }
interface LeaseRow { deviceId: string; ip: string; connected: boolean }
interface Counters { rxPackets: number; txPackets: number; drops: Record<string, number> }

describe('control plane in the lab', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  const ctx = withOverlayLab();

  it('mnedcctl peers --json on every client lists every other device and the server', async () => {
    for (const device of DEVICES) {
      // The snapshot arrives within the server's coalescing window: wait for the client to log each peer.
      for (const other of DEVICES.filter((d) => d !== device)) {
        await ctx.overlay.client(device).waitFor(new RegExp(`^Peer device-${other} .* is up at `));
      }
      const result = await ctx.overlay.ctl(device, ['peers', '--json']);
      assert.equal(result.code, 0, result.stderr);
      const peers = result.json as PeerRow[];
      for (const other of DEVICES.filter((d) => d !== device)) {
        const row = peers.find((p) => p.deviceId === `device-${other}`);
        assert.ok(row, `${device} does not list device-${other}: ${result.stdout}`);
        assert.equal(row.ip, ctx.ips[other]);
      }
      assert.ok(peers.some((p) => p.ip === ctx.ips.srv), `${device} lists the server's own address`);
      assert.ok(!peers.some((p) => p.deviceId === `device-${device}`), 'a device does not list itself');
    }
  });

  it('mnedcctl leases --json on the server matches the addresses on the devices', async () => {
    const result = await ctx.overlay.ctl('srv', ['leases', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const leases = result.json as LeaseRow[];
    for (const device of DEVICES) {
      const lease = leases.find((l) => l.deviceId === `device-${device}`);
      assert.ok(lease, `no lease for device-${device}`);
      assert.equal(lease.ip, await ctx.overlay.overlayIp(device));
      assert.equal(lease.connected, true);
    }
    const status = await ctx.overlay.ctl('srv', ['status', '--json']);
    const s = status.json as { daemon: string; clients: number; leases: { used: number; capacity: number }; serverIp: string };
    assert.deepEqual([s.daemon, s.clients, s.leases.used, s.leases.capacity, s.serverIp], ['server', 4, 4, 253, '10.0.0.1']);
  });

  it('stats counters grow by at least the packets of a ping run', async () => {
    const before = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as { totals: Counters; clients: Array<Counters & { deviceId: string }> };
    const clientBefore = (await ctx.overlay.ctl('c', ['stats', '--json'])).json as { tunnel: { rxPackets: number; txPackets: number } };
    const run = await ctx.lab.exec('c', ['ping', '-q', '-c', '30', '-i', '0.01', ctx.ips.d], { timeoutMs: 20_000 });
    assert.equal(run.code, 0, run.stdout);
    const after = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as typeof before;
    const clientAfter = (await ctx.overlay.ctl('c', ['stats', '--json'])).json as typeof clientBefore;
    // 30 requests c→d and 30 replies d→c cross the relay.
    assert.ok(after.totals.rxPackets - before.totals.rxPackets >= 60, `relay rx grew by ${after.totals.rxPackets - before.totals.rxPackets}`);
    assert.ok(after.totals.txPackets - before.totals.txPackets >= 60);
    const cBefore = before.clients.find((x) => x.deviceId === 'device-c')!;
    const cAfter = after.clients.find((x) => x.deviceId === 'device-c')!;
    assert.ok(cAfter.rxPackets - cBefore.rxPackets >= 30, 'per-client counter for c');
    assert.ok(clientAfter.tunnel.rxPackets - clientBefore.tunnel.rxPackets >= 30, 'c read its requests from the TUN');
    assert.ok(clientAfter.tunnel.txPackets - clientBefore.tunnel.txPackets >= 30, 'c wrote the replies to the TUN');
    const human = await ctx.overlay.ctl('srv', ['peers']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /device-c/);
  });

  it('human status and stats on both daemons show every field and counter --json has, each one explained', async () => {
    const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const explained = (terms: Record<string, Term>, key: string, where: string) =>
      assert.ok(Object.prototype.hasOwnProperty.call(terms, key), `${where}.${key} has no term in packages/ctl/src/glossary.ts`);
    for (const device of ['srv', 'c'] as const) {
      const status = (await ctx.overlay.ctl(device, ['status', '--json'])).json as Record<string, unknown>;
      const statusText = (await ctx.overlay.ctl(device, ['status'])).stdout;
      for (const key of Object.keys(status)) {
        assert.match(statusText, new RegExp(`^${escape(statusLabel(key))}  `, 'm'), `${device} status: ${key} is not shown:\n${statusText}`);
      }
    }
    const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as {
      refused: Record<string, number>; cut: Record<string, number>; totals: Counters; local: Counters; clients: Counters[];
    };
    const text = (await ctx.overlay.ctl('srv', ['stats'])).stdout;
    const header = text.split('\n')[0]!;
    for (const key of Object.keys(stats.totals.drops)) {
      explained(DROP_TERMS, key, 'drops');
      assert.ok(header.includes(counterLabel(DROP_TERMS, key, true)), `drops.${key} has no column: ${header}`);
    }
    for (const [group, terms] of [['refused', REFUSAL_TERMS], ['cut', CUT_TERMS]] as const) {
      for (const [key, value] of Object.entries(stats[group])) {
        explained(terms, key, group);
        assert.match(text, new RegExp(`^  ${escape(counterLabel(terms, key))} +${value}$`, 'm'), `${group}.${key} is not shown:\n${text}`);
      }
    }
    const client = (await ctx.overlay.ctl('c', ['stats', '--json'])).json as { tunnel: Record<string, number>; session: Record<string, number> };
    const clientText = (await ctx.overlay.ctl('c', ['stats'])).stdout;
    const traffic = ['rxPackets', 'rxBytes', 'txPackets', 'txBytes'];
    for (const [group, terms] of [['tunnel', TUNNEL_TERMS], ['session', SESSION_TERMS]] as const) {
      for (const key of Object.keys(client[group]).filter((k) => !traffic.includes(k))) {
        explained(terms, key, group);
        assert.match(clientText, new RegExp(`^${escape(counterLabel(terms, key))}  `, 'm'), `${group}.${key} is not shown:\n${clientText}`);
      }
    }
  });

  it('kick disconnects a client, which comes back with the same address', async () => {
    const victim: Device = 'b';
    const mark = ctx.overlay.client(victim).lines.length;
    const result = await ctx.overlay.ctl('srv', ['kick', `device-${victim}`]);
    assert.equal(result.code, 0, result.stderr);
    await ctx.overlay.client(victim).waitFor(/^Server closed the session/, { from: mark });
    const back = await ctx.overlay.client(victim).waitFor(/^Connected to /, { from: mark, timeoutMs: 20_000 });
    assert.equal(back.ip, ctx.ips[victim]);
    const status = (await ctx.overlay.ctl(victim, ['status', '--json'])).json as { state: string; ip: string; reconnects: number };
    assert.deepEqual([status.state, status.ip], ['connected', ctx.ips[victim]]);
    assert.ok(status.reconnects >= 1);
    assert.ok(await pings(ctx.lab, 'a', ctx.ips[victim]));
    const missing = await ctx.overlay.ctl('srv', ['kick', 'no-such-device']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no-such-device is not connected/);
  });

  it('answers malformed JSON with a JSON-RPC error and keeps serving', async () => {
    const socket = connect(ctx.overlay.socket('srv'));
    const lines = createInterface({ input: socket })[Symbol.asyncIterator]();
    socket.write('{"jsonrpc":"2.0","method":\n');
    const parseError = JSON.parse((await lines.next()).value as string) as { error: { code: number } };
    assert.equal(parseError.error.code, -32700);
    socket.write('{"jsonrpc":"2.0","id":7,"method":"status"}\n');
    const answer = JSON.parse((await lines.next()).value as string) as { id: number; result: { daemon: string } };
    assert.deepEqual([answer.id, answer.result.daemon], [7, 'server']);
    socket.destroy();
    const status = await ctx.overlay.ctl('srv', ['status']);
    assert.equal(status.code, 0);
    assert.equal(ctx.overlay.server.exited, null);
  });

  it('mnedcctl exit statuses: 2 for usage, 3 with no daemon naming the socket', async () => {
    const usage = await ctx.overlay.ctl('srv', ['frobnicate']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /frobnicate/);
    const clientOnly = await ctx.overlay.ctl('a', ['leases']);
    assert.equal(clientOnly.code, 2);
    const gone = `${ctx.overlay.dir}/nobody.sock`;
    const none = await ctx.overlay.ctlAt(gone, ['status']);
    assert.equal(none.code, 3);
    assert.ok(none.stderr.includes(gone), none.stderr);
  });
});
