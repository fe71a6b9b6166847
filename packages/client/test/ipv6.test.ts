import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { Welcome } from '@mnedc/protocol';
import type { TunConfig, TunDevice } from '@mnedc/tun';
import { applyIpv6, ipv6Overlap, parseHostIpv6 } from '../src/ipv6';

// As this machine's kernel writes them: a ULA /64 on eth0 with its address, link-local, loopback, the default route.
const IF_INET6 = `fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
`;
const IPV6_ROUTE = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
fd123456789a00000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     wg0
`;
const host = parseHostIpv6(IF_INET6, IPV6_ROUTE);

class FakeTun {
  readonly name = 'mnedc0';
  readonly calls: string[] = [];
  enableIpv6(): string | null {
    this.calls.push('enable');
    return null;
  }
  disableIpv6(): string | null {
    this.calls.push('disable');
    return null;
  }
  addAddress6(): void {}
  configure(config: TunConfig): void {
    this.calls.push(`configure ${config.address6}/${config.prefix6} ${config.linkLocal6}`);
  }
}

const welcome = (ip6?: string): Welcome => ({
  ip: '10.0.0.5', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 5000, deadAfterMs: 15000, capabilities: [], ...(ip6 ? { ip6 } : {}),
});

describe('IPv6 on the client\'s TUN', () => {
  it('reads the host\'s addresses and routes from /proc', () => {
    assert.equal(host.addresses.length, 3);
    assert.deepEqual(host.routes.map((r) => `${r.interface} /${r.length}`), ['eth0 /64', 'eth0 /64', 'eth0 /0', 'wg0 /48']);
  });

  it('refuses a /64 that holds an address of the host, or overlaps one of its routes (not the default route)', () => {
    assert.match(ipv6Overlap('fd00::a00:5', 'mnedc0', host)!, /^the overlay's fd00::\/64 holds eth0's address fd00::2$/);
    assert.match(ipv6Overlap('fd12:3456:789a::a00:5', 'mnedc0', host)!, /overlaps the route fd12:3456:789a::\/48 of wg0/);
    assert.equal(ipv6Overlap('fd99:1:2::a00:5', 'mnedc0', host), null);
    assert.equal(ipv6Overlap('fd99:1:2::a00:5', 'mnedc0', parseHostIpv6(`fd990001000200000000000000000a05 09 40 00 80   mnedc0\n`, '')), null, 'the TUN\'s own address');
  });

  it('puts the address and its link-local twin on the TUN, once; a /64 that overlaps the host leaves IPv6 off, with an error line', () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push((JSON.parse(line) as { msg: string }).msg) });
    const tun = new FakeTun();
    const device = tun as unknown as TunDevice;
    const on = applyIpv6(device, welcome('fd99:1:2::a00:5'), null, log, () => host);
    assert.equal(on, 'fd99:1:2::a00:5');
    assert.deepEqual(tun.calls, ['enable', 'configure fd99:1:2::a00:5/64 fe80::a00:5']);
    assert.equal(applyIpv6(device, welcome('fd99:1:2::a00:5'), on, log, () => host), on, 'the same again changes nothing');
    assert.equal(tun.calls.length, 2);
    assert.equal(applyIpv6(device, welcome('fd00::a00:5'), on, log, () => host), null);
    assert.deepEqual(tun.calls.slice(2), ['disable']);
    assert.ok(lines.some((l) => /^No IPv6 on the overlay for this device: the overlay's fd00::\/64 holds eth0's address fd00::2$/.test(l)), lines.join('\n'));
  });
});
