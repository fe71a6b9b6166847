import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { isDnsName } from '@mnedc/protocol';
import { assignNames, hostnameLabel, renderHosts, type Device } from '../src/hosts';

const dev = (deviceId: string, ip: string, hostname = ''): Device => ({ deviceId, ip, hostname });

/** The hosts file without its comments, as "ip<TAB>names" lines. */
function entries(self: Device | null, peers: Device[]): string[] {
  return renderHosts(self, peers).split('\n').filter((l) => l && !l.startsWith('#'));
}

describe('hosts file names', () => {
  it('a hostname or device ID chosen to collide never takes or blanks another device\'s <id>.mnedc', () => {
    const self = dev('device-a', '10.0.0.2', 'alpha');
    const honest = [dev('device-b', '10.0.0.3', 'bravo'), dev('device-c', '10.0.0.4', 'charlie')];
    const hostile = [
      dev('DEVICE-B', '10.0.0.10', 'device-c'), // sanitises onto device-b; hostname is device-c's ID
      dev('device_b', '10.0.0.11', 'device-b.mnedc'), // sanitises onto device-b; hostname's first label is device-b
      dev('Device.B', '10.0.0.12', 'localhost'), // a name of its own: device.b
      dev('evil', '10.0.0.13', 'device-a'), // hostname is this device's ID
    ];
    assert.deepEqual(entries(self, [...honest, ...hostile]), [
      '10.0.0.2\tdevice-a.mnedc alpha.mnedc alpha',
      '10.0.0.3\tdevice-b.mnedc bravo.mnedc bravo',
      '10.0.0.4\tdevice-c.mnedc charlie.mnedc charlie',
      '10.0.0.12\tdevice.b.mnedc',
      '10.0.0.13\tevil.mnedc',
    ]);
  });

  it('a sanitised device ID is taken only where no canonical ID and no other device claims it, and beats hostnames', () => {
    const peers = [
      dev('Dev_X', '10.0.0.5'),
      dev('DEV_Y', '10.0.0.6'),
      dev('dev:y', '10.0.0.7'), // both sanitise to dev-y: neither gets it
      dev('z', '10.0.0.8', 'dev-x'), // a hostname equal to an ID's name gives nothing
      dev('w', '10.0.0.9', 'dev-y'), // even if that ID's name went to nobody
      dev('@@@', '10.0.0.10', 'plain'), // an ID with no usable character: named by its hostname alone
    ];
    assert.deepEqual(entries(null, peers), [
      '10.0.0.5\tdev-x.mnedc', '10.0.0.8\tz.mnedc', '10.0.0.9\tw.mnedc', '10.0.0.10\tplain.mnedc plain',
    ]);
    assert.deepEqual(entries(null, peers.filter((p) => p.deviceId !== 'DEV_Y')).slice(0, 2), ['10.0.0.5\tdev-x.mnedc', '10.0.0.7\tdev-y.mnedc']);
  });

  it('hostnames give their first label, where unique, never a loopback name, a number or another device\'s ID name', () => {
    const self = dev('kitchen', '10.0.0.2', 'kitchen'); // a device's own ID and hostname may agree
    const peers = [
      dev('p1', '10.0.0.3', 'Kitchen.example.org'),
      dev('p2', '10.0.0.4', 'ip6-localhost'),
      dev('p3', '10.0.0.5', '1234'),
      dev('p4', '10.0.0.6', 'web.lan'),
      dev('p5', '10.0.0.7', 'db'),
      dev('p6', '10.0.0.8', 'DB'),
    ];
    assert.deepEqual(entries(self, peers), [
      '10.0.0.2\tkitchen.mnedc kitchen',
      '10.0.0.3\tp1.mnedc',
      '10.0.0.4\tp2.mnedc',
      '10.0.0.5\tp3.mnedc',
      '10.0.0.6\tp4.mnedc web.mnedc web',
      '10.0.0.7\tp5.mnedc',
      '10.0.0.8\tp6.mnedc',
    ]);
    assert.equal(hostnameLabel('LOCALHOST.localdomain'), '');
    assert.equal(hostnameLabel('host\nname'), 'host-name');
  });

  it('whatever the devices claim: one address per name, every canonical ID named, only RFC 1123 names (fast-check)', () => {
    const pieces = ['a', 'A', 'a.b', 'A_B', 'a-b', 'b', 'B.', 'x:y', 'x-y', 'localhost', '7', 'é', 'a\nb', '-'];
    const device = fc.record({ deviceId: fc.constantFrom(...pieces.filter((p) => /^[A-Za-z0-9]/.test(p) && !p.includes('\n'))), hostname: fc.constantFrom(...pieces, '') });
    // The relay gives each device ID to one session: IDs are unique.
    const devices = fc.uniqueArray(device, { selector: (d) => d.deviceId, maxLength: 10 });
    fc.assert(fc.property(devices, (list) => {
      const named = list.map((d, i) => dev(d.deviceId, `10.0.0.${i + 2}`, d.hostname));
      const names = assignNames(named);
      const owner = new Map<string, number>();
      names.forEach((own, i) => {
        for (const name of own) {
          assert.ok(!owner.has(name) || owner.get(name) === i, `${name} given to two devices`);
          owner.set(name, i);
          assert.ok(isDnsName(name), `${JSON.stringify(name)} is not an RFC 1123 name`);
        }
        if (isDnsName(named[i]!.deviceId)) assert.ok(own.includes(`${named[i]!.deviceId}.mnedc`), `${named[i]!.deviceId} lost its name`);
      });
    }), { numRuns: 3000 });
  });
});
