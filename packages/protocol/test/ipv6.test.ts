import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { formatIpv6, groupOf6, ipv4ToInt, linkLocalAddress, linkLocalIpv4, mappedAddress, mappedIpv4, parseIpv6, ulaPrefix } from '../src';

function packet6(dst: string, nextHeader = 17): Buffer {
  const p = Buffer.alloc(48);
  p[0] = 0x60;
  p[6] = nextHeader;
  parseIpv6(dst)!.copy(p, 24);
  return p;
}

describe('IPv6 in the overlay', () => {
  it('a network\'s prefix is a ULA /64 (fd, 40 bits of its identity, subnet 0), the same for the same identity', () => {
    const a = ulaPrefix(Buffer.from('network A'));
    assert.equal(a.length, 8);
    assert.equal(a[0], 0xfd);
    assert.deepEqual([a[6], a[7]], [0, 0]);
    assert.deepEqual(ulaPrefix(Buffer.from('network A')), a);
    assert.notDeepEqual(ulaPrefix(Buffer.from('network B')), a);
  });

  it('a device\'s address and link-local address carry its IPv4 lease, and map back to it only from there', () => {
    const prefix = parseIpv6('fd12:3456:789a::')!.subarray(0, 8);
    const ip = ipv4ToInt('10.0.0.5');
    assert.equal(formatIpv6(mappedAddress(prefix, ip)), 'fd12:3456:789a::a00:5');
    assert.equal(formatIpv6(linkLocalAddress(ip)), 'fe80::a00:5');
    assert.equal(mappedIpv4(mappedAddress(prefix, ip), 0, prefix), ip);
    assert.equal(linkLocalIpv4(linkLocalAddress(ip), 0), ip);
    assert.equal(mappedIpv4(parseIpv6('fd12:3456:789a::1:a00:5')!, 0, prefix), null, 'bits between the prefix and the IPv4 address');
    assert.equal(mappedIpv4(parseIpv6('fd12:3456:789b::a00:5')!, 0, prefix), null, 'another prefix');
    assert.equal(linkLocalIpv4(mappedAddress(prefix, ip), 0), null);
  });

  it('formats as RFC 5952 and parses back, for any address', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 8 }), (bytes, at, zeros) => {
      const address = Buffer.from(bytes);
      address.fill(0, at * 2, Math.min(16, (at + zeros) * 2));
      const text = formatIpv6(address);
      assert.deepEqual(parseIpv6(text), address, text);
      assert.ok(!/(^|:)0[0-9a-f]/.test(text), `no leading zeros: ${text}`);
    }), { numRuns: 2000 });
    assert.equal(formatIpv6(parseIpv6('2001:db8:0:0:1:0:0:1')!), '2001:db8::1:0:0:1');
    assert.equal(formatIpv6(Buffer.alloc(16)), '::');
    for (const bad of ['fe80::1%eth0', '::ffff:10.0.0.1', '1:2:3', 'x::1']) assert.equal(parseIpv6(bad), null, bad);
  });

  it('ff02::fb and ff02::c over UDP are the mDNS and SSDP groups; other multicast (MLD, solicitations) is not carried', () => {
    assert.equal(groupOf6(packet6('ff02::fb'), 0), 0);
    assert.equal(groupOf6(packet6('ff02::c'), 0), 1);
    assert.equal(groupOf6(packet6('ff02::16', 0), 0), -2);
    assert.equal(groupOf6(packet6('ff02::2', 58), 0), -2);
    assert.equal(groupOf6(packet6('ff02::fb', 0), 0), -2, 'behind an extension header');
    assert.equal(groupOf6(packet6('ff05::c'), 0), -2, 'site scope');
    assert.equal(groupOf6(packet6('fd00::1'), 0), -1);
  });
});
