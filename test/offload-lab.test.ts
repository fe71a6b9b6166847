/**
 * Mixed fleets in the nested-NAT lab: c has TUN offloads (64 KB super-packets, DATA_GSO), d has them
 * switched off (`offload = off`). Bulk TCP must arrive intact both ways between them and between each
 * of them and the server's own (offloading) TUN: the relay passes super-packets to whoever negotiated
 * them and segments them, with checksums completed, for whoever did not.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Daemon, pings, type Device } from '@mnedc/lab';
import { skipUnlessRoot, TRANSFER, withOverlayLab, type LabContext } from './lab-suite';

const BYTES = 48 << 20;

interface TunnelStats {
  tunnel: { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number };
}

async function tunnelStats(ctx: LabContext, node: Device): Promise<TunnelStats['tunnel']> {
  const result = await ctx.overlay.ctl(node, ['stats', '--json']);
  assert.equal(result.code, 0, result.stderr);
  return (result.json as TunnelStats).tunnel;
}

/** A checksummed TCP transfer from `from` to `to` over the overlay. */
async function transfer(ctx: LabContext, from: Device | 'srv', to: Device | 'srv', port: number): Promise<void> {
  const receiver = new Daemon(`receiver on ${to}`, ctx.lab.spawn(to, [process.execPath, TRANSFER, 'receive', String(port)], { pipe: true }));
  await receiver.waitFor(/^listening$/);
  const sent = await ctx.lab.exec(from, [process.execPath, TRANSFER, 'send', ctx.ips[to], String(port), String(BYTES)], { timeoutMs: 120_000 });
  assert.equal(sent.code, 0, `${from} → ${to}: ${sent.stdout}${sent.stderr}`);
  const result = await receiver.waitFor(/^received$/, { timeoutMs: 30_000 });
  const sender = JSON.parse(sent.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string };
  assert.equal(result.bytes, BYTES, `${from} → ${to}: bytes`);
  assert.equal(result.sha256, sender.sha256, `${from} → ${to}: checksum`);
}

describe('offload and no-offload clients interoperate', { skip: skipUnlessRoot, timeout: 240_000 }, () => {
  const ctx = withOverlayLab({ clients: { d: { extra: '[client]\noffload = off\n' } } });

  it('negotiates offloads per device', async () => {
    const status = async (node: Device) => ((await ctx.overlay.ctl(node, ['status', '--json'])).json as { offload: boolean }).offload;
    assert.equal(await status('c'), true, 'c offloads');
    assert.equal(await status('d'), false, 'd has offload = off');
  });

  it('carries TCP intact from the offloading c to d, segmented by the relay', async () => {
    const cBefore = await tunnelStats(ctx, 'c');
    const dBefore = await tunnelStats(ctx, 'd');
    await transfer(ctx, 'c', 'd', 5101);
    const c = await tunnelStats(ctx, 'c');
    const d = await tunnelStats(ctx, 'd');
    // c's kernel handed over super-packets; d's TUN only ever got packets within the 1400-byte MTU.
    const cAverage = (c.rxBytes - cBefore.rxBytes) / (c.rxPackets - cBefore.rxPackets);
    const dAverage = (d.txBytes - dBefore.txBytes) / (d.txPackets - dBefore.txPackets);
    assert.ok(cAverage > 4000, `c read ${cAverage.toFixed(0)} bytes per packet: no super-packets`);
    assert.ok(dAverage <= 1400, `d was written ${dAverage.toFixed(0)} bytes per packet`);
  });

  it('carries TCP intact from d to the offloading c', async () => {
    await transfer(ctx, 'd', 'c', 5102);
  });

  it('carries TCP intact between the server\'s own TUN and either kind of client', async () => {
    await transfer(ctx, 'srv', 'd', 5103);
    await transfer(ctx, 'd', 'srv', 5104);
    await transfer(ctx, 'srv', 'c', 5105);
    await transfer(ctx, 'c', 'srv', 5106);
  });

  it('passes full-MTU pings with DF between the two kinds', async () => {
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d, ['-M', 'do', '-s', '1372']), 'c → d');
    assert.ok(await pings(ctx.lab, 'd', ctx.ips.c, ['-M', 'do', '-s', '1372']), 'd → c');
    assert.ok(await pings(ctx.lab, 'd', ctx.ips.srv, ['-M', 'do', '-s', '1372']), 'd → server');
  });
});
