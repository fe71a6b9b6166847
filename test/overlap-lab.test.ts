/**
 * Issue 13 item 1: an overlay subnet that overlaps a network of the host. The real mnedcd-server in srv
 * and mnedcd-client in c, each namespace given a second LAN address inside the subnet.
 */
import { strict as assert } from 'node:assert';
import { before, describe, it } from 'node:test';
import type { Daemon } from '@mnedc/lab';
import { skipUnlessRoot, withBareLab } from './lab-suite';

const SUBNET = '[server]\nsubnet = 172.31.5.0/24\n';

describe('an overlay subnet overlapping a host network', { skip: skipUnlessRoot, timeout: 90_000 }, () => {
  const running: Daemon[] = [];
  const context = withBareLab(running);

  before(async () => {
    for (const [node, address] of [['srv', '172.31.5.10/24'], ['c', '172.31.5.20/24']] as const) {
      const result = await context.lab.exec(node, ['ip', 'addr', 'add', address, 'dev', 'eth0']);
      assert.equal(result.code, 0, result.stderr);
    }
  });

  async function stop(daemon: Daemon): Promise<void> {
    daemon.signal('SIGTERM');
    await daemon.waitExit(15_000);
  }

  it('the relay refuses to start (EX_CONFIG, before creating its TUN) unless allow_overlap names the network', async () => {
    const refused = await context.overlay.startServer({ extra: SUBNET, noWait: true });
    running.push(refused);
    const line = await refused.waitFor(/refusing to start/);
    assert.equal(line.level, 60);
    assert.equal(line.msg, `${context.overlay.configPath('srv')}: [server] subnet: refusing to start: the subnet 172.31.5.0/24 overlaps ` +
      "eth0's address 172.31.5.10/24. Choose a subnet this host does not use, or accept these networks in [server] allow_overlap");
    await refused.waitExit();
    assert.equal(refused.exited?.code, 78);
    assert.notEqual((await context.lab.exec('srv', ['ip', 'link', 'show', 'mnedc0'])).code, 0, 'no TUN was created');

    // The case: the LAN itself as the subnet would put the gateway's address on the relay's TUN.
    const lan = await context.overlay.startServer({ extra: '[server]\nsubnet = 192.168.0.0/24\n', noWait: true });
    running.push(lan);
    await lan.waitExit();
    assert.equal(lan.exited?.code, 78);
    assert.ok(lan.lines.some((l) => l.msg.includes("the subnet 192.168.0.0/24 overlaps eth0's address 192.168.0.10/24; the subnet " +
      '192.168.0.0/24 contains 192.168.0.1, the gateway of the route default via 192.168.0.1 dev eth0: the host would lose its default route')),
      lan.tail());

    const allowed = await context.overlay.startServer({ extra: `${SUBNET}allow_overlap = 172.31.0.0/16\n` });
    running.push(allowed);
    const warned = allowed.lines.find((l) => /^Starting although /.test(l.msg));
    assert.equal(warned?.msg, "Starting although the subnet 172.31.5.0/24 overlaps eth0's address 172.31.5.10/24 ([server] allow_overlap)");
    assert.equal(warned?.level, 40);
  });

  it('a client refuses the lease, says so in mnedcctl status, keeps retrying, and joins once allowed', async () => {
    const refusing = await context.overlay.startClient('c', { noWait: true });
    running.push(refusing);
    const problem = "WELCOME: subnet 172.31.5.0/24 overlaps eth0's address 172.31.5.20/24; accept that in [client] allow_overlap, " +
      'or give the relay another [server] subnet';
    const first = await refusing.waitFor(/^Refusing the lease /, { timeoutMs: 20_000 });
    assert.ok(first.msg.startsWith(`Refusing the lease 192.168.0.10:3334 offered: ${problem}; retrying in `), first.msg);
    assert.equal(first.level, 50, 'an error, once per attempt');
    // Tried again later, and refused again: the host still has that network.
    await refusing.waitFor(/^Refusing the lease /, { from: refusing.lines.indexOf(first) + 1, timeoutMs: 20_000 });
    const status = await context.overlay.ctl('c', ['status', '--json']);
    assert.equal((status.json as { lastError: string }).lastError, `refused the lease: ${problem}`);
    const human = await context.overlay.ctl('c', ['status']);
    assert.match(human.stdout, /refused the lease: WELCOME: subnet 172\.31\.5\.0\/24 overlaps eth0's address 172\.31\.5\.20\/24/);
    const addresses = await context.lab.exec('c', ['ip', '-4', 'addr', 'show', 'dev', 'mnedc0']);
    assert.doesNotMatch(addresses.stdout, /inet /, 'nothing of the lease reached the TUN');
    await stop(refusing);

    const joined = await context.overlay.startClient('c', { extra: '[client]\nallow_overlap = 172.31.5.0/24\n' });
    running.push(joined);
    assert.match(await context.overlay.overlayIp('c'), /^172\.31\.5\.\d+$/);
    assert.ok(joined.lines.some((l) => l.msg === "Taking the lease although the subnet 172.31.5.0/24 overlaps eth0's address 172.31.5.20/24 ([client] allow_overlap)"));
  });
});
