import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { buildIcmpUnreachable, ipv4ToInt, nonUnicastDestination, parseSubnet } from '../src';

const SERVER = ipv4ToInt('10.0.0.1');

function udp(src: string, dst: string): Buffer {
  const packet = Buffer.alloc(28);
  packet[0] = 0x45; packet.writeUInt16BE(28, 2); packet[8] = 64; packet[9] = 17;
  packet.writeUInt32BE(ipv4ToInt(src), 12); packet.writeUInt32BE(ipv4ToInt(dst), 16);
  return packet;
}

describe('destinations that are no single host (RFC 1122 3.2.2)', () => {
  const subnet = parseSubnet('10.0.0.0/24');

  it('tells multicast and broadcast from unicast', () => {
    const cases: Array<[string, 'multicast' | 'broadcast' | null]> = [
      ['224.0.0.251', 'multicast'], ['224.0.0.22', 'multicast'], ['239.255.255.250', 'multicast'], ['224.0.0.1', 'multicast'],
      ['255.255.255.255', 'broadcast'], ['10.0.0.255', 'broadcast'], ['10.0.0.0', 'broadcast'],
      ['10.0.0.2', null], ['10.0.0.254', null], ['10.0.1.255', null], ['223.255.255.255', null], ['240.0.0.1', null],
    ];
    for (const [ip, expected] of cases) assert.equal(nonUnicastDestination(ipv4ToInt(ip), subnet), expected, ip);
  });

  it('knows the broadcast of other prefix lengths', () => {
    const wide = parseSubnet('172.16.0.0/16');
    assert.equal(nonUnicastDestination(ipv4ToInt('172.16.255.255'), wide), 'broadcast');
    assert.equal(nonUnicastDestination(ipv4ToInt('172.16.0.255'), wide), null);
    const narrow = parseSubnet('192.168.7.4/30');
    assert.equal(nonUnicastDestination(ipv4ToInt('192.168.7.7'), narrow), 'broadcast');
    assert.equal(nonUnicastDestination(ipv4ToInt('192.168.7.6'), narrow), null);
  });

  it('builds no ICMP error for a packet to or from an address that is no single host', () => {
    assert.ok(buildIcmpUnreachable(udp('10.0.0.2', '10.0.0.77'), SERVER, 1), 'unicast both ways gets one');
    for (const dst of ['224.0.0.251', '255.255.255.255', '239.1.2.3', '0.0.0.0', '0.1.2.3', '127.0.0.1', '240.0.0.1']) {
      assert.equal(buildIcmpUnreachable(udp('10.0.0.2', dst), SERVER, 1), null, `to ${dst}`);
    }
    for (const src of ['0.0.0.0', '0.0.0.9', '127.0.0.1', '224.0.0.251', '255.255.255.255', '250.1.1.1']) {
      assert.equal(buildIcmpUnreachable(udp(src, '10.0.0.77'), SERVER, 1), null, `from ${src}`);
    }
  });
});
