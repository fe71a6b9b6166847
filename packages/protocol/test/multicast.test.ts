import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { groupMask, groupOf, groupsOf, ipv4ToInt, MULTICAST_GROUPS, NOT_CARRIED, NOT_GROUP, parseSubnet, reflectionDigest } from '../src';

const SUBNET = parseSubnet('10.7.0.0/24');

function udp(src: string, dst: string, payload: string, options: { protocol?: number; ports?: [number, number]; id?: number; checksum?: number; fragment?: number } = {}): Buffer {
  const body = Buffer.from(payload);
  const packet = Buffer.alloc(28 + body.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(options.id ?? 0, 4);
  packet.writeUInt16BE(options.fragment ?? 0, 6);
  packet[8] = 255;
  packet[9] = options.protocol ?? 17;
  packet.writeUInt32BE(ipv4ToInt(src), 12);
  packet.writeUInt32BE(ipv4ToInt(dst), 16);
  const [sport, dport] = options.ports ?? [5353, 5353];
  packet.writeUInt16BE(sport, 20);
  packet.writeUInt16BE(dport, 22);
  packet.writeUInt16BE(8 + body.length, 24);
  packet.writeUInt16BE(options.checksum ?? 0, 26);
  body.copy(packet, 28);
  return packet;
}

describe('multicast groups', () => {
  it('names the carried group of UDP to mDNS, SSDP and the broadcasts; other multicast and IGMP are not carried; unicast is no group', () => {
    const cases: Array<[string, number, number?]> = [
      ['224.0.0.251', 0], ['239.255.255.250', 1], ['10.7.0.255', 2], ['255.255.255.255', 2],
      ['224.0.0.22', NOT_CARRIED], ['239.1.2.3', NOT_CARRIED], ['10.7.0.0', NOT_CARRIED], ['224.0.0.251', NOT_CARRIED, 2],
      ['10.7.0.9', NOT_GROUP], ['10.8.0.255', NOT_GROUP],
    ];
    for (const [dst, expected, protocol] of cases) {
      assert.equal(groupOf(udp('10.7.0.5', dst, 'x', { protocol }), 0, SUBNET), expected, `${dst} protocol ${protocol ?? 17}`);
    }
    assert.deepEqual(MULTICAST_GROUPS.map((_, i) => MULTICAST_GROUPS[groupOf(udp('10.7.0.5', ['224.0.0.251', '239.255.255.250', '10.7.0.255'][i]!, 'x'), 0, SUBNET)]), [...MULTICAST_GROUPS]);
  });

  it('a group mask holds the groups it was made of', () => {
    assert.deepEqual(groupsOf(groupMask(['broadcast', 'mdns'])), ['mdns', 'broadcast']);
    assert.equal(groupMask([]), 0);
  });

  it('a reflection has the digest of its original: source, IP identification and UDP checksum do not count', () => {
    const original = reflectionDigest(udp('10.7.0.5', '224.0.0.251', 'answer', { id: 1, checksum: 0x1234 }), 0, 34);
    assert.equal(reflectionDigest(udp('10.7.0.6', '224.0.0.251', 'answer', { id: 99, checksum: 0x9999 }), 0, 34), original);
    assert.notEqual(reflectionDigest(udp('10.7.0.5', '224.0.0.251', 'answex'), 0, 34), original, 'payload');
    assert.notEqual(reflectionDigest(udp('10.7.0.5', '239.255.255.250', 'answer'), 0, 34), original, 'group');
    assert.notEqual(reflectionDigest(udp('10.7.0.5', '224.0.0.251', 'answer', { ports: [40000, 5353] }), 0, 34), original, 'source port');
  });

  it('a fragment is digested whole (it has no UDP header to skip)', () => {
    const a = udp('10.7.0.5', '224.0.0.251', 'part', { fragment: 0x2000 | 0, checksum: 1 });
    const b = udp('10.7.0.5', '224.0.0.251', 'part', { fragment: 0x2000 | 0, checksum: 2 });
    assert.notEqual(reflectionDigest(a, 0, a.length), reflectionDigest(b, 0, b.length));
  });
});
