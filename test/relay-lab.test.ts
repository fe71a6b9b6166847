/**
 * The core relay in the nested-NAT lab: every device reaches every other over the overlay, bulk TCP
 * arrives intact, full-size packets pass, and junk on the server port only hurts its sender.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Daemon, DEVICES, pings, SERVER_PORT, UNDERLAY } from '@mnedc/lab';
import { JUNK, skipUnlessRoot, TRANSFER, withOverlayLab } from './lab-suite';


describe('relay across nested NATs', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  const ctx = withOverlayLab();

  it('leases unique addresses in the subnet, the server holding .1', () => {
    assert.equal(ctx.ips.srv, '10.0.0.1');
    const devices = DEVICES.map((d) => ctx.ips[d]);
    assert.equal(new Set(devices).size, 4, `addresses ${devices.join(', ')}`);
    for (const ip of devices) assert.match(ip, /^10\.0\.0\.(\d+)$/);
    // b and d share the private address 192.168.1.10 yet are distinct on the ctx.overlay.
    assert.equal(UNDERLAY.b, UNDERLAY.d);
    assert.notEqual(ctx.ips.b, ctx.ips.d);
  });

  it('every device pings every other device and the server, both directions', async () => {
    const nodes = ['srv', ...DEVICES] as const;
    const pairs = nodes.flatMap((from) => nodes.filter((to) => to !== from).map((to) => [from, to] as const));
    const results = await Promise.all(pairs.map(async ([from, to]) => [from, to, await pings(ctx.lab, from, ctx.ips[to])] as const));
    const failed = results.filter(([, , ok]) => !ok).map(([from, to]) => `${from}→${to} (${ctx.ips[to]})`);
    assert.deepEqual(failed, [], `failed pings: ${failed.join(', ')}`);
    assert.equal(results.length, 20);
  });

  it('passes full-MTU packets with DF set, and refuses larger ones', async () => {
    // 1400-byte MTU: 1372 bytes of ICMP payload + 8 ICMP + 20 IP.
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d, ['-M', 'do', '-s', '1372']), 'full-MTU ping c→d');
    assert.ok(await pings(ctx.lab, 'd', ctx.ips.c, ['-M', 'do', '-s', '1372']), 'full-MTU ping d→c');
    assert.ok(await pings(ctx.lab, 'b', ctx.ips.srv, ['-M', 'do', '-s', '1372']), 'full-MTU ping b→server');
    assert.equal(await pings(ctx.lab, 'c', ctx.ips.d, ['-M', 'do', '-s', '1373']), false, 'one byte over the MTU must not pass with DF');
  });

  it('carries a 64 MB TCP transfer between the two deepest devices intact', async () => {
    const receiver = new Daemon('receiver', ctx.lab.spawn('d', [process.execPath, TRANSFER, 'receive', '5001'], { pipe: true }));
    await receiver.waitFor(/^listening$/);
    const sent = await ctx.lab.exec('c', [process.execPath, TRANSFER, 'send', ctx.ips.d, '5001', String(64 << 20)], { timeoutMs: 120_000 });
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    const result = await receiver.waitFor(/^received$/, { timeoutMs: 30_000 });
    const sender = JSON.parse(sent.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string };
    assert.equal(result.bytes, 64 << 20);
    assert.equal(result.sha256, sender.sha256);
  });

  it('closes only the connection that sends random bytes or a malformed frame', async () => {
    const before = ctx.overlay.server.lines.length;
    const random = await ctx.lab.exec('a', [process.execPath, JUNK, UNDERLAY.srv, String(SERVER_PORT), 'random', '4096'], { timeoutMs: 15_000 });
    assert.deepEqual(JSON.parse(random.stdout).closed, true, random.stdout + random.stderr);
    // An established session sending a frame with an unknown type, then one claiming 16 MB.
    for (const bad of ['7e00000401020304', '10ffffff']) {
      const result = await ctx.lab.exec('b', [process.execPath, JUNK, UNDERLAY.srv, String(SERVER_PORT), 'hello-then', bad, ctx.overlay.join], { timeoutMs: 15_000 });
      assert.deepEqual(JSON.parse(result.stdout).closed, true, result.stdout + result.stderr);
    }
    await ctx.overlay.server.waitFor(/protocol error/, { from: before });
    assert.equal(ctx.overlay.server.exited, null, 'the server lives on');
    for (const device of DEVICES) assert.equal(ctx.overlay.client(device).exited, null);
    assert.ok(await pings(ctx.lab, 'c', ctx.ips.d), 'other devices unaffected');
    assert.ok(await pings(ctx.lab, 'a', ctx.ips.b), 'other devices unaffected');
    const reconnects = DEVICES.filter((d) => ctx.overlay.client(d).lines.some((l) => /^Lost /.test(l.msg)));
    assert.deepEqual(reconnects, [], 'no real client lost its session');
  });
});
