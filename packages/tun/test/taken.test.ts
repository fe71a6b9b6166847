import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fdinfoInterface, findTunHolders, linkKind, takenMessage, type TakenFacts } from '../src';

const TUN_FDINFO = 'pos:\t0\nflags:\t0104002\nmnt_id:\t25\nino:\t1033\niff:\tmnedc0\n';

describe('who holds a TUN interface name', () => {
  const proc = mkdtempSync(join(tmpdir(), 'mnedc-proc-'));
  after(() => rmSync(proc, { recursive: true, force: true }));

  /** A fake /proc/PID with descriptors: [target, fdinfo], in the network namespace `netns`. */
  function processWith(pid: number | 'self', cmdline: string[], fds: Array<[string, string]>, netns = 'net:[4026531840]'): void {
    mkdirSync(join(proc, String(pid), 'fd'), { recursive: true });
    mkdirSync(join(proc, String(pid), 'ns'), { recursive: true });
    symlinkSync(netns, join(proc, String(pid), 'ns', 'net'));
    mkdirSync(join(proc, String(pid), 'fdinfo'), { recursive: true });
    writeFileSync(join(proc, String(pid), 'cmdline'), `${cmdline.join('\0')}\0`);
    fds.forEach(([target, info], fd) => {
      symlinkSync(target, join(proc, String(pid), 'fd', String(fd)));
      writeFileSync(join(proc, String(pid), 'fdinfo', String(fd)), info);
    });
  }

  it('reads the interface of a TUN descriptor from its fdinfo', () => {
    assert.equal(fdinfoInterface(TUN_FDINFO), 'mnedc0');
    assert.equal(fdinfoInterface('pos:\t0\nflags:\t02\n'), null, 'a TUN fd not bound to any interface yet');
  });

  it('finds the processes with that TUN open, with their command lines', () => {
    processWith(4242, ['node', '/usr/sbin/mnedcd-client', '--config', '/etc/mnedc/client.ini'], [['/dev/null', 'pos:\t0\n'], ['/dev/net/tun', TUN_FDINFO]]);
    processWith(4343, ['openvpn', '--dev', 'tun7'], [['/dev/net/tun', TUN_FDINFO.replace('mnedc0', 'tun7')]]);
    processWith(4444, ['cat'], [['/tmp/iff-mnedc0', TUN_FDINFO]]);
    processWith(4545, ['mnedcd-client', 'in another namespace'], [['/dev/net/tun', TUN_FDINFO]], 'net:[4026532999]');
    processWith('self', ['node'], []);
    assert.deepEqual(findTunHolders('mnedc0', proc), [{ pid: 4242, command: 'node /usr/sbin/mnedcd-client --config /etc/mnedc/client.ini' }]);
    assert.deepEqual(findTunHolders('tun7', proc).map((h) => h.pid), [4343]);
    assert.deepEqual(findTunHolders('mnedc1', proc), []);
    assert.deepEqual(findTunHolders('mnedc0', join(proc, 'missing')), [], 'no /proc: nothing found, nothing thrown');
  });

  it('tells the kind of an existing interface from ip -d -j link', () => {
    const tun = '[{"ifname":"x","link_type":"none","linkinfo":{"info_kind":"tun","info_data":{"type":"tun","persist":true}}}]';
    assert.equal(linkKind(tun), 'tun');
    assert.equal(linkKind(tun.replace('"type":"tun"', '"type":"tap"')), 'tap');
    assert.equal(linkKind('[{"ifname":"x","link_type":"ether","linkinfo":{"info_kind":"veth"}}]'), 'veth');
    assert.equal(linkKind('[{"ifname":"eth0","link_type":"ether"}]'), 'ether device');
    assert.equal(linkKind('not json'), null);
  });

  it('says who holds the name and which setting to change', () => {
    const facts: TakenFacts = {
      name: 'mnedc0', setting: '[client] interface in /etc/mnedc/client.ini', holders: [], kind: 'tun',
      error: 'TUNSETIFF mnedc0: Device or resource busy', busy: true,
    };
    assert.equal(takenMessage({ ...facts, holders: [{ pid: 4242, command: 'node /usr/sbin/mnedcd-server --config /etc/mnedc/server.ini' }] }),
      'interface mnedc0 is taken: pid 4242 (node /usr/sbin/mnedcd-server --config /etc/mnedc/server.ini) has it open as its TUN device; ' +
      'set another name with [client] interface in /etc/mnedc/client.ini, or stop that process');
    assert.match(takenMessage(facts)!, /^interface mnedc0 is taken: another process has it open as its TUN device \(this daemon cannot see which: .*set another name with \[client\] interface in \/etc\/mnedc\/client\.ini/);
    const veth = takenMessage({ ...facts, kind: 'veth', busy: false, error: 'TUNSETIFF mnedc0: Invalid argument' });
    assert.equal(veth, 'interface mnedc0 is taken: a veth interface of that name exists, not a TUN device this daemon can attach to; ' +
      'set another name with [client] interface in /etc/mnedc/client.ini, or remove that interface (TUNSETIFF mnedc0: Invalid argument)');
    assert.equal(takenMessage({ ...facts, kind: undefined, busy: false, error: 'TUNSETIFF mnedc0: Operation not permitted' }), null,
      'no such interface and nobody holding it: the name is not the problem');
  });
});
