/** Offloaded IPv6: TCPV6 and UDP_L4 super-packets and partial checksums, checked and segmented as Linux would. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import {
  checkOffloadPacket, FrameType, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, HEADER_BYTES, internetChecksum, MIN_GSO_SIZE,
  onesSum, parseIpv6, segmentCount, toDataFrames, VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '../src';

const TCP = 6;
const UDP = 17;
const SRC = parseIpv6('fd12:3456:789a::a00:7')!;
const DST = parseIpv6('fd12:3456:789a::a00:9')!;

/** [virtio header][IPv6][TCP or UDP][payload] as a sender's TUN hands it over: the L4 field holding the pseudo-header sum. */
function build6(protocol: number, payload: Buffer, gsoSize: number, seq = 1000): Buffer {
  const l4Header = protocol === TCP ? 32 : 8;
  const buf = Buffer.alloc(VNET_HDR_BYTES + 40 + l4Header + payload.length);
  const ip = VNET_HDR_BYTES;
  buf[ip] = 0x60;
  buf.writeUInt16BE(l4Header + payload.length, ip + 4);
  buf[ip + 6] = protocol;
  buf[ip + 7] = 64;
  SRC.copy(buf, ip + 8);
  DST.copy(buf, ip + 24);
  const l4 = ip + 40;
  buf.writeUInt16BE(40000, l4);
  buf.writeUInt16BE(5201, l4 + 2);
  if (protocol === TCP) {
    buf.writeUInt32BE(seq >>> 0, l4 + 4);
    buf[l4 + 12] = (l4Header / 4) << 4;
    buf[l4 + 13] = 0x18; // PSH ACK
  } else {
    buf.writeUInt16BE(Math.min(0xffff, 8 + payload.length), l4 + 4);
  }
  payload.copy(buf, l4 + l4Header);
  const csumOffset = protocol === TCP ? 16 : 6;
  buf.writeUInt16BE(onesSum(buf, ip + 8, ip + 40, protocol + l4Header + payload.length), l4 + csumOffset);
  const gso = gsoSize > 0;
  writeVnetHeader(buf, 0, {
    flags: VNET_F_NEEDS_CSUM, gsoType: gso ? (protocol === TCP ? GSO_TCPV6 : GSO_UDP_L4) : GSO_NONE,
    hdrLen: 40 + l4Header, gsoSize: gso ? gsoSize : 0, csumStart: 40, csumOffset,
  });
  return buf;
}

/** The L4 checksum of an IPv6 packet verified the slow, obvious way. */
function l4Verifies6(packet: Buffer): boolean {
  const l4 = packet.subarray(40);
  const pseudo = Buffer.alloc(40);
  packet.copy(pseudo, 0, 8, 40);
  pseudo.writeUInt32BE(l4.length, 32);
  pseudo[39] = packet[6]!;
  return internetChecksum(Buffer.concat([pseudo, l4])) === 0;
}

function frames(out: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  for (let o = 0; o < out.length;) {
    const word = out.readUInt32BE(o);
    assert.equal(word >>> 24, FrameType.Data);
    packets.push(out.subarray(o + HEADER_BYTES, o + HEADER_BYTES + (word & 0xffffff)));
    o += HEADER_BYTES + (word & 0xffffff);
  }
  return packets;
}

describe('offloaded IPv6', () => {
  it('TCPV6 and UDP_L4 super-packets become MTU-sized IPv6 packets with correct lengths, sequence numbers and checksums', () => {
    fc.assert(fc.property(fc.constantFrom(TCP, UDP), fc.integer({ min: 1, max: 20_000 }), fc.integer({ min: MIN_GSO_SIZE, max: 9000 }), fc.nat(),
      (protocol, length, gsoSize, seq) => {
        const payload = Buffer.alloc(length);
        for (let i = 0; i < length; i++) payload[i] = (i * 7 + 3) & 0xff;
        const buf = build6(protocol, payload, gsoSize, seq);
        assert.equal(checkOffloadPacket(buf, 0, buf.length), null);
        const count = segmentCount(buf, 0, buf.length);
        const packets = frames(toDataFrames(buf, 0, buf.length));
        assert.equal(packets.length, count);
        const l4Header = protocol === TCP ? 32 : 8;
        packets.forEach((packet, i) => {
          assert.equal(packet[0]! >> 4, 6);
          assert.equal(packet.readUInt16BE(4), packet.length - 40, 'payload length per segment');
          assert.ok(l4Verifies6(packet), `L4 checksum of segment ${i}`);
          if (protocol === TCP) assert.equal(packet.readUInt32BE(44), (seq + i * gsoSize) >>> 0);
          else assert.equal(packet.readUInt16BE(44), packet.length - 40, 'UDP length per segment');
        });
        assert.deepEqual(Buffer.concat(packets.map((p) => p.subarray(40 + l4Header))), payload);
      }), { numRuns: 300 });
  });

  it('a whole packet with a partial checksum is completed in place', () => {
    const buf = build6(UDP, Buffer.from('an mDNS answer'), 0);
    assert.equal(checkOffloadPacket(buf, 0, buf.length), null);
    const [packet] = frames(toDataFrames(buf, 0, buf.length));
    assert.ok(l4Verifies6(packet!));
  });

  it('refuses what does not hold: IPv4 segmentation of IPv6, a payload length that lies, extension headers, ECN on UDP', () => {
    const cases: Array<[string, (b: Buffer) => void, RegExp]> = [
      ['TCPV4 on IPv6', (b) => { b[1] = GSO_TCPV4; }, /only TCPV6 and UDP_L4 are relayed for IPv6/],
      ['a payload length beyond the packet', (b) => { b.writeUInt16BE(b.length, VNET_HDR_BYTES + 4); }, /do not fit/],
      ['a payload length short of it', (b) => { b.writeUInt16BE(100, VNET_HDR_BYTES + 4); }, /total length/],
      ['an extension header before TCP', (b) => { b[VNET_HDR_BYTES + 6] = 0; }, /TCP segmentation of IP protocol 0/],
      ['csum_start past an extension header', (b) => { b[6] = 48; }, /csum_start 48 is not the IPv6 header length 40/],
      ['ECN on UDP', (b) => { b[1] = GSO_UDP_L4 | GSO_ECN; }, /ECN/],
      ['a runt', (b) => { b.writeUInt16BE(0, VNET_HDR_BYTES + 4); }, /.+/],
    ];
    for (const [name, mutate, pattern] of cases) {
      const buf = build6(TCP, Buffer.alloc(3000, 1), 1400);
      mutate(buf);
      assert.match(checkOffloadPacket(buf, 0, buf.length) ?? 'accepted', pattern, name);
    }
    const short = build6(UDP, Buffer.alloc(10), 0).subarray(0, VNET_HDR_BYTES + 30);
    assert.match(checkOffloadPacket(short, 0, short.length)!, /do not fit/);
  });
});
