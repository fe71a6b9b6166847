/**
 * pcap.ts: unit tests on hand-built captures (both byte orders, every supported link type, reassembly edge
 * cases, TLS record walks), and one real capture: tcpdump in a private pair of network namespaces watching
 * a Node TLS 1.3 exchange (the text must not be on the wire) and the same over plain TCP (it must be).
 *
 * The real capture needs root, iproute2, tcpdump and openssl, and skips itself otherwise. It touches only
 * its own namespaces `mnpcap-<hex>-a` / `-b` (the veth pair is created directly inside them) and removes
 * them, its processes and its temp dir afterwards, also if the test process exits early.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as fc from 'fast-check';
import {
  containsBytes, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, parsePcap,
  reassemble, readPcap, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, tcpStreams, type TcpSegment,
} from '../src/pcap';
import { summarizeTls } from '../src/tls-records';

// ------------------------------------------------------------------------------------ capture builders --

interface PcapOptions {
  linkType?: number;
  order?: 'le' | 'be';
  nano?: boolean;
}

const T0 = 1_700_000_000;

function buildPcap(frames: Buffer[], { linkType = LINKTYPE_ETHERNET, order = 'le', nano = false }: PcapOptions = {}): Buffer {
  const le = order === 'le';
  const u32 = (b: Buffer, v: number, at: number): void => void (le ? b.writeUInt32LE(v, at) : b.writeUInt32BE(v, at));
  const u16 = (b: Buffer, v: number, at: number): void => void (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  const header = Buffer.alloc(24);
  u32(header, nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  u16(header, 2, 4);
  u16(header, 4, 6);
  u32(header, 262144, 16);
  u32(header, linkType, 20);
  const parts: Buffer[] = [header];
  frames.forEach((frame, i) => {
    const record = Buffer.alloc(16);
    u32(record, T0 + i, 0);
    u32(record, nano ? 123_456_789 : 123_456, 4);
    u32(record, frame.length, 8);
    u32(record, frame.length, 12);
    parts.push(record, frame);
  });
  return Buffer.concat(parts);
}

interface SegmentSpec {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  seq: number;
  flags?: number;
  payload?: string | Buffer;
  ipOptions?: Buffer;
  tcpOptions?: Buffer;
  protocol?: number;
  fragment?: number;
}

function ipv4Tcp(spec: SegmentSpec): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : spec.payload ?? Buffer.alloc(0);
  const ipOptions = spec.ipOptions ?? Buffer.alloc(0);
  const tcpOptions = spec.tcpOptions ?? Buffer.alloc(0);
  const ihl = 20 + ipOptions.length;
  const doff = 20 + tcpOptions.length;
  const packet = Buffer.alloc(ihl + doff + payload.length);
  packet[0] = 0x40 | (ihl / 4);
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(spec.fragment ?? 0x4000, 6); // DF
  packet[8] = 64;
  packet[9] = spec.protocol ?? 6;
  (spec.src ?? '10.0.0.1').split('.').forEach((o, i) => (packet[12 + i] = Number(o)));
  (spec.dst ?? '10.0.0.2').split('.').forEach((o, i) => (packet[16 + i] = Number(o)));
  ipOptions.copy(packet, 20);
  const tcp = packet.subarray(ihl);
  tcp.writeUInt16BE(spec.sport ?? 3334, 0);
  tcp.writeUInt16BE(spec.dport ?? 50000, 2);
  tcp.writeUInt32BE(spec.seq >>> 0, 4);
  tcp[12] = (doff / 4) << 4;
  tcp[13] = spec.flags ?? TCP_ACK | TCP_PSH;
  tcpOptions.copy(tcp, 20);
  payload.copy(tcp, doff);
  return packet;
}

function ether(ip: Buffer, { vlan = false, etherType = 0x0800 } = {}): Buffer {
  const head = Buffer.alloc(vlan ? 18 : 14, 0xaa);
  if (vlan) {
    head.writeUInt16BE(0x8100, 12);
    head.writeUInt16BE(7, 14);
  }
  head.writeUInt16BE(etherType, vlan ? 16 : 12);
  const frame = Buffer.concat([head, ip]);
  // Ethernet pads frames to 60 bytes (without FCS); the padding must not become payload.
  return frame.length < 60 ? Buffer.concat([frame, Buffer.alloc(60 - frame.length, 0xee)]) : frame;
}

function sll(ip: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeUInt16BE(0, 0);
  head.writeUInt16BE(1, 2);
  head.writeUInt16BE(6, 4);
  head.writeUInt16BE(0x0800, 14);
  return Buffer.concat([head, ip]);
}

function sll2(ip: Buffer): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt16BE(0x0800, 0);
  head.writeUInt32BE(3, 4);
  head.writeUInt16BE(1, 8);
  head[11] = 6;
  return Buffer.concat([head, ip]);
}

const seg = (spec: SegmentSpec): TcpSegment => ({
  src: spec.src ?? '10.0.0.1',
  dst: spec.dst ?? '10.0.0.2',
  srcPort: spec.sport ?? 3334,
  dstPort: spec.dport ?? 50000,
  seq: spec.seq >>> 0,
  flags: spec.flags ?? TCP_ACK,
  payload: typeof spec.payload === 'string' ? Buffer.from(spec.payload) : spec.payload ?? Buffer.alloc(0),
});

const plain = (s: TcpSegment): Omit<TcpSegment, 'time' | 'payload'> & { payload: string } => ({
  src: s.src, dst: s.dst, srcPort: s.srcPort, dstPort: s.dstPort, seq: s.seq, flags: s.flags, payload: s.payload.toString('latin1'),
});

// ---------------------------------------------------------------------------------------- TLS builders --

function record(type: number, payload: Buffer, version = 0x0303): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt16BE(version, 1);
  head.writeUInt16BE(payload.length, 3);
  return Buffer.concat([head, payload]);
}

function handshakeMessage(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = type;
  head.writeUIntBE(body.length, 1, 3);
  return Buffer.concat([head, body]);
}

function clientHello(): Buffer {
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]), randomBytes(32), Buffer.from([0]), // version, random, session id
    Buffer.from([0, 2, 0x13, 0x01]), Buffer.from([1, 0]), // cipher suites, compression
    Buffer.from([0, 7, 0x00, 0x2b, 0, 3, 2, 0x03, 0x04]), // extensions: supported_versions [1.3]
  ]);
  return handshakeMessage(1, body);
}

function serverHello(selected: number | null, sessionId = Buffer.alloc(32, 7)): Buffer {
  const extensions = selected === null
    ? Buffer.alloc(0)
    : Buffer.concat([Buffer.from([0, 6, 0x00, 0x2b, 0, 2]), Buffer.from([selected >> 8, selected & 0xff])]);
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]), randomBytes(32), Buffer.from([sessionId.length]), sessionId,
    Buffer.from([0x13, 0x01, 0]), extensions,
  ]);
  return handshakeMessage(2, body);
}

// ------------------------------------------------------------------------------------------ unit tests --

describe('parsePcap', () => {
  const packets = [
    ipv4Tcp({ seq: 1000, flags: TCP_SYN }),
    ipv4Tcp({ seq: 1001, payload: 'hello' }),
    ipv4Tcp({ src: '10.0.0.2', dst: '10.0.0.1', sport: 50000, dport: 3334, seq: 77, payload: 'x' }),
  ];
  const expected = [
    { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 3334, dstPort: 50000, seq: 1000, flags: TCP_SYN, payload: '' },
    { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 3334, dstPort: 50000, seq: 1001, flags: TCP_ACK | TCP_PSH, payload: 'hello' },
    { src: '10.0.0.2', dst: '10.0.0.1', srcPort: 50000, dstPort: 3334, seq: 77, flags: TCP_ACK | TCP_PSH, payload: 'x' },
  ];

  for (const order of ['le', 'be'] as const) {
    for (const nano of [false, true]) {
      it(`reads Ethernet captures (${order === 'le' ? 'little' : 'big'}-endian, ${nano ? 'nanosecond' : 'microsecond'} magic)`, () => {
        const capture = parsePcap(buildPcap(packets.map((p) => ether(p)), { order, nano }));
        assert.equal(capture.linkType, LINKTYPE_ETHERNET);
        assert.equal(capture.packets, 3);
        assert.equal(capture.truncated, false);
        assert.deepEqual(capture.segments.map(plain), expected, 'the 1-byte payload must not include the Ethernet padding');
        assert.ok(Math.abs(capture.segments[1]!.time! - (T0 + 1 + (nano ? 0.123456789 : 0.123456))) < 1e-6);
      });
    }
  }

  it('reads LINUX_SLL, LINUX_SLL2 and raw IPv4 captures', () => {
    for (const [linkType, wrap] of [
      [LINKTYPE_LINUX_SLL, sll], [LINKTYPE_LINUX_SLL2, sll2], [LINKTYPE_RAW, (b: Buffer) => b], [LINKTYPE_IPV4, (b: Buffer) => b],
    ] as const) {
      const capture = parsePcap(buildPcap(packets.map(wrap), { linkType, order: 'be' }));
      assert.equal(capture.linkType, linkType);
      assert.deepEqual(capture.segments.map(plain), expected, `link type ${linkType}`);
    }
  });

  it('handles VLAN tags, IP and TCP options', () => {
    const packet = ipv4Tcp({ seq: 5, payload: 'opts', ipOptions: Buffer.from([1, 1, 1, 0]), tcpOptions: Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]) });
    const capture = parsePcap(buildPcap([ether(packet, { vlan: true })]));
    assert.deepEqual(capture.segments.map((s) => s.payload.toString()), ['opts']);
  });

  it('skips ARP, IPv6, UDP and IPv4 fragments', () => {
    const frames = [
      ether(Buffer.alloc(28), { etherType: 0x0806 }),
      ether(Buffer.alloc(60, 0x60), { etherType: 0x86dd }),
      ether(ipv4Tcp({ seq: 1, payload: 'udp', protocol: 17 })),
      ether(ipv4Tcp({ seq: 1, payload: 'frag', fragment: 0x2000 })),
      ether(ipv4Tcp({ seq: 9, payload: 'tcp' })),
    ];
    const capture = parsePcap(buildPcap(frames));
    assert.equal(capture.packets, 5);
    assert.deepEqual(capture.segments.map((s) => s.payload.toString()), ['tcp']);
  });

  it('ignores a last record cut short and says so', () => {
    const file = buildPcap(packets.map((p) => ether(p)));
    for (const cut of [1, 10, 16, 20]) {
      const capture = parsePcap(file.subarray(0, file.length - cut));
      assert.equal(capture.truncated, true);
      assert.equal(capture.segments.length, 2);
    }
    assert.equal(parsePcap(buildPcap([])).segments.length, 0);
  });

  it('rejects what is not a pcap file with a clear error', () => {
    assert.throws(() => parsePcap(Buffer.from('hello world, this is not a capture')), /not a pcap file: magic/);
    assert.throws(() => parsePcap(Buffer.alloc(0)), /not a pcap file/);
    assert.throws(() => parsePcap(Buffer.from([0xd4, 0xc3, 0xb2, 0xa1, 2, 0])), /shorter than the 24-byte pcap header/);
    assert.throws(() => parsePcap(Buffer.from('0a0d0d0a1c0000004d3c2b1a', 'hex')), /pcapng/);
    assert.throws(() => parsePcap(buildPcap([], { linkType: 105 })), /unsupported pcap link type 105/);
  });

  it('never reads out of bounds on a corrupted capture (fast-check)', () => {
    const file = buildPcap([...packets, ipv4Tcp({ seq: 3, payload: 'z'.repeat(300) })].map((p, i) => (i % 2 ? ether(p, { vlan: true }) : ether(p))));
    fc.assert(fc.property(
      fc.array(fc.tuple(fc.nat({ max: file.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
      fc.nat({ max: file.length }),
      (flips, length) => {
        const corrupt = Buffer.from(file.subarray(0, length));
        for (const [at, value] of flips) if (at < corrupt.length) corrupt[at] = value;
        try {
          const capture = parsePcap(corrupt);
          for (const s of capture.segments) assert.ok(s.payload.length <= corrupt.length);
          reassemble(capture.segments, { port: 3334 }, { allowGaps: true });
        } catch (err) {
          assert.ok(!(err instanceof RangeError) && !(err instanceof TypeError), `unexpected ${String(err)}`);
          assert.match((err as Error).message, /pcap/);
        }
      },
    ), { numRuns: 3000, seed: 42 });
  });
});

describe('reassemble', () => {
  it('puts out-of-order segments in place and drops retransmissions', () => {
    const segments = [
      seg({ seq: 100, flags: TCP_SYN }),
      seg({ seq: 101, payload: 'abc' }),
      seg({ seq: 107, payload: 'ghi' }), // arrives before def
      seg({ seq: 104, payload: 'def' }),
      seg({ seq: 101, payload: 'abc' }), // exact retransmission
      seg({ seq: 105, payload: 'EFGH' }), // overlaps def and ghi, both captured earlier: adds nothing
      seg({ seq: 110, payload: 'jk', flags: TCP_FIN | TCP_ACK }),
      seg({ src: '10.0.0.2', dst: '10.0.0.1', sport: 50000, dport: 3334, seq: 5, payload: 'other direction' }),
    ];
    assert.equal(reassemble(segments, { port: 3334 }).toString(), 'abcdefghijk');
    assert.equal(reassemble(segments, { addr: '10.0.0.1', port: 3334 }).toString(), 'abcdefghijk');
    assert.equal(reassemble(segments, { addr: '10.0.0.9', port: 3334 }).length, 0);
    assert.equal(reassemble(segments, { port: 50000 }).toString(), 'other direction');
    const [stream] = tcpStreams(segments);
    assert.equal(stream!.sawSyn, true);
    assert.equal(stream!.sawFin, true);
  });

  it('handles sequence numbers wrapping past 2^32 and a capture that missed the SYN', () => {
    const segments = [
      seg({ seq: 0xfffffffe, payload: 'ab' }),
      seg({ seq: 2, payload: 'ef' }),
      seg({ seq: 0, payload: 'cd' }),
      seg({ seq: 0xfffffffc, payload: 'xxab' }), // earlier data the capture also saw, out of order
    ];
    assert.equal(reassemble(segments, { port: 3334 }).toString(), 'xxabcdef');
  });

  it('keeps connections apart and concatenates them in the order they started', () => {
    const segments = [
      seg({ dport: 50001, seq: 10, flags: TCP_SYN }),
      seg({ dport: 50002, seq: 900, flags: TCP_SYN }),
      seg({ dport: 50002, seq: 901, payload: 'second' }),
      seg({ dport: 50001, seq: 11, payload: 'first' }),
      // The same port pair reused with a new initial sequence number is a new connection.
      seg({ dport: 50001, seq: 5000, flags: TCP_SYN }),
      seg({ dport: 50001, seq: 5001, payload: 'third' }),
    ];
    assert.equal(reassemble(segments, { port: 3334 }).toString(), 'firstsecondthird');
    assert.deepEqual(tcpStreams(segments).map((s) => s.data.toString()), ['first', 'second', 'third']);
  });

  it('rebuilds any stream from any segmentation, order and retransmissions (fast-check)', () => {
    fc.assert(fc.property(
      fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.uint8Array({ minLength: 1, maxLength: 3000 })),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.boolean(),
      fc.array(fc.nat(), { maxLength: 30 }),
      fc.array(fc.tuple(fc.nat(), fc.oneof(fc.nat({ max: 4 }), fc.nat({ max: 1500 }))), { maxLength: 10 }),
      fc.array(fc.nat(), { maxLength: 50 }),
      (bytes, isn, withSyn, cutPoints, resends, order) => {
        const data = Buffer.from(bytes);
        const cuts = [...new Set(cutPoints.map((c) => c % data.length))].filter((c) => c > 0).sort((a, b) => a - b);
        const ranges = [0, ...cuts].map((start, i) => [start, [...cuts, data.length][i]!] as const);
        for (const [at, length] of resends) ranges.push([at % data.length, Math.min(data.length, (at % data.length) + length + 1)]);
        // Shuffle by the generated keys (capture order), keeping the SYN, when there is one, first.
        const keyed = ranges.map((r, i) => ({ r, key: order[i] ?? i }));
        keyed.sort((a, b) => a.key - b.key);
        const segments = keyed.map(({ r: [start, end] }) => seg({ seq: (isn + 1 + start) >>> 0, payload: data.subarray(start, end) }));
        if (withSyn) segments.unshift(seg({ seq: isn, flags: TCP_SYN }));
        assert.ok(reassemble(segments, { port: 3334 }).equals(data));
      },
    ), { numRuns: 2000, seed: 7 });
  });

  it('throws on bytes the capture missed unless told to allow gaps', () => {
    const segments = [seg({ seq: 1, flags: TCP_SYN }), seg({ seq: 2, payload: 'ab' }), seg({ seq: 6, payload: 'ef' })];
    assert.throws(() => reassemble(segments, { port: 3334 }), /misses 1 range.*2 bytes at offset 2/);
    assert.equal(reassemble(segments, { port: 3334 }, { allowGaps: true }).toString(), 'abef');
    assert.deepEqual(tcpStreams(segments)[0]!.gaps, [{ offset: 2, length: 2 }]);
  });
});

describe('summarizeTls / containsBytes', () => {
  it('reads TLSv1.3 from the ServerHello supported_versions extension', () => {
    const appData = randomBytes(300);
    const c2s = Buffer.concat([record(22, clientHello(), 0x0301), record(20, Buffer.from([1])), record(23, randomBytes(53)), record(23, appData)]);
    const s2c = Buffer.concat([record(22, serverHello(0x0304)), record(20, Buffer.from([1])), record(23, randomBytes(2000)), record(23, randomBytes(100))]);
    const summary = summarizeTls(s2c, c2s);
    assert.deepEqual(summary.handshakeVersions, ['TLSv1.3']);
    assert.equal(summary.records, 8);
    assert.equal(summary.appDataBytes, 53 + 300 + 2000 + 100);
    assert.equal(summary.clientAppDataBytes, 353);
    assert.equal(summary.sawPlaintextHandshakeOnly, true);
    assert.deepEqual(summary.plaintextHandshakeTypes, [1, 2]);
    assert.deepEqual(summary.problems, []);
    // A trailing partial record (capture stopped mid-record) is not a problem.
    assert.deepEqual(summarizeTls(s2c.subarray(0, s2c.length - 10), c2s).problems, []);
  });

  it('falls back to the legacy version and sees a TLS 1.2 handshake in clear', () => {
    const hello = serverHello(null, Buffer.alloc(0));
    const certificate = handshakeMessage(11, randomBytes(700));
    const flight = Buffer.concat([hello, certificate, handshakeMessage(14, Buffer.alloc(0))]);
    // The flight spans two records, split inside the certificate.
    const s2c = Buffer.concat([record(22, flight.subarray(0, 200)), record(22, flight.subarray(200)),
      record(20, Buffer.from([1])), record(22, Buffer.alloc(40, 0)), record(23, randomBytes(64))]); // encrypted Finished
    const c2s = record(22, clientHello(), 0x0301);
    const summary = summarizeTls(s2c, c2s);
    assert.deepEqual(summary.handshakeVersions, ['TLSv1.2']);
    assert.deepEqual(summary.plaintextHandshakeTypes, [1, 2, 11, 14], 'the encrypted Finished must not be read as handshake');
    assert.equal(summary.sawPlaintextHandshakeOnly, false);
  });

  it('finds the records again in a capture that started mid-connection', () => {
    // Payloads that cannot look like a record header (0xaa is no content type): random ones now and then
    // held a plausible header right where the resync looks, and the count came out wrong.
    const fill = (n: number) => Buffer.alloc(n, 0xaa);
    const records = [record(23, fill(500)), record(23, fill(1200)), record(23, fill(40)), record(21, fill(19))];
    const s2c = Buffer.concat(records).subarray(123); // starts inside the first record
    const summary = summarizeTls(s2c, Buffer.alloc(0));
    assert.equal(summary.records, 3);
    assert.equal(summary.appDataBytes, 1240);
    assert.equal(summary.alerts, 1);
    assert.deepEqual(summary.handshakeVersions, []);
    assert.equal(summary.problems.length, 1);
    assert.match(summary.problems[0]!, /^server→client: byte 0: invalid record header [0-9a-f]{10}; records resume at byte 382$/);
  });

  it('never throws on arbitrary record soup (fast-check)', () => {
    const piece = fc.oneof(
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.integer({ min: 20, max: 24 }), fc.uint8Array({ maxLength: 300 })).map(([t, b]) => record(t, Buffer.from(b))),
      fc.tuple(fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 80 }), fc.nat({ max: 80 }))
        .map(([t, b, cut]) => record(22, handshakeMessage(t, Buffer.from(b)).subarray(0, 4 + cut))),
      fc.constantFrom(record(22, serverHello(0x0304)), record(22, serverHello(null, Buffer.alloc(0))), record(20, Buffer.from([1]))),
    );
    fc.assert(fc.property(fc.array(piece, { maxLength: 12 }), fc.array(piece, { maxLength: 12 }), (a, b) => {
      const summary = summarizeTls(Buffer.concat(a), Buffer.concat(b));
      assert.ok(summary.records >= 0 && summary.appDataBytes >= 0);
    }), { numRuns: 3000, seed: 11 });
  });

  it('reports a stream that is not TLS', () => {
    const summary = summarizeTls(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    assert.equal(summary.records, 0);
    assert.equal(summary.sawPlaintextHandshakeOnly, false);
    assert.equal(summary.problems.length, 2);
    assert.deepEqual(summarizeTls(Buffer.alloc(0), Buffer.alloc(0)).problems, []);
  });

  it('containsBytes', () => {
    assert.equal(containsBytes(Buffer.from('xx secret yy'), Buffer.from('secret')), true);
    assert.equal(containsBytes(Buffer.from('xx secreT yy'), Buffer.from('secret')), false);
    assert.equal(containsBytes(Buffer.from('abc'), Buffer.alloc(0)), true);
  });
});

// ---------------------------------------------------------------------------------- the real capture --

function skipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, tcpdump)';
  for (const [cmd, args] of [['ip', ['netns', 'list']], ['tcpdump', ['--version']], ['openssl', ['version']]] as const) {
    const r = spawnSync(cmd, args, { timeout: 10_000, stdio: 'ignore' });
    if (r.error || r.status !== 0) return `${cmd} unavailable`;
  }
  return false;
}

const TLS_PORT = 3334;
const TCP_PORT = 3335;
const SERVER_IP = '10.77.0.1';
const CLIENT_IP = '10.77.0.2';

/** Runs in the server namespace: one connection, echoes every byte, exits when the client has closed. */
const SERVER_JS = `
const fs = require('node:fs'), net = require('node:net'), tls = require('node:tls');
const { MODE, HOST, PORT, CERT, KEY } = process.env;
const onConnection = (socket) => {
  server.close();
  socket.on('data', (d) => socket.write(d));
  socket.on('end', () => socket.end());
  socket.on('error', (e) => { console.error('server socket: ' + e.message); process.exitCode = 1; });
};
const server = MODE === 'tls'
  ? tls.createServer({ key: fs.readFileSync(KEY), cert: fs.readFileSync(CERT), minVersion: 'TLSv1.3' }, onConnection)
  : net.createServer(onConnection);
server.on('error', (e) => { console.error('server: ' + e.message); process.exit(1); });
server.listen(Number(PORT), HOST, () => console.log('listening'));
`;

/** Runs in the client namespace: sends MESSAGE, waits for all of it to come back, closes. */
const CLIENT_JS = `
const net = require('node:net'), tls = require('node:tls');
const { MODE, HOST, PORT, MESSAGE } = process.env;
const message = Buffer.from(MESSAGE);
const socket = MODE === 'tls'
  ? tls.connect({ host: HOST, port: Number(PORT), rejectUnauthorized: false, minVersion: 'TLSv1.3' })
  : net.connect({ host: HOST, port: Number(PORT) });
const chunks = [];
let received = 0;
socket.on(MODE === 'tls' ? 'secureConnect' : 'connect', () => socket.write(message));
socket.on('data', (d) => {
  chunks.push(d);
  received += d.length;
  if (received >= message.length) {
    const echoed = Buffer.concat(chunks).equals(message);
    console.log(JSON.stringify({ protocol: MODE === 'tls' ? socket.getProtocol() : 'tcp', echoed }));
    socket.end();
  }
});
socket.on('error', (e) => { console.error('client: ' + e.message); process.exit(1); });
`;

interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  live.add(child);
  const proc: Proc = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => {
      child.once('close', (code, signal) => {
        live.delete(child);
        resolve({ code, signal });
      });
      child.once('error', (err) => {
        live.delete(child);
        proc.stderr += `spawn error: ${err.message}`;
        resolve({ code: -1, signal: null });
      });
    }),
  };
  child.stdout!.on('data', (d: Buffer) => (proc.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (proc.stderr += d.toString()));
  return proc;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    /* already gone */
  }
}

/** Resolves when `pattern` appears in the process's output; rejects on exit or after timeoutMs. */
function waitForOutput(proc: Proc, which: 'stdout' | 'stderr', pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = which === 'stdout' ? proc.child.stdout! : proc.child.stderr!;
    const check = (): void => {
      if (pattern.test(proc[which])) finish();
    };
    const timer = setTimeout(() => finish(new Error(`${what}: no ${pattern} within ${timeoutMs} ms\n${proc.stdout}\n${proc.stderr}`)), timeoutMs);
    const onExit = (): void => finish(new Error(`${what} exited before ${pattern}\n${proc.stdout}\n${proc.stderr}`));
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      proc.child.off('close', onExit);
      if (err) reject(err);
      else resolve();
    };
    // Our own 'data' listener runs after the one in start() has appended the chunk.
    const onData = (): void => check();
    stream.on('data', onData);
    proc.child.once('close', onExit);
    check();
  });
}

/** Waits for the process to exit; after timeoutMs it is killed and this rejects. */
async function waitForExit(proc: Proc, timeoutMs: number, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      killGroup(proc.child, 'SIGKILL');
      reject(new Error(`${what} did not exit within ${timeoutMs} ms\n${proc.stdout}\n${proc.stderr}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { timeout: 30_000, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
}

/** Resolves once check() is true, polling the capture file; for conditions that have no event. */
async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const skip = skipReason();

describe('a real tcpdump capture in private namespaces', { skip }, () => {
  const hex = randomBytes(3).toString('hex');
  const nsServer = `mnpcap-${hex}-a`;
  const nsClient = `mnpcap-${hex}-b`;
  const needle = `MNEDC-PCAP-PROBE-${randomBytes(8).toString('hex')}`;
  // Many copies, so the stream spans many segments (and TLS records) in each direction.
  const message = `${needle} `.repeat(2000);
  let dir = '';
  let pcapFile = '';
  let tcpdumpStderr = '';
  let segments: TcpSegment[] = [];
  let results: Record<string, { protocol: string; echoed: boolean }> = {};

  const cleanupSync = (): void => {
    for (const child of live) killGroup(child, 'SIGKILL');
    for (const ns of [nsServer, nsClient]) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000, stdio: 'ignore' });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  };

  // Ctrl-C or the runner's SIGTERM must not leave namespaces behind either: clean up, then die of the signal.
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanupSync();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
    process.kill(process.pid, signal);
  };

  before(async () => {
    process.on('exit', cleanupSync).on('SIGINT', onSignal).on('SIGTERM', onSignal).on('SIGHUP', onSignal);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mnpcap-'));
    pcapFile = path.join(dir, 'capture.pcap');
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=test', '-days', '1', '-keyout', key, '-out', cert]);

    // Both ends of the veth pair are created inside the namespaces: nothing touches the root namespace.
    sh('ip', ['netns', 'add', nsServer]);
    sh('ip', ['netns', 'add', nsClient]);
    sh('ip', ['link', 'add', 'veth-s', 'netns', nsServer, 'type', 'veth', 'peer', 'name', 'veth-c', 'netns', nsClient]);
    for (const [ns, dev, ip] of [[nsServer, 'veth-s', `${SERVER_IP}/24`], [nsClient, 'veth-c', `${CLIENT_IP}/24`]] as const) {
      sh('ip', ['-n', ns, 'addr', 'add', ip, 'dev', dev]);
      sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }

    // --immediate-mode: without it libpcap hands packets over in blocks, and SIGINT can lose the last ones.
    // -Z root: Debian's tcpdump otherwise drops to the tcpdump user before opening the file.
    const tcpdump = start('ip', ['netns', 'exec', nsServer, 'tcpdump', '-i', 'veth-s', '-w', pcapFile, '-U', '-s', '0', '-n',
      '--immediate-mode', '-Z', 'root', `tcp and (port ${TLS_PORT} or port ${TCP_PORT})`]);
    await waitForOutput(tcpdump, 'stderr', /listening on/, 15_000, 'tcpdump');

    for (const [mode, port] of [['tls', TLS_PORT], ['tcp', TCP_PORT]] as const) {
      const env = { MODE: mode, HOST: SERVER_IP, PORT: String(port), CERT: cert, KEY: key, MESSAGE: message };
      const server = start('ip', ['netns', 'exec', nsServer, process.execPath, '-e', SERVER_JS], env);
      await waitForOutput(server, 'stdout', /listening/, 15_000, `${mode} server`);
      const client = start('ip', ['netns', 'exec', nsClient, process.execPath, '-e', CLIENT_JS], env);
      const clientExit = await waitForExit(client, 20_000, `${mode} client`);
      assert.equal(clientExit.code, 0, `${mode} client failed: ${client.stderr}`);
      const serverExit = await waitForExit(server, 10_000, `${mode} server`);
      assert.equal(serverExit.code, 0, `${mode} server failed: ${server.stderr}`);
      results[mode] = JSON.parse(client.stdout.trim()) as { protocol: string; echoed: boolean };
    }

    // Both processes have exited, so both FINs were sent; wait until tcpdump has written them (-U writes
    // each packet as it comes) rather than stopping it blindly.
    const finsWritten = (): boolean => {
      if (!fs.existsSync(pcapFile)) return false;
      const fins = parsePcap(fs.readFileSync(pcapFile)).segments.filter((s) => (s.flags ?? 0) & TCP_FIN);
      return [TLS_PORT, TCP_PORT].every((port) => fins.some((s) => s.srcPort === port) && fins.some((s) => s.dstPort === port));
    };
    await until(finsWritten, 10_000, 'the FINs of both connections in the capture');
    killGroup(tcpdump.child, 'SIGINT');
    await waitForExit(tcpdump, 10_000, 'tcpdump after SIGINT');
    tcpdumpStderr = tcpdump.stderr;
    const capture = readPcap(pcapFile);
    assert.equal(capture.linkType, LINKTYPE_ETHERNET);
    assert.equal(capture.truncated, false);
    assert.equal(capture.snapped, 0);
    segments = capture.segments;
  });

  after(() => {
    cleanupSync();
    process.off('exit', cleanupSync).off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
    const left = sh('ip', ['netns', 'list']).split('\n').filter((line) => line.startsWith(`mnpcap-${hex}`));
    assert.deepEqual(left, [], 'namespaces left behind');
  });

  const directions = (port: number): { s2c: Buffer; c2s: Buffer } => {
    const clientPort = segments.find((s) => s.dstPort === port && s.src === CLIENT_IP)?.srcPort;
    assert.ok(clientPort !== undefined, `no client segment to port ${port} in the capture`);
    return {
      s2c: reassemble(segments, { addr: SERVER_IP, port }),
      c2s: reassemble(segments, { addr: CLIENT_IP, port: clientPort }),
    };
  };

  it('tcpdump dropped nothing', () => {
    const dropped = /(\d+) packets? dropped by kernel/.exec(tcpdumpStderr);
    assert.ok(dropped, `no statistics from tcpdump: ${tcpdumpStderr}`);
    assert.equal(Number(dropped[1]), 0);
  });

  it('TLS 1.3: the text is not on the wire in either direction, the ServerHello says TLSv1.3, application data flowed', () => {
    assert.deepEqual(results.tls, { protocol: 'TLSv1.3', echoed: true });
    const { s2c, c2s } = directions(TLS_PORT);
    assert.ok(c2s.length > message.length && s2c.length > message.length, 'the capture holds less than what was sent');
    assert.equal(containsBytes(c2s, Buffer.from(needle)), false, 'plaintext client → server');
    assert.equal(containsBytes(s2c, Buffer.from(needle)), false, 'plaintext server → client');
    const summary = summarizeTls(s2c, c2s);
    assert.deepEqual(summary.problems, []);
    assert.deepEqual(summary.handshakeVersions, ['TLSv1.3']);
    assert.ok(summary.appDataBytes > 0);
    assert.ok(summary.clientAppDataBytes >= message.length && summary.serverAppDataBytes >= message.length);
    assert.equal(summary.sawPlaintextHandshakeOnly, true);
  });

  it('control: over plain TCP the same text is on the wire in both directions', () => {
    assert.deepEqual(results.tcp, { protocol: 'tcp', echoed: true });
    const { s2c, c2s } = directions(TCP_PORT);
    assert.equal(c2s.toString(), message);
    assert.equal(s2c.toString(), message);
    assert.equal(containsBytes(c2s, Buffer.from(needle)), true);
    assert.equal(containsBytes(s2c, Buffer.from(needle)), true);
    assert.equal(summarizeTls(s2c, c2s).records, 0);
  });
});
