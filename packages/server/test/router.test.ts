import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { encodeFrame, FrameType, ipv4ToInt } from '@mnedc/protocol';
import { checkFrame, frameDestination, RoutingTable, Verdict } from '../src';

function frame(src: string, dst: string, options: { version?: number; ihl?: number; totalLength?: number; size?: number } = {}): Buffer {
  const size = options.size ?? 40;
  const packet = Buffer.alloc(size);
  packet[0] = ((options.version ?? 4) << 4) | (options.ihl ?? 5);
  packet.writeUInt16BE(options.totalLength ?? size, 2);
  packet.writeUInt32BE(ipv4ToInt(src), 12);
  packet.writeUInt32BE(ipv4ToInt(dst), 16);
  return encodeFrame(FrameType.Data, packet);
}

describe('router', () => {
  const me = ipv4ToInt('10.0.0.2');
  it('decides by source and header sanity', () => {
    const cases: Array<[string, Buffer, Verdict]> = [
      ['own source', frame('10.0.0.2', '10.0.0.3'), Verdict.Deliver],
      ['forged source', frame('10.0.0.9', '10.0.0.3'), Verdict.Spoofed],
      ['underlay source leaking in', frame('192.168.1.10', '10.0.0.3'), Verdict.Spoofed],
      ['IPv6', frame('10.0.0.2', '10.0.0.3', { version: 6 }), Verdict.Malformed],
      ['IHL below 5', frame('10.0.0.2', '10.0.0.3', { ihl: 4 }), Verdict.Malformed],
      ['total length beyond the frame', frame('10.0.0.2', '10.0.0.3', { totalLength: 41 }), Verdict.Malformed],
      ['total length shorter than the header', frame('10.0.0.2', '10.0.0.3', { totalLength: 19 }), Verdict.Malformed],
      ['padding after the packet is fine', frame('10.0.0.2', '10.0.0.3', { totalLength: 30 }), Verdict.Deliver],
    ];
    for (const [name, f, verdict] of cases) assert.equal(checkFrame(f, me), verdict, name);
    assert.equal(frameDestination(frame('10.0.0.2', '10.0.0.3')), ipv4ToInt('10.0.0.3'));
  });

  it('never lets a replaced target remove its successor', () => {
    const table = new RoutingTable<string>();
    table.set(me, 'old');
    table.set(me, 'new');
    assert.equal(table.delete(me, 'old'), false);
    assert.equal(table.get(me), 'new');
    assert.equal(table.delete(me, 'new'), true);
    assert.equal(table.size, 0);
  });
});
