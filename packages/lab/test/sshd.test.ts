/**
 * A real OpenSSH session (the OpenSSH client in lab node a, OpenSSH's sshd in srv) over IPv6 on the lab's
 * main LAN, with no mnedc involved: it shows src/sshd.ts works before lab tests lean on it. The lab turns
 * IPv6 off in its namespaces; this test turns it back on in srv and a and gives their eth0 ULA addresses
 * (nodad: usable at once). Needs root and sshd (scripts/setup.sh extracts one); skips otherwise.
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Lab, namespacesWithPrefix, runCommand, UNDERLAY, type LabNodeName } from '../src/lab';
import { sshSession, sshSkipReason, startSshd, type Sshd, type SshSession } from '../src/sshd';

const SRV6 = 'fd6d:6e65:6463::10';
const A6 = 'fd6d:6e65:6463::20';

describe('an OpenSSH session between lab namespaces over IPv6', { skip: sshSkipReason(), timeout: 120_000 }, () => {
  let lab: Lab | undefined;
  let sshd: Sshd | undefined;
  let session: SshSession | undefined;

  async function run(node: LabNodeName, argv: string[]): Promise<string> {
    const result = await lab!.exec(node, argv, { timeoutMs: 20_000 });
    assert.equal(result.code, 0, `${node}: ${argv.join(' ')}: ${result.stderr}`);
    return result.stdout;
  }

  before(async () => {
    lab = await Lab.create();
    for (const [node, address] of [['srv', SRV6], ['a', A6]] as const) {
      await run(node, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0',
        'net.ipv6.conf.lo.disable_ipv6=0', 'net.ipv6.conf.eth0.disable_ipv6=0']);
      await run(node, ['ip', '-6', 'addr', 'add', `${address}/64`, 'dev', 'eth0', 'nodad']);
    }
  });

  after(async () => {
    await session?.stop().catch(() => undefined);
    await sshd?.stop().catch(() => undefined);
    if (lab) {
      const prefix = lab.prefix;
      await lab.destroy();
      assert.deepEqual(await namespacesWithPrefix(prefix), [], 'the lab leaves no namespace behind');
    }
    if (sshd) assert.equal(existsSync(sshd.dir), false, 'the sshd temp dir is gone');
  });

  it('echoes 20 lines through ssh from a to srv, then ends cleanly', async (t) => {
    const t0 = Date.now();
    sshd = await startSshd(lab!, 'srv', SRV6);
    const listening = Date.now();
    assert.ok(sshd.daemon.raw.some((l) => l.startsWith(`Server listening on ${SRV6} port ${sshd!.port}`)), sshd.daemon.tail());

    session = sshSession(lab!, 'a', sshd, SRV6);
    await session.waitFor(/^echoed 1$/, { timeoutMs: 15_000 });
    const firstEcho = Date.now();
    await session.waitFor(/^echoed 20$/, { timeoutMs: 15_000 });
    const twentieth = Date.now();
    const echoed = session.lines.filter((l) => l.msg.startsWith('echoed ')).map((l) => l.msg);
    assert.deepEqual(echoed.slice(0, 20), Array.from({ length: 20 }, (_, i) => `echoed ${i + 1}`), 'lines come back whole and in order');
    // The server saw the client's IPv6 address, and key authentication for root.
    await sshd.daemon.waitForRaw(new RegExp(`^Accepted publickey for root from ${A6} port \\d+ ssh2: ED25519 `), 5_000);

    const exit = await session.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `ssh ended cleanly\n${session.tail()}`);
    const done = session.lines.find((l) => l.msg === 'ssh exited');
    assert.equal(done?.code, 0);
    assert.equal(session.lines.some((l) => l.msg.startsWith('ssh: ')), false, `ssh said nothing on stderr\n${session.tail()}`);

    await sshd.stop();
    assert.ok(sshd.daemon.exited, 'sshd is gone');
    assert.equal(existsSync(sshd.dir), false, 'the temp dir is gone');
    const left = await runCommand('ip', ['netns', 'pids', lab!.ns('srv')], 10_000);
    assert.equal(left.stdout.trim(), '', 'nothing runs in srv any more');
    t.diagnostic(`lab ${lab!.prefix}: sshd listening after ${listening - t0} ms; first echo ${firstEcho - listening} ms after that; ` +
      `20 lines echoed after ${twentieth - listening} ms; stopped ${Date.now() - twentieth} ms later`);
  });

  it('is really IPv6-only and checks the host key', async () => {
    sshd = await startSshd(lab!, 'srv', SRV6);
    // A one-shot command over IPv6 works...
    assert.equal(await run('a', [...sshd.sshArgs(SRV6), 'echo over-ssh']), 'over-ssh\n');
    // ...the IPv4 address has no sshd (it listens on SRV6 only)...
    const v4 = await lab!.exec('a', [...sshd.sshArgs(UNDERLAY.srv), 'true'], { timeoutMs: 20_000 });
    assert.equal(v4.code, 255);
    assert.match(v4.stderr, /Connection refused/);
    // ...and an sshd with another host key is refused by the client (StrictHostKeyChecking=yes).
    const other = await startSshd(lab!, 'srv', SRV6, { port: 2223 });
    try {
      const trustingFirst = other.sshArgs(SRV6).map((arg) => (arg === `UserKnownHostsFile=${other.knownHosts}` ? `UserKnownHostsFile=${sshd!.knownHosts}` : arg));
      assert.ok(trustingFirst.includes(`UserKnownHostsFile=${sshd.knownHosts}`));
      const wrongKey = await lab!.exec('a', [...trustingFirst, 'true'], { timeoutMs: 20_000 });
      assert.equal(wrongKey.code, 255);
      assert.match(wrongKey.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    } finally {
      await other.stop();
    }
    // Stopping sshd ends the sessions it serves too: nothing of it is left in srv.
    session = sshSession(lab!, 'a', sshd, SRV6);
    await session.waitFor(/^echoed 3$/, { timeoutMs: 15_000 });
    await sshd.stop();
    assert.deepEqual(await session.stop(), { code: 255, signal: null }, session.tail());
    assert.ok(session.lines.some((l) => l.msg === `ssh: Connection to ${SRV6} closed by remote host.`), session.tail());
    assert.equal((await runCommand('ip', ['netns', 'pids', lab!.ns('srv')], 10_000)).stdout.trim(), '');
  });
});
