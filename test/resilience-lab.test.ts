/**
 * The relay under failure: a server killed and restarted mid-transfer, and a device frozen while the
 * others keep talking.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Daemon, DEVICES, iperf, pings } from '@mnedc/lab';
import { skipUnlessRoot, TRANSFER, withOverlayLab } from './lab-suite';


describe('relay resilience', { skip: skipUnlessRoot, timeout: 240_000 }, () => {
  const ctx = withOverlayLab();

  it('survives kill -9 of the server during a TCP transfer: same addresses, transfer completes intact', async () => {
    const receiver = new Daemon('receiver', ctx.lab.spawn('d', [process.execPath, TRANSFER, 'receive', '5002'], { pipe: true }));
    await receiver.waitFor(/^listening$/);
    // 24 MB paced at 4 MB/s: long enough that the server dies in the middle.
    const sending = ctx.lab.exec('c', [process.execPath, TRANSFER, 'send', ctx.ips.d, '5002', String(24 << 20), String(4 << 20)], { timeoutMs: 120_000 });
    await receiver.waitFor(/^progress$/);
    const marks = new Map(DEVICES.map((d) => [d, ctx.overlay.client(d).lines.length]));
    ctx.overlay.server.signal('SIGKILL');
    await ctx.overlay.server.waitExit();
    for (const d of DEVICES) await ctx.overlay.client(d).waitFor(/^Lost /, { from: marks.get(d)! });
    const progressAtKill = receiver.lines.filter((l) => l.msg === 'progress').length;
    await ctx.overlay.startServer();
    for (const d of DEVICES) {
      const back = await ctx.overlay.client(d).waitFor(/^Connected to /, { from: marks.get(d)!, timeoutMs: 20_000 });
      assert.equal(back.ip, ctx.ips[d], `${d} came back with its old address`);
    }
    const sent = await sending;
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    const result = await receiver.waitFor(/^received$/, { timeoutMs: 60_000 });
    const sender = JSON.parse(sent.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string };
    assert.equal(result.bytes, 24 << 20);
    assert.equal(result.sha256, sender.sha256);
    assert.ok(progressAtKill < 24, 'the kill happened mid-transfer');
    assert.deepEqual(await ctx.overlay.overlayIps(), ctx.ips);
  });

  it('keeps full rate between the others while one device is frozen, and the frozen one recovers', async (t) => {
    const baseline = (await iperf(ctx.lab, 'c', 'd', ctx.ips.d, { seconds: 3, port: 5201 })).bitsPerSecond;
    const frozen = ctx.overlay.client('b');
    const mark = frozen.lines.length;
    const serverMark = ctx.overlay.server.lines.length;
    frozen.signal('SIGSTOP');
    try {
      // Traffic towards the frozen device fills its queues while c→d is measured.
      const flood = ctx.lab.exec('a', ['ping', '-q', '-i', '0.002', '-s', '1200', '-w', '4', ctx.ips.b], { timeoutMs: 10_000 });
      const during = (await iperf(ctx.lab, 'c', 'd', ctx.ips.d, { seconds: 3, port: 5202 })).bitsPerSecond;
      await flood;
      t.diagnostic(`c→d ${(baseline / 1e6).toFixed(0)} Mbit/s before, ${(during / 1e6).toFixed(0)} Mbit/s with b frozen`);
      assert.ok(during >= baseline * 0.5,
        `c→d fell from ${(baseline / 1e6).toFixed(0)} to ${(during / 1e6).toFixed(0)} Mbit/s while b was frozen`);
      // The server gives up on the silent device within dead_after_ms (15 s by default) and a keepalive round.
      await ctx.overlay.server.waitFor(/^Device device-b silent for/, { from: serverMark, timeoutMs: 30_000 });
    } finally {
      frozen.signal('SIGCONT');
    }
    const back = await frozen.waitFor(/^Connected to /, { from: mark, timeoutMs: 20_000 });
    assert.equal(back.ip, ctx.ips.b);
    assert.ok(await pings(ctx.lab, 'a', ctx.ips.b), 'a reaches b again');
    assert.ok(await pings(ctx.lab, 'b', ctx.ips.c), 'b reaches c again');
  });
});
