/**
 * IPv6 through the data plane: routed by the IPv4 lease each address maps to, with the same rules as IPv4
 * (the source is the sender's own, one hop over the mesh), link-local sources only to carried groups.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import {
  encodeFrame, FrameType, groupMask, GSO_TCPV6, ipv4ToInt, linkLocalAddress, mappedAddress, MULTICAST_GROUPS, onesSum, parseIpv6, parseSubnet,
  VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '@mnedc/protocol';
import type { WriteBatch } from '@mnedc/link';
import { DataPlane, type MeshRoutes } from '../src/dataplane/data-plane';
import { newCounters, type Target } from '../src/dataplane/target';

const SUBNET = parseSubnet('10.0.0.0/24');
const PREFIX = parseIpv6('fd12:3456:789a::')!.subarray(0, 8);
const ip = (last: number) => ipv4ToInt(`10.0.0.${last}`);
const overlay = (last: number) => mappedAddress(PREFIX, ip(last));

class Recorder implements Target {
  readonly counters = newCounters();
  readonly received: Buffer[] = [];
  constructor(readonly deviceId: string, readonly ip: number, readonly local = false, readonly gso = false) {}
  accepts(): boolean {
    return true;
  }
  deliver(frames: Buffer, batch: WriteBatch): void {
    this.received.push(Buffer.from(frames));
    batch.push({ flush: () => {} });
  }
}

function packet6(src: Uint8Array, dst: Uint8Array, nextHeader = 17, body = 'hello'): Buffer {
  const payload = Buffer.concat([Buffer.alloc(8), Buffer.from(body)]);
  const p = Buffer.alloc(40 + payload.length);
  p[0] = 0x60;
  p.writeUInt16BE(payload.length, 4);
  p[6] = nextHeader;
  p[7] = 255;
  p.set(src, 8);
  p.set(dst, 24);
  payload.copy(p, 40);
  return p;
}
const data = (packet: Buffer) => encodeFrame(FrameType.Data, packet);

function setup(prefix: Buffer | null = PREFIX) {
  const plane = new DataPlane(SUBNET, ip(1), pino({ level: 'silent' }));
  plane.routeIpv6(prefix);
  plane.carry(groupMask([...MULTICAST_GROUPS]));
  const a = new Recorder('a', ip(10));
  const b = new Recorder('b', ip(11));
  const tun = new Recorder('server', ip(1), true);
  const relay = new Recorder('relay B', 0);
  const mesh: MeshRoutes = {
    routeTo: (address) => (address === ip(20) ? relay : null),
    carries: (r, source) => r === relay && source === ip(20),
    linked: () => [relay],
    networkSize: () => 5,
  };
  for (const t of [a, b, tun]) plane.route(t);
  plane.attachMesh(mesh);
  return { plane, a, b, tun, relay };
}

describe('IPv6 in the data plane', () => {
  it('goes from a device\'s overlay address to another\'s, here, on the relay\'s interface, or over the mesh', () => {
    const { plane, a, b, tun, relay } = setup();
    for (const to of [11, 1, 20]) plane.forward(a, data(packet6(overlay(10), overlay(to))));
    plane.endBatch();
    assert.deepEqual([b.received.length, tun.received.length, relay.received.length], [1, 1, 1]);
  });

  it('a source that is not the sender\'s own is spoofed: another device\'s, another prefix, a link-local one to unicast', () => {
    const { plane, a, b } = setup();
    plane.forward(a, data(packet6(overlay(11), overlay(11))));
    plane.forward(a, data(packet6(mappedAddress(parseIpv6('fd00:1::')!, ip(10)), overlay(11))));
    plane.forward(a, data(packet6(linkLocalAddress(ip(10)), overlay(11))));
    plane.forward(a, data(packet6(linkLocalAddress(ip(11)), parseIpv6('ff02::fb')!)));
    plane.endBatch();
    assert.equal(b.received.length, 0);
    assert.equal(a.counters.drops.spoofed, 4);
  });

  it('mDNS over IPv6 from the link-local address reaches every other device and each relay once; MLD and solicitations do not', () => {
    const { plane, a, b, tun, relay } = setup();
    plane.forward(a, data(packet6(linkLocalAddress(ip(10)), parseIpv6('ff02::fb')!)));
    plane.forward(a, data(packet6(overlay(10), parseIpv6('ff02::c')!, 17, 'M-SEARCH')));
    plane.forward(a, data(packet6(linkLocalAddress(ip(10)), parseIpv6('ff02::16')!, 0)));
    plane.forward(tun, data(packet6(linkLocalAddress(ip(1)), parseIpv6('ff02::2')!, 58)));
    plane.endBatch();
    assert.deepEqual([a.received.length, b.received.length, tun.received.length, relay.received.length], [0, 2, 0, 2]);
    assert.equal(b.received[0]![4 + 7], 255, 'hop limit as sent');
    assert.deepEqual([plane.multicast.mdns.delivered, plane.multicast.ssdp.delivered], [2, 2]);
    assert.deepEqual([a.counters.drops.multicast, tun.counters.drops.multicast, a.counters.drops.spoofed], [1, 1, 0]);
  });

  it('link-local unicast goes between devices\' own link-local addresses (SSDP answers it); unmapped destinations go nowhere, without ICMPv6', () => {
    const { plane, a, b } = setup();
    plane.forward(a, data(packet6(linkLocalAddress(ip(10)), linkLocalAddress(ip(11)), 17, 'HTTP/1.1 200 OK')));
    plane.forward(a, data(packet6(linkLocalAddress(ip(11)), linkLocalAddress(ip(11)))));
    plane.forward(a, data(packet6(linkLocalAddress(ip(10)), linkLocalAddress(ip(99)))));
    plane.forward(a, data(packet6(overlay(10), parseIpv6('fd12:3456:789a::1:a00:b')!)));
    plane.forward(a, data(packet6(overlay(10), parseIpv6('2001:db8::1')!)));
    plane.endBatch();
    assert.equal(b.received.length, 1);
    assert.ok(b.received[0]!.includes('HTTP/1.1 200 OK'));
    assert.deepEqual([a.counters.drops.spoofed, a.counters.drops.noRoute], [1, 3]);
  });

  it('from a relay: only sources it carries, only to devices here (mDNS included), never on to a relay', () => {
    const { plane, a, b, tun, relay } = setup();
    plane.forwardFromRelay(relay, data(packet6(overlay(20), overlay(10))));
    plane.forwardFromRelay(relay, data(packet6(overlay(11), overlay(10))));
    plane.forwardFromRelay(relay, data(packet6(linkLocalAddress(ip(20)), parseIpv6('ff02::fb')!)));
    plane.forwardFromRelay(relay, data(packet6(overlay(20), overlay(1))));
    plane.endBatch();
    assert.deepEqual([a.received.length, b.received.length, tun.received.length, relay.received.length], [2, 1, 0, 0]);
    assert.deepEqual([relay.counters.drops.spoofed, relay.counters.drops.noRoute], [1, 1]);
  });

  it('a relay with ipv6 = no drops it all as ipv6; a payload length beyond the frame is malformed', () => {
    const off = setup(null);
    off.plane.forward(off.a, data(packet6(overlay(10), overlay(11))));
    off.plane.endBatch();
    assert.deepEqual([off.b.received.length, off.a.counters.drops.ipv6], [0, 1]);
    const { plane, a } = setup();
    const bad = packet6(overlay(10), overlay(11));
    bad.writeUInt16BE(500, 4);
    plane.forward(a, data(bad));
    assert.equal(a.counters.drops.malformed, 1);
  });

  it('a TCPV6 super-packet goes as it is to a target that takes them and in segments to one that does not', () => {
    const { plane, a, b } = setup();
    const c = new Recorder('c', ip(12), false, true);
    plane.route(c);
    const payload = Buffer.alloc(4000, 7);
    const packet = Buffer.alloc(40 + 20 + payload.length);
    packet[0] = 0x60;
    packet.writeUInt16BE(20 + payload.length, 4);
    packet[6] = 6;
    packet[7] = 64;
    overlay(10).copy(packet, 8);
    const header = Buffer.alloc(VNET_HDR_BYTES);
    writeVnetHeader(header, 0, { flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV6, hdrLen: 60, gsoSize: 1400, csumStart: 40, csumOffset: 16 });
    packet[52] = 5 << 4;
    packet.writeUInt16BE(onesSum(packet, 8, 40, 6 + 20 + payload.length), 56);
    for (const [target, to] of [[b, 11], [c, 12]] as const) {
      overlay(to).copy(packet, 24);
      packet.writeUInt16BE(onesSum(packet, 8, 40, 6 + 20 + payload.length), 56);
      plane.forward(a, encodeFrame(FrameType.DataGso, Buffer.concat([header, packet])));
      plane.endBatch();
      assert.equal(target.received.length, 1);
    }
    assert.equal(c.received[0]![0], FrameType.DataGso, 'as it came');
    assert.equal(b.received[0]![0], FrameType.Data);
    assert.equal(b.counters.txPackets, 3, 'three segments of 1,400 bytes at most');
  });
});
