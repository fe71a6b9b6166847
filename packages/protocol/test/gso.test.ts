import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import {
  checkOffloadPacket, FrameType, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, HEADER_BYTES,
  internetChecksum, MIN_GSO_SIZE, onesSum, segmentCount, toDataFrames, VNET_F_DATA_VALID,
  VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader, type VnetHeader,
} from '../src';

const TCP = 6;
const UDP = 17;
const SRC = [10, 0, 0, 7];
const DST = [10, 0, 0, 9];

interface PacketSpec {
  protocol: number;
  payload: Buffer;
  gsoSize: number;
  ipOptions: number;
  tcpOptions: number;
  tcpFlags: number;
  id: number;
  seq: number;
  /** Room before the packet, so the checksum code meets every alignment. */
  lead: number;
  ecn: boolean;
  df: boolean;
}

/** Reference sum for a pseudo-header + segment, the slow obvious way. */
function l4Verifies(packet: Buffer): boolean {
  const ihl = (packet[0]! & 0x0f) * 4;
  const l4 = packet.subarray(ihl);
  const pseudo = Buffer.alloc(12);
  packet.copy(pseudo, 0, 12, 20);
  pseudo[9] = packet[9]!;
  pseudo.writeUInt16BE(l4.length, 10);
  return internetChecksum(Buffer.concat([pseudo, l4])) === 0;
}

/**
 * Builds [lead bytes][virtio header][IPv4][TCP or UDP][payload] as a Linux sender's TUN would hand it
 * over: IPv4 header checksum complete, the L4 checksum field holding only the pseudo-header sum.
 */
function buildOffloaded(spec: PacketSpec, gso = true): { buf: Buffer; at: number; end: number } {
  const ihl = 20 + spec.ipOptions;
  const l4Header = spec.protocol === TCP ? 20 + spec.tcpOptions : 8;
  const length = ihl + l4Header + spec.payload.length;
  const buf = Buffer.alloc(spec.lead + VNET_HDR_BYTES + length);
  const ip = spec.lead + VNET_HDR_BYTES;
  buf[ip] = 0x40 | (ihl / 4);
  buf.writeUInt16BE(length, ip + 2);
  buf.writeUInt16BE(spec.id, ip + 4);
  if (spec.df) buf[ip + 6] = 0x40;
  buf[ip + 8] = 64;
  buf[ip + 9] = spec.protocol;
  Buffer.from(SRC).copy(buf, ip + 12);
  Buffer.from(DST).copy(buf, ip + 16);
  for (let i = 20; i < ihl; i++) buf[ip + i] = 1; // NOP options
  buf.writeUInt16BE(internetChecksum(buf, ip, ip + ihl), ip + 10);
  const l4 = ip + ihl;
  let csumOffset: number;
  if (spec.protocol === TCP) {
    buf.writeUInt16BE(40000, l4);
    buf.writeUInt16BE(5201, l4 + 2);
    buf.writeUInt32BE(spec.seq >>> 0, l4 + 4);
    buf.writeUInt32BE(12345, l4 + 8);
    buf[l4 + 12] = (l4Header / 4) << 4;
    buf[l4 + 13] = spec.tcpFlags;
    buf.writeUInt16BE(502, l4 + 14);
    for (let i = 20; i < l4Header; i++) buf[l4 + i] = 1;
    csumOffset = 16;
  } else {
    buf.writeUInt16BE(40000, l4);
    buf.writeUInt16BE(4433, l4 + 2);
    buf.writeUInt16BE(Math.min(0xffff, length - ihl), l4 + 4);
    csumOffset = 6;
  }
  spec.payload.copy(buf, l4 + l4Header);
  // Partial checksum: the folded pseudo-header sum, not complemented (what the kernel leaves).
  const pseudo = onesSum(buf, ip + 12, ip + 20, spec.protocol + (length - ihl));
  buf.writeUInt16BE(pseudo, l4 + csumOffset);
  const header: VnetHeader = {
    flags: VNET_F_NEEDS_CSUM,
    gsoType: gso ? (spec.protocol === TCP ? GSO_TCPV4 | (spec.ecn ? GSO_ECN : 0) : GSO_UDP_L4) : GSO_NONE,
    hdrLen: ihl + l4Header,
    gsoSize: gso ? spec.gsoSize : 0,
    csumStart: ihl,
    csumOffset,
  };
  writeVnetHeader(buf, spec.lead, header);
  return { buf, at: spec.lead, end: buf.length };
}

function splitFrames(frames: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  let o = 0;
  while (o < frames.length) {
    const word = frames.readUInt32BE(o);
    assert.equal(word >>> 24, FrameType.Data, 'every frame is DATA');
    const length = word & 0xffffff;
    const packet = frames.subarray(o + HEADER_BYTES, o + HEADER_BYTES + length);
    assert.equal(packet.length, length, 'frame runs past the buffer');
    packets.push(packet);
    o += HEADER_BYTES + length;
  }
  return packets;
}

function specArb(protocol: number): fc.Arbitrary<PacketSpec> {
  return fc.record({
    protocol: fc.constant(protocol),
    ipOptions: fc.constantFrom(0, 0, 0, 4, 40),
    tcpOptions: fc.constantFrom(0, 12, 12, 40),
    gsoSize: fc.oneof(fc.constantFrom(1360, 1348, 1472, MIN_GSO_SIZE, 8960), fc.integer({ min: MIN_GSO_SIZE, max: 9000 })),
    payloadLength: fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 65535 - 120 }), fc.constantFrom(1, 1360, 1361, 2720, 65535 - 120)),
    tcpFlags: fc.integer({ min: 0, max: 255 }),
    id: fc.integer({ min: 0, max: 0xffff }),
    seq: fc.integer({ min: 0, max: 0xffffffff }),
    lead: fc.integer({ min: 0, max: 7 }),
    ecn: fc.boolean(),
    df: fc.boolean(),
    seed: fc.integer({ min: 0, max: 255 }),
  }).map(({ payloadLength, seed, ...rest }) => {
    const payload = Buffer.alloc(payloadLength);
    for (let i = 0; i < payloadLength; i++) payload[i] = (i * 31 + seed) & 0xff;
    return { ...rest, payload, ecn: protocol === TCP && rest.ecn };
  }).filter((s) => s.payload.length + 20 + s.ipOptions + (protocol === TCP ? 20 + s.tcpOptions : 8) <= 65535);
}

/** Everything a receiver sees must hold; returns the segments' payloads. */
function checkSegments(spec: PacketSpec, packets: Buffer[]): Buffer[] {
  const ihl = 20 + spec.ipOptions;
  const l4Header = spec.protocol === TCP ? 20 + spec.tcpOptions : 8;
  const payloads: Buffer[] = [];
  packets.forEach((packet, i) => {
    const last = i === packets.length - 1;
    assert.equal(packet.readUInt16BE(2), packet.length, 'IPv4 total length');
    assert.equal(internetChecksum(packet, 0, ihl), 0, `IPv4 header checksum of segment ${i}`);
    assert.equal(packet.readUInt16BE(4), (spec.id + i) & 0xffff, 'IPv4 ID increments per segment');
    assert.equal(packet[6]! & 0x40, spec.df ? 0x40 : 0, 'DF kept');
    assert.deepEqual([...packet.subarray(12, 20)], [...SRC, ...DST]);
    assert.ok(l4Verifies(packet), `L4 checksum of segment ${i} of ${packets.length}`);
    const payload = packet.subarray(ihl + l4Header);
    if (!last) assert.equal(payload.length, spec.gsoSize, 'full segments but the last');
    assert.ok(payload.length <= spec.gsoSize);
    if (spec.protocol === TCP) {
      assert.equal(packet.readUInt32BE(ihl + 4), (spec.seq + i * spec.gsoSize) >>> 0, 'sequence numbers advance');
      const flags = packet[ihl + 13]!;
      let expected = spec.tcpFlags;
      if (!last) expected &= ~0x09;
      if (i > 0) expected &= ~0x80;
      assert.equal(flags, expected, `TCP flags of segment ${i}`);
    } else {
      assert.equal(packet.readUInt16BE(ihl + 4), packet.length - ihl, 'UDP length per segment');
    }
    payloads.push(payload);
  });
  return payloads;
}

describe('onesSum', () => {
  it('equals the byte-pair reference for every start, end and alignment', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.nat(), fc.nat(), fc.integer({ min: 0, max: 7 }), fc.nat({ max: 0xffff }),
      (bytes, a, b, lead, initial) => {
        const backing = Buffer.alloc(bytes.length + lead);
        backing.set(bytes, lead);
        const data = backing.subarray(lead);
        const start = bytes.length ? a % (bytes.length + 1) : 0;
        const end = start + (bytes.length - start ? b % (bytes.length - start + 1) : 0);
        const reference = ~internetChecksum(data, start, end) & 0xffff;
        let expected = reference + initial;
        while (expected > 0xffff) expected = (expected & 0xffff) + (expected >>> 16);
        const got = onesSum(data, start, end, initial);
        // 0 and 0xffff are the same number in ones' complement.
        assert.equal(got % 0xffff, expected % 0xffff);
      }), { numRuns: 3000 });
  });

  it('sums 64 KB of 0xff without losing carries', () => {
    const data = Buffer.alloc(65536, 0xff);
    assert.equal(onesSum(data, 0, data.length), 0xffff);
    assert.equal(onesSum(data, 1, 65535) % 0xffff, 0);
  });
});

describe('segmentation of offloaded super-packets', () => {
  for (const [name, protocol] of [['TCP', TCP], ['UDP', UDP]] as const) {
    it(`${name}: segments have correct checksums, headers and sizes and reassemble to the payload`, () => {
      fc.assert(fc.property(specArb(protocol), (spec) => {
        const { buf, at, end } = buildOffloaded(spec);
        assert.equal(checkOffloadPacket(buf, at, end), null);
        const frames = toDataFrames(buf, at, end);
        const packets = splitFrames(frames);
        assert.equal(packets.length, segmentCount(buf, at, end));
        assert.equal(packets.length, Math.max(1, Math.ceil(spec.payload.length / spec.gsoSize)));
        assert.ok(Buffer.concat(checkSegments(spec, packets)).equals(spec.payload), 'payload reassembles');
      }), { numRuns: 400 });
    });
  }

  it('a full 64 KB TCP super-packet at MSS 1360 becomes 48 frames', () => {
    const payload = randomBytes(65535 - 20 - 32);
    const spec: PacketSpec = { protocol: TCP, payload, gsoSize: 1360, ipOptions: 0, tcpOptions: 12, tcpFlags: 0x18, id: 0xfffe, seq: 0xffffff00, lead: 3, ecn: false, df: true };
    const { buf, at, end } = buildOffloaded(spec);
    const packets = splitFrames(toDataFrames(buf, at, end));
    assert.equal(packets.length, 49);
    assert.ok(Buffer.concat(checkSegments(spec, packets)).equals(payload));
  });

  it('completes a partial checksum in place for a packet without segmentation', () => {
    fc.assert(fc.property(specArb(TCP), specArb(UDP), fc.boolean(), (tcp, udp, pickTcp) => {
      const spec = pickTcp ? tcp : udp;
      const { buf, at, end } = buildOffloaded(spec, false);
      assert.equal(checkOffloadPacket(buf, at, end), null);
      const before = Buffer.from(buf.subarray(at + VNET_HDR_BYTES));
      const frames = toDataFrames(buf, at, end);
      assert.equal(frames.buffer, buf.buffer, 'a view, not a copy');
      const [packet] = splitFrames(frames);
      assert.ok(packet && l4Verifies(packet), 'checksum complete');
      const checksumAt = 20 + spec.ipOptions + (spec.protocol === TCP ? 16 : 6);
      // Only the checksum field changed.
      before.writeUInt16BE(packet.readUInt16BE(checksumAt), checksumAt);
      assert.ok(before.equals(packet));
    }), { numRuns: 300 });
  });

  it('passes a packet with a plain (all-zero) header through unchanged', () => {
    const spec: PacketSpec = { protocol: UDP, payload: Buffer.from('hello'), gsoSize: 0, ipOptions: 0, tcpOptions: 0, tcpFlags: 0, id: 1, seq: 0, lead: 0, ecn: false, df: false };
    const { buf, at, end } = buildOffloaded(spec, false);
    buf.fill(0, at, at + VNET_HDR_BYTES);
    const packet = Buffer.from(buf.subarray(at + VNET_HDR_BYTES));
    const [out] = splitFrames(toDataFrames(buf, at, end));
    assert.ok(out!.equals(packet));
  });
});

describe('checkOffloadPacket refuses what a relay must not pass on', () => {
  const good = (): PacketSpec => ({ protocol: TCP, payload: Buffer.alloc(4000, 7), gsoSize: 1360, ipOptions: 0, tcpOptions: 0, tcpFlags: 0x10, id: 5, seq: 9, lead: 0, ecn: false, df: true });
  const ip = VNET_HDR_BYTES;
  const cases: Array<[string, (buf: Buffer) => Buffer, RegExp]> = [
    ['unknown virtio flags', (b) => { b[0] = 0x04 | VNET_F_NEEDS_CSUM; return b; }, /flags/],
    ['IPv6 segmentation', (b) => { b[1] = GSO_TCPV6; return b; }, /gso_type/],
    ['UFO', (b) => { b[1] = GSO_UDP; return b; }, /gso_type/],
    ['an unknown gso_type', (b) => { b[1] = 0x42; return b; }, /gso_type/],
    ['ECN with UDP', (b) => { b[1] = GSO_UDP_L4 | GSO_ECN; return b; }, /ECN|UDP/],
    ['ECN without segmentation', (b) => { b[1] = GSO_ECN; return b; }, /ECN/],
    ['a tiny gso_size', (b) => { b.writeUInt16LE(MIN_GSO_SIZE - 1, 4); return b; }, /gso_size/],
    ['a zero gso_size', (b) => { b.writeUInt16LE(0, 4); return b; }, /gso_size/],
    ['csum_start not at the TCP header', (b) => { b.writeUInt16LE(24, 6); return b; }, /csum_start/],
    ['csum_offset not TCP\'s', (b) => { b.writeUInt16LE(6, 8); return b; }, /csum_offset/],
    ['a checksum beyond the packet', (b) => { b[1] = GSO_NONE; b.writeUInt16LE(60000, 8); return b; }, /outside/],
    ['hdr_len beyond the packet', (b) => { b.writeUInt16LE(60000, 2); return b; }, /hdr_len/],
    ['segmentation without NEEDS_CSUM', (b) => { b[0] = VNET_F_DATA_VALID; return b; }, /NEEDS_CSUM/],
    ['an IPv4 total length that lies', (b) => { b.writeUInt16BE(b.length - ip - 1, ip + 2); return b; }, /total length/],
    ['an IPv4 total length beyond the packet', (b) => { b.writeUInt16BE(b.length - ip + 1, ip + 2); return b; }, /do not fit/],
    ['a fragment', (b) => { b[ip + 6] = 0x20; return b; }, /fragment/],
    ['neither IPv4 nor IPv6', (b) => { b[ip] = 0x55; return b; }, /IP version 5/],
    ['an IPv4 packet read as IPv6', (b) => { b[ip] = 0x65; return b; }, /.+/],
    ['an IPv4 header length under 20', (b) => { b[ip] = 0x44; return b; }, /do not fit/],
    ['TCP segmentation of UDP', (b) => { b[ip + 9] = UDP; return b; }, /protocol/],
    ['a TCP data offset beyond the packet', (b) => b.subarray(0, ip + 20 + 20 + 10).fill(0xf0, ip + 32, ip + 33), /.+/],
    ['a TCP data offset under 5', (b) => { b[ip + 32] = 0x40; return b; }, /TCP header/],
    ['a runt', (b) => b.subarray(0, ip + 19), /bytes/],
  ];
  for (const [name, mutate, pattern] of cases) {
    it(name, () => {
      const { buf } = buildOffloaded(good());
      const bad = mutate(buf);
      const problem = checkOffloadPacket(bad, 0, bad.length);
      assert.ok(problem !== null, 'refused');
      assert.match(problem, pattern);
    });
  }

  it('never throws, and whatever it accepts converts to well-formed DATA frames', () => {
    // Valid packets with a few bytes overwritten anywhere, and plain noise behind a plausible header.
    const mutated = fc.tuple(specArb(TCP), specArb(UDP), fc.boolean(), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 }), fc.nat())
      .map(([tcp, udp, pickTcp, edits, cut]) => {
        const { buf } = buildOffloaded({ ...(pickTcp ? tcp : udp), lead: 0 }, cut % 3 !== 0);
        for (const [where, value] of edits) buf[where % Math.min(buf.length, 80)] = value;
        return cut % 5 === 0 ? buf.subarray(0, cut % (buf.length + 1)) : buf;
      });
    const noise = fc.uint8Array({ minLength: 0, maxLength: 200 }).map((a) => Buffer.from(a));
    fc.assert(fc.property(fc.oneof(mutated, noise), (buf) => {
      const problem = checkOffloadPacket(buf, 0, buf.length);
      if (problem !== null) return;
      for (const packet of splitFrames(toDataFrames(buf, 0, buf.length))) {
        // A mutated version nibble can make a well-formed IPv6 packet of it, which is relayed too.
        if (packet[0]! >> 4 === 6) {
          assert.ok(packet.length >= 40 && packet.readUInt16BE(4) + 40 === packet.length, 'a whole IPv6 packet');
          continue;
        }
        assert.ok(packet.length >= 20 && packet.readUInt16BE(2) === packet.length, 'a whole IPv4 packet');
        assert.equal(internetChecksum(packet, 0, (packet[0]! & 0x0f) * 4) === 0 || buf[1] === GSO_NONE, true);
      }
    }), { numRuns: 5000 });
  });
});
