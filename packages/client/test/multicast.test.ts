import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { TunDevice } from '@mnedc/tun';
import { avahiProblem, routeGroups } from '../src/multicast';

const DEBIAN_DEFAULT = `[server]
#host-name=foo
use-ipv4=yes
use-ipv6=yes
#allow-interfaces=eth0
#deny-interfaces=eth1
ratelimit-interval-usec=1000000

[wide-area]
enable-wide-area=yes

[publish]
#allow-point-to-point=yes
`;

describe('the client and multicast', () => {
  it('names what keeps avahi off the overlay: point-to-point left out (Debian\'s default), an interface list without it, a deny list with it', () => {
    assert.match(avahiProblem(DEBIAN_DEFAULT, 'mnedc0')!, /set allow-point-to-point=yes under \[server\] in \/etc\/avahi\/avahi-daemon\.conf/);
    assert.match(avahiProblem('[publish]\nallow-point-to-point=yes\n', 'mnedc0')!, /allow-point-to-point/, 'only under [server]');
    assert.equal(avahiProblem('[server]\nallow-point-to-point = Yes # for the overlay\n', 'mnedc0'), null);
    assert.match(avahiProblem('[server]\nallow-point-to-point=yes\nallow-interfaces=eth0, wlan0\n', 'mnedc0')!, /limited to eth0, wlan0 .*add mnedc0/);
    assert.equal(avahiProblem('[server]\nallow-point-to-point=yes\nallow-interfaces=eth0,mnedc0\n', 'mnedc0'), null);
    assert.match(avahiProblem('[server]\nallow-point-to-point=yes\ndeny-interfaces=mnedc0\n', 'mnedc0')!, /leave mnedc0 out/);
  });

  it('routes mDNS and SSDP into the TUN (broadcast needs no route); a refusal is a warning, not the end', () => {
    const routes: string[] = [];
    const lines: string[] = [];
    const device = {
      name: 'mnedc0',
      addRoute: (destination: string, prefix: number) => {
        if (destination.startsWith('239.')) throw new Error('SIOCADDRT 239.255.255.250/32 dev mnedc0: Network is down');
        routes.push(`${destination}/${prefix}`);
      },
    } as unknown as TunDevice;
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push((JSON.parse(line) as { msg: string }).msg) });
    routeGroups(device, ['mdns', 'ssdp', 'broadcast'], log);
    assert.deepEqual(routes, ['224.0.0.251/32']);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^Cannot route ssdp \(239\.255\.255\.250\) into mnedc0: SIOCADDRT .*Network is down; applications that pick no interface send it to the LAN only$/);
  });
});
