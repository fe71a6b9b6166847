/**
 * What a device holding the join string can do to the other devices' names and hooks: hostile devices
 * join the real relay with chosen device IDs and hostnames, and the real clients' hosts files keep every
 * honest device's name; the real client's hooks run without its capabilities.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Daemon, DEVICES, SERVER_PORT, type Device } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab } from './lab-suite';

const HOSTILE = path.join(__dirname, 'hostile-device.js');
const ZERO = '0000000000000000';

/** The hosts file's entries (comments dropped), keyed by address. */
function hostsEntries(file: string): Map<string, string> {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  return new Map(lines.map((l) => [l.slice(0, l.indexOf('\t')), l]));
}

describe('names and hooks against hostile devices in the lab', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  // Debug on a: it says when each hook has run.
  const ctx = withOverlayLab({ clients: { a: { extra: '[log]\nlevel = debug\n' } } });

  it('hostile device IDs and hostnames neither take nor blank an honest device\'s names; hooks run without capabilities', async () => {
    // The hosts file is rewritten in the same turn of the event loop as a client logs a peer: any later
    // answer from the daemon means the file is on disk.
    const settled = async (device: Device, peers: string[]): Promise<void> => {
      for (const peer of peers) await ctx.overlay.client(device).waitFor(new RegExp(`^Peer ${peer.replace(/\./g, '\\.')} .* is up at `));
      assert.equal((await ctx.overlay.ctl(device, ['status'])).code, 0);
    };
    for (const device of DEVICES) await settled(device, DEVICES.filter((d) => d !== device).map((d) => `device-${d}`));
    // Every device's own line, and its line for every other device, as they are before the attack.
    const honest = (device: Device) => hostsEntries(ctx.overlay.hostsFile(device));
    const before = new Map(DEVICES.map((d) => [d, honest(d)]));
    for (const device of DEVICES) {
      for (const other of DEVICES) {
        assert.match(before.get(device)!.get(ctx.ips[other]) ?? '', new RegExp(`^${ctx.ips[other].replace(/\./g, '\\.')}\\tdevice-${other}\\.mnedc( |$)`),
          `${device}'s hosts file names device-${other}`);
      }
    }

    // A hook on a that records what it runs with; the hostile devices' arrival runs it.
    const record = path.join(ctx.overlay.dir, 'hook-caps');
    const hook = path.join(ctx.overlay.hookDir('a'), '50-caps');
    writeFileSync(hook, `#!/bin/sh\n[ "$MNEDC_PEER_ID" = DEVICE-B ] || exit 0\n{ grep ^Cap /proc/self/status; echo "Uid: $(id -u)"; } > ${record}\n`);
    chmodSync(hook, 0o755);

    const hostile = [
      { deviceId: 'DEVICE-B', hostname: 'device-c' }, // sanitises onto device-b; its hostname is device-c's ID
      { deviceId: 'device_d', hostname: 'device-a.mnedc' }, // sanitises onto device-d; its hostname's label is device-a
      { deviceId: 'Device.C', hostname: `evil\n${ctx.ips.b}\tdevice-b.mnedc\u001b[2J` }, // a name of its own; a hostname trying to add a line
    ];
    const attacker = new Daemon('hostile devices', ctx.lab.spawn('srv', [process.execPath, HOSTILE, String(SERVER_PORT), ctx.overlay.join, JSON.stringify(hostile)], { pipe: true }));
    try {
      const ips = new Map<string, string>();
      for (const { deviceId } of hostile) ips.set(deviceId, String((await attacker.waitFor(new RegExp(`^joined ${deviceId.replace(/\./g, '\\.')}$`))).ip));
      for (const device of DEVICES) await settled(device, hostile.map((h) => h.deviceId));
      for (const device of DEVICES) {
        const after = honest(device);
        for (const other of DEVICES) {
          assert.equal(after.get(ctx.ips[other]), before.get(device)!.get(ctx.ips[other]), `${device}'s line for device-${other} changed`);
        }
        // The hostile devices get only what no honest device has: Device.C its own name and its hostname's first label.
        assert.equal(after.get(ips.get('DEVICE-B')!), undefined);
        assert.equal(after.get(ips.get('device_d')!), undefined);
        assert.equal(after.get(ips.get('Device.C')!), `${ips.get('Device.C')}\tdevice.c.mnedc evil-10.mnedc evil-10`);
        assert.equal(after.size, before.get(device)!.size + 1, [...after.values()].join('\n'));
      }

      await ctx.overlay.client('a').waitFor(/^Hook 50-caps ran for peer DEVICE-B up/);
      const caps = Object.fromEntries(readFileSync(record, 'utf8').trim().split('\n').map((l) => l.split(/:\s*/) as [string, string]));
      assert.deepEqual([caps.Uid, caps.CapInh, caps.CapPrm, caps.CapEff, caps.CapBnd, caps.CapAmb], ['0', ZERO, ZERO, ZERO, ZERO, ZERO], JSON.stringify(caps));
    } finally {
      attacker.signal('SIGTERM');
      await attacker.waitExit();
    }
  });
});
