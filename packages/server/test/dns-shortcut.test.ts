/**
 * DNS answered in the data plane: a UDP query to the relay's overlay address on the responder's port is
 * answered in the batch it came in (no trip through the relay's TUN), with the responder's rate and
 * counters; everything else for the relay still reaches its TUN.
 */
import { strict as assert } from 'node:assert';
import { afterEach, describe, it } from 'node:test';
import pino from 'pino';
import {
  DnsType, encodeFrame, encodeName, FrameType, GSO_NONE, GSO_UDP_L4, HEADER_BYTES, internetChecksum, ipv4ToInt, onesSum, parseSubnet, readUdp,
  VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '@mnedc/protocol';
import type { WriteBatch } from '@mnedc/link';
import { DataPlane } from '../src/dataplane/data-plane';
import { newCounters, type Target } from '../src/dataplane/target';
import { DnsResponder } from '../src/dns/responder';

const SUBNET = parseSubnet('10.0.0.0/24');
const SERVER = ipv4ToInt('10.0.0.1');
const log = pino({ level: 'silent' });

/** A target that keeps what it is sent, one DATA frame per entry once the batch is flushed. */
class Recorder implements Target {
  readonly counters = newCounters();
  readonly gso = false;
  readonly received: Buffer[] = [];
  room = true;
  private pending: Buffer[] = [];
  constructor(readonly deviceId: string, readonly ip: number, readonly local = false) {}
  accepts(): boolean {
    return this.room;
  }
  deliver(frames: Buffer, batch: WriteBatch): void {
    if (this.pending.length === 0) batch.push(this);
    this.pending.push(Buffer.from(frames));
  }
  flush(): void {
    this.received.push(...this.pending.splice(0));
  }
}

function query(name: string, id: number): Buffer {
  const header = Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, encodeName(name.split('.')), Buffer.from([0, DnsType.A, 0, 1])]);
}

/**
 * A DATA frame holding IPv4/UDP from `src`:`sourcePort` (40000) to `dst`:`port`: UDP checksum none,
 * `checksum` as given, or (`sum`) computed as a kernel would.
 */
function datagram(src: number, dst: number, port: number, payload: Buffer,
  options: { protocol?: number; flags?: number; checksum?: number; sum?: boolean; sourcePort?: number } = {}): Buffer {
  const packet = Buffer.alloc(28 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(options.flags ?? 0, 6);
  packet[8] = 64;
  packet[9] = options.protocol ?? 17;
  packet.writeUInt32BE(src, 12);
  packet.writeUInt32BE(dst, 16);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  packet.writeUInt16BE(options.sourcePort ?? 40_000, 20);
  packet.writeUInt16BE(port, 22);
  packet.writeUInt16BE(8 + payload.length, 24);
  packet.writeUInt16BE(options.checksum ?? 0, 26);
  payload.copy(packet, 28);
  if (options.sum) {
    const sum = onesSum(packet, 20, packet.length, onesSum(packet, 12, 20, 17 + packet.length - 20));
    packet.writeUInt16BE((~sum & 0xffff) || 0xffff, 26);
  }
  return encodeFrame(FrameType.Data, packet);
}

/**
 * The same datagram as an offloading device's TUN gives it: DATA_GSO with a virtio header, the UDP
 * checksum left partial (the pseudo-header sum only) for the receiver to complete.
 */
function offloaded(plain: Buffer, gsoType = GSO_NONE): Buffer {
  const packet = plain.subarray(HEADER_BYTES);
  const udpLength = packet.length - 20;
  packet.writeUInt16BE(onesSum(packet, 12, 20, 17 + udpLength), 26);
  const body = Buffer.alloc(VNET_HDR_BYTES + packet.length);
  writeVnetHeader(body, 0, { flags: VNET_F_NEEDS_CSUM, gsoType, hdrLen: 28, gsoSize: gsoType === GSO_NONE ? 0 : 1000, csumStart: 20, csumOffset: 6 });
  packet.copy(body, VNET_HDR_BYTES);
  return encodeFrame(FrameType.DataGso, body);
}

const responders: DnsResponder[] = [];
afterEach(() => responders.splice(0).forEach((r) => r.close()));

async function setup(perSecond = 100, burst = 200) {
  const dns = new DnsResponder({
    host: '127.0.0.1', port: 0, domain: 'mnedc', subnet: SUBNET, log,
    limits: { perSource: { perSecond, burst }, tcpConnections: 4, tcpIdleMs: 1000, queuedAnswers: 16 },
  });
  responders.push(dns);
  await dns.start();
  const plane = new DataPlane(SUBNET, SERVER, log);
  const tun = new Recorder('server', SERVER, true);
  const a = new Recorder('device-a', ipv4ToInt('10.0.0.2'));
  const b = new Recorder('device-b', ipv4ToInt('10.0.0.3'));
  for (const t of [tun, a, b]) plane.route(t);
  dns.names.up(a.deviceId, a.ip, '');
  dns.names.up(b.deviceId, b.ip, '');
  plane.serve(dns);
  return { dns, plane, tun, a, b };
}

/** The A record's address in a reply frame, after checking the frame is UDP from the relay's port 53. */
function answeredAddress(frame: Buffer, to: number, port: number): string {
  const udp = readUdp(frame, HEADER_BYTES);
  assert.ok(udp, 'a whole UDP datagram with a right checksum');
  assert.deepEqual([frame.readUInt32BE(HEADER_BYTES + 12), frame.readUInt32BE(HEADER_BYTES + 16)], [SERVER, to]);
  assert.deepEqual([udp.sourcePort, udp.destinationPort], [port, 40_000]);
  return [...frame.subarray(udp.payloadEnd - 4, udp.payloadEnd)].join('.');
}

describe('DNS in the data plane', () => {
  it('answers a device\'s query in the same batch, never touching the relay\'s TUN', async () => {
    const { dns, plane, tun, a } = await setup();
    plane.forward(a, datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', 1)));
    plane.forward(a, datagram(a.ip, SERVER, dns.port, query('nobody.mnedc', 2)));
    plane.endBatch();
    assert.equal(a.received.length, 2);
    assert.equal(answeredAddress(a.received[0]!, a.ip, dns.port), '10.0.0.3');
    assert.equal(a.received[1]![HEADER_BYTES + 28 + 3]! & 0xf, 3, 'NXDOMAIN');
    assert.deepEqual(tun.received, []);
    assert.deepEqual([dns.counters.queries, dns.counters.answers, dns.counters.nxdomain], [2, 1, 1]);
    assert.equal(a.counters.txPackets, 2, 'the device\'s counters show the answers it was sent');
  });

  it('answers a query with a real UDP checksum in a frame that goes on past the packet, not the relay\'s own', async () => {
    const { dns, plane, tun, a } = await setup();
    const frame = datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', 6), { sum: true });
    // Bytes after the IP total length, as when a frame is a view into a larger read.
    plane.forward(a, Buffer.concat([frame, Buffer.from('more of the read')]).subarray(0, frame.length + 16));
    plane.endBatch();
    assert.equal(answeredAddress(a.received[0]!, a.ip, dns.port), '10.0.0.3');
    // The relay's own TUN asking its own address is the kernel's business, never the shortcut's.
    const fromHost = datagram(SERVER, SERVER, dns.port, query('device-b.mnedc', 7), { sum: true });
    plane.forward(tun, fromHost);
    plane.endBatch();
    assert.equal(tun.received.length, 1);
    assert.equal(dns.counters.queries, 1);
  });

  it('drops a query from source port 0 as malformed, answering nothing', async () => {
    const { dns, plane, tun, a } = await setup();
    plane.forward(a, datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', 8), { sourcePort: 0 }));
    plane.endBatch();
    assert.deepEqual([a.received.length, tun.received.length, dns.counters.queries, a.counters.drops.malformed], [0, 0, 0, 1]);
  });

  it('answers an offloading device\'s query, whose checksum is only partial', async () => {
    const { dns, plane, tun, a } = await setup();
    plane.forward(a, offloaded(datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', 5))));
    plane.endBatch();
    assert.equal(a.received.length, 1);
    assert.equal(answeredAddress(a.received[0]!, a.ip, dns.port), '10.0.0.3');
    assert.deepEqual(tun.received, []);
  });

  it('sends everything else for the relay on to its TUN: TCP, other ports, fragments, bad checksums', async () => {
    const { dns, plane, tun, a } = await setup();
    const q = query('device-b.mnedc', 3);
    const others = [
      datagram(a.ip, SERVER, dns.port, q, { protocol: 6 }),
      datagram(a.ip, SERVER, dns.port + 1, q),
      datagram(a.ip, SERVER, dns.port, q, { flags: 0x2000 }),
      datagram(a.ip, SERVER, dns.port, q, { checksum: 0x1234 }),
      (() => {
        const badHeader = datagram(a.ip, SERVER, dns.port, q);
        badHeader[HEADER_BYTES + 10]! ^= 0xff;
        return badHeader;
      })(),
    ];
    const superPacket = offloaded(datagram(a.ip, SERVER, dns.port, Buffer.alloc(3000)), GSO_UDP_L4);
    for (const frame of [...others, superPacket]) plane.forward(a, frame);
    plane.endBatch();
    assert.equal(tun.received.length, others.length + 1);
    assert.deepEqual(a.received, []);
    assert.equal(dns.counters.queries, 0);
    plane.serve(null);
    plane.forward(a, datagram(a.ip, SERVER, dns.port, q));
    plane.endBatch();
    assert.equal(tun.received.length, others.length + 2, 'with no service, DNS goes to the TUN too');
  });

  it('holds the per-source rate: a flooding device is cut at its burst, another is answered', async () => {
    const { dns, plane, a, b } = await setup(1, 20);
    for (let i = 0; i < 100; i++) plane.forward(a, datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', i)));
    plane.forward(b, datagram(b.ip, SERVER, dns.port, query('device-a.mnedc', 500)));
    plane.endBatch();
    assert.equal(a.received.length, 20);
    assert.equal(dns.counters.rateLimited, 80);
    assert.equal(b.received.length, 1);
    assert.equal(answeredAddress(b.received[0]!, b.ip, dns.port), '10.0.0.2');
  });

  it('answers malformed queries with FORMERR, drops headerless junk, and counts a full queue as the device\'s drop', async () => {
    const { dns, plane, a } = await setup();
    plane.forward(a, datagram(a.ip, SERVER, dns.port, Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0])));
    plane.forward(a, datagram(a.ip, SERVER, dns.port, Buffer.alloc(5)));
    plane.forward(a, datagram(a.ip, SERVER, dns.port, Buffer.alloc(0)));
    plane.endBatch();
    assert.equal(a.received.length, 1);
    assert.equal(a.received[0]![HEADER_BYTES + 28 + 3]! & 0xf, 1, 'FORMERR');
    assert.deepEqual([dns.counters.formerr, dns.counters.dropped], [1, 2]);
    a.room = false;
    plane.forward(a, datagram(a.ip, SERVER, dns.port, query('device-b.mnedc', 4)));
    plane.endBatch();
    assert.equal(a.received.length, 1);
    assert.equal(a.counters.drops.queueFull, 1);
  });
});
