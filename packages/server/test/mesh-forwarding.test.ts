/**
 * The data plane's rules for the relay mesh, as a table of cases with recording targets: a packet for a
 * device on another relay goes to that relay's link; what comes from a relay reaches this relay's own
 * devices only, only from a source that relay carries, and is never sent on to another relay (one hop:
 * no loops) nor to this relay's own interface.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import {
  encodeFrame, FrameType, groupMask, GSO_NONE, GSO_UDP_L4, ipv4ToInt, MULTICAST_GROUPS, onesSum, parseSubnet, VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '@mnedc/protocol';
import type { WriteBatch } from '@mnedc/link';
import { ipPacket } from '@mnedc/lab';
import { DataPlane, type MeshRoutes } from '../src/dataplane/data-plane';
import { newCounters, type Target } from '../src/dataplane/target';

const SUBNET = parseSubnet('10.0.0.0/24');
const ip = (last: number) => ipv4ToInt(`10.0.0.${last}`);

class Recorder implements Target {
  readonly counters = newCounters();
  readonly gso: boolean = false;
  readonly received: Buffer[] = [];
  up = true;
  constructor(readonly deviceId: string, readonly ip: number, readonly local = false) {}
  accepts(): boolean {
    return this.up;
  }
  deliver(frames: Buffer, batch: WriteBatch): void {
    this.received.push(Buffer.from(frames));
    batch.push({ flush: () => {} });
  }
}

/** Devices .10 and .11 are here, .20 on relay B, .30 on relay C (whose link is down); .40 is nobody's. */
function setup() {
  const plane = new DataPlane(SUBNET, ip(1), pino({ level: 'silent' }));
  const here = new Recorder('here', ip(10));
  const alsoHere = new Recorder('also-here', ip(11));
  const tun = new Recorder('server', ip(1), true);
  const b = new Recorder('relay B', 0);
  const c = new Recorder('relay C', 0);
  c.up = false;
  const carriedBy = new Map<number, Target>([[ip(20), b], [ip(30), c]]);
  const asked: number[] = [];
  const mesh: MeshRoutes = {
    routeTo: (address) => {
      asked.push(address);
      const relay = carriedBy.get(address);
      return relay === undefined ? null : relay.accepts(0) ? relay : 'down';
    },
    carries: (relay, source) => carriedBy.get(source) === relay,
    linked: () => [b, c].filter((relay) => relay.up),
    networkSize: () => 5,
  };
  for (const t of [here, alsoHere, tun]) plane.route(t);
  plane.attachMesh(mesh);
  return { plane, here, alsoHere, tun, b, c, asked };
}

const frame = (src: number, dst: number, body = 'x', protocol = 17) => encodeFrame(FrameType.Data, ipPacket(src, dst, body, protocol));

describe('the data plane and the relay mesh', () => {
  it('a packet for a device on another relay goes to that relay; one whose relay is not linked is dropped as relayDown', () => {
    const { plane, here, b, c } = setup();
    plane.forward(here, frame(ip(10), ip(20)));
    plane.forward(here, frame(ip(10), ip(30)));
    plane.endBatch();
    assert.equal(b.received.length, 1);
    assert.equal(c.received.length, 0);
    assert.equal(here.counters.drops.relayDown, 1);
    assert.equal(b.counters.txPackets, 1);
  });

  it('the relay\'s own interface never sends over the mesh: its address is each relay\'s own', () => {
    const { plane, tun, b, asked } = setup();
    plane.forward(tun, frame(ip(1), ip(20)));
    plane.endBatch();
    assert.equal(b.received.length, 0);
    assert.deepEqual(asked, []);
    assert.equal(tun.counters.drops.noRoute, 1);
  });

  it('from a relay: delivered to this relay\'s device when the source is a device that relay carries', () => {
    const { plane, here, b } = setup();
    plane.forwardFromRelay(b, frame(ip(20), ip(10), 'hello'));
    plane.endBatch();
    assert.equal(here.received.length, 1);
    assert.ok(here.received[0]!.includes('hello'));
    assert.equal(b.counters.rxPackets, 1);
  });

  it('from a relay: a source it does not carry (a device here, on another relay, or nobody) is dropped as spoofed', () => {
    const { plane, here, alsoHere, b } = setup();
    for (const source of [ip(11), ip(30), ip(40), ip(1)]) plane.forwardFromRelay(b, frame(source, ip(10)));
    plane.endBatch();
    assert.equal(here.received.length + alsoHere.received.length, 0);
    assert.equal(b.counters.drops.spoofed, 4);
  });

  it('from a relay: never sent on to another relay, nor to this relay\'s interface, nor to nobody — no loops', () => {
    const { plane, b, c, tun, asked } = setup();
    c.up = true;
    for (const destination of [ip(30), ip(20), ip(1), ip(40)]) plane.forwardFromRelay(b, frame(ip(20), destination));
    plane.endBatch();
    assert.equal(c.received.length + b.received.length + tun.received.length, 0);
    assert.deepEqual(asked, [], 'the mesh is not even asked for a route');
    assert.equal(b.counters.drops.noRoute, 4);
  });

  it('from a relay: what is neither IPv4 nor IPv6, or whose lengths lie, is malformed', () => {
    const { plane, b, here } = setup();
    const v5 = Buffer.alloc(40);
    v5[0] = 0x50;
    plane.forwardFromRelay(b, encodeFrame(FrameType.Data, v5));
    const short = ipPacket(ip(20), ip(10), 'x');
    short.writeUInt16BE(200, 2);
    plane.forwardFromRelay(b, encodeFrame(FrameType.Data, short));
    plane.endBatch();
    assert.equal(here.received.length, 0);
    assert.equal(b.counters.drops.malformed, 2);
  });

  describe('multicast and broadcast', () => {
    const mdns = (src: number, body = 'q') => frame(src, ipv4ToInt('224.0.0.251'), body);
    const carrying = () => {
      const s = setup();
      s.plane.carry(groupMask([...MULTICAST_GROUPS]));
      return s;
    };

    it('from a device: one copy to every other device here and one to each linked relay; none back, none to the relay\'s interface', () => {
      const { plane, here, alsoHere, tun, b, c } = carrying();
      plane.forward(here, mdns(ip(10)));
      plane.endBatch();
      assert.deepEqual([here, alsoHere, tun, b, c].map((t) => t.received.length), [0, 1, 0, 1, 0]);
      assert.deepEqual(plane.multicast.mdns, { received: 1, delivered: 2, rateLimited: 0, duplicate: 0, queueFull: 0 });
    });

    it('from a relay: to this relay\'s devices only — never on to another relay (one hop)', () => {
      const { plane, here, alsoHere, tun, b, c } = carrying();
      c.up = true;
      plane.forwardFromRelay(b, mdns(ip(20)));
      plane.endBatch();
      assert.deepEqual([here, alsoHere, tun, b, c].map((t) => t.received.length), [1, 1, 0, 0, 0]);
    });

    it('from a relay: a source it does not carry is spoofed, multicast or not', () => {
      const { plane, here, b } = carrying();
      plane.forwardFromRelay(b, mdns(ip(11)));
      plane.endBatch();
      assert.equal(here.received.length, 0);
      assert.equal(b.counters.drops.spoofed, 1);
    });

    it('the relay\'s own interface sends no multicast, and groups not carried are dropped as before', () => {
      const { plane, here, alsoHere, tun, b } = setup();
      plane.carry(groupMask(['ssdp']));
      plane.forward(tun, frame(ip(1), ipv4ToInt('239.255.255.250')));
      plane.forward(here, mdns(ip(10)));
      plane.forward(here, frame(ip(10), ipv4ToInt('10.0.0.255')));
      plane.forward(here, frame(ip(10), ipv4ToInt('239.255.255.250'), 'igmp', 2));
      plane.endBatch();
      assert.equal(alsoHere.received.length + b.received.length, 0);
      assert.deepEqual([tun.counters.drops.multicast, here.counters.drops.multicast, here.counters.drops.broadcast], [1, 2, 1]);
      assert.equal(here.counters.drops.noRoute, 0);
    });

    it('the packet is delivered as it came: TTL 255 stays 255', () => {
      const { plane, here, alsoHere } = carrying();
      const packet = mdns(ip(10));
      packet[4 + 8] = 255;
      plane.forward(here, packet);
      plane.endBatch();
      assert.deepEqual(alsoHere.received[0], packet);
    });

    it('a reflector\'s echo (the same datagram from another device within a second) goes nowhere; a sender repeating itself does', () => {
      const { plane, here, alsoHere, b } = carrying();
      plane.forward(here, mdns(ip(10), 'announce'));
      plane.forward(alsoHere, mdns(ip(11), 'announce'));
      plane.forwardFromRelay(b, mdns(ip(20), 'announce'));
      plane.forward(here, mdns(ip(10), 'announce'));
      plane.endBatch();
      assert.equal(plane.multicast.mdns.duplicate, 2);
      assert.deepEqual([here.received.length, alsoHere.received.length, b.received.length], [0, 2, 2]);
    });

    it('a device over its rate is cut off at the burst, the others are not', () => {
      const { plane, here, alsoHere } = carrying();
      for (let i = 0; i < 1000; i++) plane.forward(here, mdns(ip(10), `flood ${i}`));
      plane.forward(alsoHere, mdns(ip(11), 'mine'));
      plane.endBatch();
      // The burst, and what the rate refills while the loop runs (a few tokens at most).
      assert.ok(plane.multicast.mdns.rateLimited >= 890 && plane.multicast.mdns.rateLimited <= 900, String(plane.multicast.mdns.rateLimited));
      assert.equal(alsoHere.received.length, 1000 - plane.multicast.mdns.rateLimited);
      assert.equal(here.received.length, 1);
    });

    it('an offloaded packet goes as it came to a device that takes offloads, completed to one that does not: neither copy spoils the other', () => {
      const { plane, here, alsoHere } = carrying();
      class Offloading extends Recorder {
        override readonly gso = true;
      }
      const offloading = new Offloading('offloading', ip(12));
      plane.route(offloading);
      const packet = ipPacket(ip(10), ipv4ToInt('224.0.0.251'), Buffer.alloc(20, 1));
      const pseudo = onesSum(packet, 12, 20, 17 + 20);
      packet.writeUInt16BE(pseudo, 20 + 6);
      const header = Buffer.alloc(VNET_HDR_BYTES);
      writeVnetHeader(header, 0, { flags: VNET_F_NEEDS_CSUM, gsoType: GSO_NONE, hdrLen: 28, gsoSize: 0, csumStart: 20, csumOffset: 6 });
      const original = encodeFrame(FrameType.DataGso, Buffer.concat([header, packet]));
      plane.forward(here, Buffer.from(original));
      plane.endBatch();
      assert.deepEqual(offloading.received[0], original, 'virtio header and partial checksum as sent');
      const plain = alsoHere.received[0]!;
      assert.equal(plain[0], FrameType.Data);
      assert.equal(onesSum(plain, 4 + 20, plain.length, pseudo) % 0xffff, 0, 'checksum completed');
    });

    it('a packet no device\'s interface sends (beyond the MTU, a super-packet to segment, padding after it) is not fanned out: each copy would cost more', () => {
      const { plane, here, alsoHere } = setup();
      plane.carry(groupMask([...MULTICAST_GROUPS]), undefined, 1400);
      plane.forward(here, mdns(ip(10), 'x'.repeat(1400)));
      const udp = ipPacket(ip(10), ipv4ToInt('224.0.0.251'), Buffer.alloc(4000));
      const header = Buffer.alloc(VNET_HDR_BYTES);
      writeVnetHeader(header, 0, { flags: VNET_F_NEEDS_CSUM, gsoType: GSO_UDP_L4, hdrLen: 28, gsoSize: 1000, csumStart: 20, csumOffset: 6 });
      plane.forward(here, encodeFrame(FrameType.DataGso, Buffer.concat([header, udp])));
      // A small packet padded out in its frame: every copy would be the whole frame.
      plane.forward(here, encodeFrame(FrameType.Data, Buffer.concat([ipPacket(ip(10), ipv4ToInt('224.0.0.251'), 'q'), Buffer.alloc(60_000)])));
      plane.forward(here, mdns(ip(10), 'x'.repeat(1300)));
      plane.endBatch();
      assert.equal(alsoHere.received.length, 1, 'only the packet that fits');
      assert.equal(here.counters.drops.malformed, 3);
    });

    it('a receiver without room counts a queueFull copy; the others still get theirs', () => {
      const { plane, here, alsoHere, b } = carrying();
      alsoHere.up = false;
      plane.forward(here, mdns(ip(10)));
      plane.endBatch();
      assert.equal(b.received.length, 1);
      assert.deepEqual([plane.multicast.mdns.delivered, plane.multicast.mdns.queueFull], [1, 1]);
    });
  });
});
