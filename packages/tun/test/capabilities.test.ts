/**
 * clearAmbientCapabilities() and clearInheritableCapabilities() in a process holding CAP_NET_ADMIN the way
 * the packaged client does (systemd's User= with AmbientCapabilities=, reproduced with setpriv): what the
 * process keeps, and what a program it execs starts with. The child (test/caps-child.ts) runs in its own
 * network namespace, since it configures a TUN device. Needs root; skipped otherwise.
 */
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const skip = process.getuid?.() !== 0 ? 'needs root (network namespace, setpriv to another user)'
  : !fs.existsSync('/dev/net/tun') ? 'no /dev/net/tun' : false;
const NET_ADMIN = '0000000000001000';
const NONE = '0000000000000000';
/** User nobody keeping CAP_NET_ADMIN permitted, effective, inheritable and ambient, as systemd gives the packaged unit. */
const AS_PACKAGED = ['--securebits=+no_setuid_fixup', '--reuid=65534', '--regid=65534', '--clear-groups',
  '--inh-caps=+net_admin', '--ambient-caps=+net_admin'];

type Sets = Record<'CapInh' | 'CapPrm' | 'CapEff' | 'CapAmb', string>;
interface Snapshot { self: Sets; child: Sets; configured: string }
interface Report { before: Snapshot; ambientCleared: Snapshot; inheritable: boolean; inheritableCleared: Snapshot }

const sets = (inh: string, prm: string, eff: string, amb: string): Sets => ({ CapInh: inh, CapPrm: prm, CapEff: eff, CapAmb: amb });

test('a daemon clearing its ambient and inheritable sets keeps CAP_NET_ADMIN for its TUN and passes none on', { skip, timeout: 30_000 }, () => {
  const ns = `mntun-${randomBytes(4).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mnedc-caps-'));
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    // /dev/net/tun is 0666 on Debian but 0600 on some hosts: the child (user nobody) gets a 0666 node of
    // its own, bound over it in the mount namespace `ip netns exec` gives it, so the host's stays as it is.
    execFileSync('mknod', ['-m', '666', path.join(dir, 'tun'), 'c', '10', '200']);
    const child = spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'mount --bind "$1" /dev/net/tun && shift && exec "$@"', 'sh', path.join(dir, 'tun'),
      'setpriv', ...AS_PACKAGED, process.execPath, path.join(__dirname, 'caps-child.js')], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(child.status, 0, child.stderr);
    const report = JSON.parse(child.stdout) as Report;

    // The threat: as started, every program the daemon runs holds CAP_NET_ADMIN.
    assert.deepEqual(report.before, { self: sets(NET_ADMIN, NET_ADMIN, NET_ADMIN, NET_ADMIN), child: sets(NET_ADMIN, NET_ADMIN, NET_ADMIN, NET_ADMIN), configured: 'ok' });
    // prctl alone (all the packaged unit's seccomp filter allows): children get no usable capability, the
    // inheritable set (inert without a file's inheritable capabilities) stays.
    assert.deepEqual(report.ambientCleared, { self: sets(NET_ADMIN, NET_ADMIN, NET_ADMIN, NONE), child: sets(NET_ADMIN, NONE, NONE, NONE), configured: 'ok' });
    assert.equal(report.inheritable, true);
    assert.deepEqual(report.inheritableCleared, { self: sets(NONE, NET_ADMIN, NET_ADMIN, NONE), child: sets(NONE, NONE, NONE, NONE), configured: 'ok' });
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
