/**
 * The core relay in the nested-NAT lab: every device reaches every other over the overlay, bulk TCP
 * arrives intact, full-size packets pass, and junk on the server port only hurts its sender.
 */
import { strict as assert } from 'node:assert';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Daemon, DEVICES, Lab, Overlay, pings, REPO_ROOT, SERVER_PORT, UNDERLAY, type Device } from '@mnedc/lab';

const TRANSFER = path.join(REPO_ROOT, 'packages/lab/dist/src/transfer.js');
const JUNK = path.join(REPO_ROOT, 'packages/lab/dist/src/junk.js');
const skip = process.getuid?.() !== 0 ? 'needs root for network namespaces' : false;

describe('relay across nested NATs', { skip, timeout: 180_000 }, () => {
  let lab: Lab;
  let overlay: Overlay;
  let ips: Record<Device | 'srv', string>;

  before(async () => {
    lab = await Lab.create();
    overlay = await Overlay.start(lab);
    ips = await overlay.overlayIps();
  });

  after(async () => {
    await lab?.destroy();
    overlay?.dispose();
  });

  it('leases unique addresses in the subnet, the server holding .1', () => {
    assert.equal(ips.srv, '10.0.0.1');
    const devices = DEVICES.map((d) => ips[d]);
    assert.equal(new Set(devices).size, 4, `addresses ${devices.join(', ')}`);
    for (const ip of devices) assert.match(ip, /^10\.0\.0\.(\d+)$/);
    // b and d share the private address 192.168.1.10 yet are distinct on the overlay.
    assert.equal(UNDERLAY.b, UNDERLAY.d);
    assert.notEqual(ips.b, ips.d);
  });

  it('every device pings every other device and the server, both directions', async () => {
    const nodes = ['srv', ...DEVICES] as const;
    const pairs = nodes.flatMap((from) => nodes.filter((to) => to !== from).map((to) => [from, to] as const));
    const results = await Promise.all(pairs.map(async ([from, to]) => [from, to, await pings(lab, from, ips[to])] as const));
    const failed = results.filter(([, , ok]) => !ok).map(([from, to]) => `${from}→${to} (${ips[to]})`);
    assert.deepEqual(failed, [], `failed pings: ${failed.join(', ')}`);
    assert.equal(results.length, 20);
  });

  it('passes full-MTU packets with DF set, and refuses larger ones', async () => {
    // 1400-byte MTU: 1372 bytes of ICMP payload + 8 ICMP + 20 IP.
    assert.ok(await pings(lab, 'c', ips.d, ['-M', 'do', '-s', '1372']), 'full-MTU ping c→d');
    assert.ok(await pings(lab, 'd', ips.c, ['-M', 'do', '-s', '1372']), 'full-MTU ping d→c');
    assert.ok(await pings(lab, 'b', ips.srv, ['-M', 'do', '-s', '1372']), 'full-MTU ping b→server');
    assert.equal(await pings(lab, 'c', ips.d, ['-M', 'do', '-s', '1373']), false, 'one byte over the MTU must not pass with DF');
  });

  it('carries a 64 MB TCP transfer between the two deepest devices intact', async () => {
    const receiver = new Daemon('receiver', lab.spawn('d', [process.execPath, TRANSFER, 'receive', '5001'], { pipe: true }));
    await receiver.waitFor(/^listening$/);
    const sent = await lab.exec('c', [process.execPath, TRANSFER, 'send', ips.d, '5001', String(64 << 20)], { timeoutMs: 120_000 });
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    const result = await receiver.waitFor(/^received$/, { timeoutMs: 30_000 });
    const sender = JSON.parse(sent.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string };
    assert.equal(result.bytes, 64 << 20);
    assert.equal(result.sha256, sender.sha256);
  });

  it('closes only the connection that sends random bytes or a malformed frame', async () => {
    const before = overlay.server.lines.length;
    const random = await lab.exec('a', [process.execPath, JUNK, UNDERLAY.srv, String(SERVER_PORT), 'random', '4096'], { timeoutMs: 15_000 });
    assert.deepEqual(JSON.parse(random.stdout).closed, true, random.stdout + random.stderr);
    // An established session sending a frame with an unknown type, then one claiming 16 MB.
    for (const bad of ['7e00000401020304', '10ffffff']) {
      const result = await lab.exec('b', [process.execPath, JUNK, UNDERLAY.srv, String(SERVER_PORT), 'hello-then', bad], { timeoutMs: 15_000 });
      assert.deepEqual(JSON.parse(result.stdout).closed, true, result.stdout + result.stderr);
    }
    await overlay.server.waitFor(/protocol error/, { from: before });
    assert.equal(overlay.server.exited, null, 'the server lives on');
    for (const device of DEVICES) assert.equal(overlay.client(device).exited, null);
    assert.ok(await pings(lab, 'c', ips.d), 'other devices unaffected');
    assert.ok(await pings(lab, 'a', ips.b), 'other devices unaffected');
    const reconnects = DEVICES.filter((d) => overlay.client(d).lines.some((l) => /^Lost /.test(l.msg)));
    assert.deepEqual(reconnects, [], 'no real client lost its session');
  });
});
