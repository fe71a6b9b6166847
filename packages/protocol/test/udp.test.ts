import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { internetChecksum, ipv4ToInt, readUdp, udpReply } from '../src';

const DEVICE = ipv4ToInt('10.0.3.7');
const SERVER = ipv4ToInt('10.0.0.1');

/**
 * The UDP checksum computed the textbook way, over a pseudo-header glued to the segment: independent of
 * the in-place sum under test. 0 when the datagram's own checksum is right.
 */
function textbookCheck(packet: Buffer): number {
  const headerLength = (packet[0]! & 0x0f) * 4;
  const segment = packet.subarray(headerLength, headerLength + packet.readUInt16BE(headerLength + 4));
  const pseudo = Buffer.alloc(12);
  packet.copy(pseudo, 0, 12, 20);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(segment.length, 10);
  return internetChecksum(Buffer.concat([pseudo, segment]));
}

/** A datagram from DEVICE:40000 to SERVER:53 with a correct checksum, options when `optionWords` > 0. */
function datagram(payload: Buffer, optionWords = 0): Buffer {
  const headerLength = 20 + 4 * optionWords;
  const packet = Buffer.alloc(headerLength + 8 + payload.length);
  packet[0] = 0x40 | (headerLength / 4);
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.writeUInt32BE(DEVICE, 12);
  packet.writeUInt32BE(SERVER, 16);
  packet.fill(1, 20, headerLength); // NOPs
  packet.writeUInt16BE(internetChecksum(packet, 0, headerLength), 10);
  packet.writeUInt16BE(40_000, headerLength);
  packet.writeUInt16BE(53, headerLength + 2);
  packet.writeUInt16BE(8 + payload.length, headerLength + 4);
  payload.copy(packet, headerLength + 8);
  packet.writeUInt16BE(textbookCheck(packet) || 0xffff, headerLength + 6);
  return packet;
}

describe('UDP datagrams the relay answers itself', () => {
  it('reads ports and payload at an offset inside a frame, the frame going on past the packet', () => {
    const packet = datagram(Buffer.from('query!!'));
    assert.equal(textbookCheck(packet), 0);
    const framed = Buffer.concat([Buffer.from([1, 0, 0, 0]), packet, Buffer.from('trailing bytes of a batch')]);
    const udp = readUdp(framed, 4);
    assert.ok(udp);
    assert.deepEqual([udp.sourcePort, udp.destinationPort], [40_000, 53]);
    assert.equal(framed.subarray(udp.payloadStart, udp.payloadEnd).toString(), 'query!!');
    assert.ok(readUdp(framed, 4, { destinationPort: 53 }));
    assert.equal(readUdp(framed, 4, { destinationPort: 54 }), null, 'another port');
  });

  it('leaves IP options and a wrong IP header checksum to the kernel', () => {
    const withOptions = datagram(Buffer.from('query!!'), 2);
    assert.equal(textbookCheck(withOptions), 0);
    assert.equal(readUdp(withOptions, 0), null, 'options');
    const badHeader = datagram(Buffer.from('query!!'));
    badHeader.writeUInt16BE(badHeader.readUInt16BE(10) ^ 0x0101, 10);
    assert.equal(readUdp(badHeader, 0), null, 'header checksum');
  });

  it('takes a zero checksum (none, allowed in IPv4) and refuses a wrong one', () => {
    const packet = datagram(Buffer.from('abc'));
    const none = Buffer.from(packet);
    none.writeUInt16BE(0, 26);
    assert.ok(readUdp(none, 0));
    const wrong = Buffer.from(packet);
    wrong[28] ^= 0x40;
    assert.equal(readUdp(wrong, 0), null);
    assert.ok(readUdp(wrong, 0, { verify: false }), 'not checked when the sender left it partial');
  });

  it('leaves fragments, other protocols and inconsistent lengths to the kernel', () => {
    const packet = datagram(Buffer.from('abcdef'));
    const cases: Array<[string, (p: Buffer) => void]> = [
      ['more fragments', (p) => p.writeUInt16BE(0x2000, 6)],
      ['a later fragment', (p) => p.writeUInt16BE(0x0001, 6)],
      ['TCP', (p) => { p[9] = 6; }],
      ['UDP length past the packet', (p) => p.writeUInt16BE(15, 24)],
      ['UDP length under its header', (p) => p.writeUInt16BE(7, 24)],
      ['total length under IP + UDP headers', (p) => p.writeUInt16BE(27, 2)],
      ['total length past the buffer', (p) => p.writeUInt16BE(200, 2)],
    ];
    // Each with a right header checksum, so it is refused for what it shows and not for that.
    const reheader = (p: Buffer): void => {
      p.writeUInt16BE(0, 10);
      p.writeUInt16BE(internetChecksum(p, 0, 20), 10);
    };
    for (const [name, spoil] of cases) {
      const bad = Buffer.from(packet);
      spoil(bad);
      reheader(bad);
      assert.equal(readUdp(bad, 0), null, name);
    }
    const dontFragment = Buffer.from(packet);
    dontFragment.writeUInt16BE(0x4000, 6);
    reheader(dontFragment);
    assert.ok(readUdp(dontFragment, 0), 'don\'t-fragment alone is fine');
  });

  it('builds the answer back to the sender, both checksums right, also for odd payloads', () => {
    for (const answer of [Buffer.from('answer'), Buffer.from('odd-length answer')]) {
      const query = datagram(Buffer.from('question'));
      const udp = readUdp(query, 0)!;
      const reply = udpReply(query, 0, udp, answer);
      assert.equal(internetChecksum(reply, 0, 20), 0, 'IP header checksum verifies');
      assert.equal(textbookCheck(reply), 0, 'UDP checksum verifies');
      assert.deepEqual([reply.readUInt32BE(12), reply.readUInt32BE(16)], [SERVER, DEVICE]);
      assert.equal(reply[8], 64);
      const back = readUdp(reply, 0);
      assert.ok(back);
      assert.deepEqual([back.sourcePort, back.destinationPort], [53, 40_000]);
      assert.deepEqual(reply.subarray(back.payloadStart, back.payloadEnd), answer);
    }
  });
});
