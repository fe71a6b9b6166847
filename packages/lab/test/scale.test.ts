/** The scale bench's pure parts: its packets (IPv4/UDP, DNS) and its options, spreading, statistics and table. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { dnsQuery, parseDnsResponse, parseUdp, probeId, probePayload, udpPacket } from '../src/scale/packets';
import {
  deviceId, deviceIndex, formatBytes, formatTable, parseScaleArgs, percentile, randomPairs, seededRandom, sourceAddress,
  observerDevices, splitDevices, type ScaleResult,
} from '../src/scale/stats';

function onesComplementSum(bytes: Buffer): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += bytes.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

describe('scale bench packets', () => {
  it('builds IPv4/UDP whose header checksums to 0xffff and parses back', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), fc.uint8Array({ maxLength: 300 }), (src, dst, sp, dp, body) => {
        const packet = udpPacket(src, dst, sp, dp, Buffer.from(body));
        assert.equal(onesComplementSum(packet.subarray(0, 20)), 0xffff);
        assert.equal(packet.readUInt16BE(2), packet.length);
        const udp = parseUdp(packet)!;
        assert.deepEqual({ ...udp, payload: [...udp.payload] }, { src, dst, srcPort: sp, dstPort: dp, payload: [...body] });
      }));
  });

  it('parseUdp refuses what is not a whole UDP datagram', () => {
    const packet = udpPacket(1, 2, 3, 4, Buffer.from('abc'));
    assert.equal(parseUdp(packet.subarray(0, 27)), null, 'truncated');
    const icmp = Buffer.from(packet);
    icmp[9] = 1;
    assert.equal(parseUdp(icmp), null, 'ICMP');
    const fragment = Buffer.from(packet);
    fragment.writeUInt16BE(0x2000, 6);
    assert.equal(parseUdp(fragment), null, 'first fragment');
    const long = Buffer.from(packet);
    long.writeUInt16BE(100, 24);
    assert.equal(parseUdp(long), null, 'UDP length past the packet');
  });

  it('probe payloads carry their number and nothing else passes for one', () => {
    assert.equal(probeId(probePayload(1234567)), 1234567);
    assert.equal(probeId(Buffer.alloc(8)), null);
    assert.equal(probeId(probePayload(1).subarray(0, 7)), null);
  });

  it('encodes a DNS query as RFC 1035 lays it out', () => {
    assert.equal(dnsQuery(0x1234, 'dev-7.mnedc').toString('hex'),
      '1234' + '0100' + '0001' + '0000' + '0000' + '0000' + '05' + Buffer.from('dev-7').toString('hex') + '05' +
      Buffer.from('mnedc').toString('hex') + '00' + '0001' + '0001');
    assert.throws(() => dnsQuery(1, 'a..b'), /not a domain name/);
    assert.throws(() => dnsQuery(1, `${'x'.repeat(64)}.mnedc`), /not a domain name/);
  });

  it('reads the ID, RCODE and A records of a response, compressed names included', () => {
    const query = dnsQuery(0xbeef, 'dev-7.mnedc');
    const answer = Buffer.from('c00c' + '0001' + '0001' + '0000003c' + '0004' + '0a4d0003', 'hex');
    const response = Buffer.concat([query, answer]);
    response.writeUInt16BE(0x8180, 2);
    response.writeUInt16BE(1, 6);
    assert.deepEqual(parseDnsResponse(response), { id: 0xbeef, rcode: 0, addresses: ['10.77.0.3'] });
    const nx = Buffer.from(query);
    nx.writeUInt16BE(0x8183, 2);
    assert.deepEqual(parseDnsResponse(nx), { id: 0xbeef, rcode: 3, addresses: [] });
    assert.equal(parseDnsResponse(query), null, 'a query is not a response');
    assert.equal(parseDnsResponse(response.subarray(0, response.length - 2)), null, 'record cut short');
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      parseDnsResponse(Buffer.from(bytes));
      parseUdp(Buffer.from(bytes));
    }));
  });
});

describe('scale bench options and statistics', () => {
  it('parses options with defaults and names what is wrong', () => {
    assert.deepEqual(parseScaleArgs(['--devices', '10000']), { devices: 10000, discovery: 'auto', workers: 4, probes: 2000, secondsIdle: 30, relays: 1 });
    assert.deepEqual(parseScaleArgs(['--devices', '500', '--workers', '2', '--probes', '50', '--seconds-idle', '5', '--discovery', 'names']),
      { devices: 500, discovery: 'names', workers: 2, probes: 50, secondsIdle: 5, relays: 1 });
    assert.equal(parseScaleArgs(['--devices', '3000', '--relays', '3']).relays, 3);
    assert.throws(() => parseScaleArgs(['--relays', '9']), /--relays wants an integer from 1 to 8, not "9"/);
    assert.throws(() => parseScaleArgs(['--discovery', 'some']), /--discovery wants one of auto, full, names, off, not "some"/);
    assert.throws(() => parseScaleArgs(['--devices', '1']), /--devices wants an integer from 2 to 65533, not "1"/);
    assert.throws(() => parseScaleArgs(['--devices', '70000']), /--devices wants an integer from 2 to 65533/);
    assert.throws(() => parseScaleArgs(['--devices']), /not nothing/);
    assert.throws(() => parseScaleArgs(['--device', '5']), /unknown option "--device"/);
  });

  it('spreads devices over workers evenly, each exactly once', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 70_000 }), fc.integer({ min: 1, max: 64 }), (devices, workers) => {
      const shares = splitDevices(devices, workers);
      assert.equal(shares.length, workers);
      assert.equal(shares.reduce((a, s) => a + s.count, 0), devices);
      shares.forEach((s, i) => assert.equal(s.first, i === 0 ? 0 : shares[i - 1].first + shares[i - 1].count));
      const counts = shares.map((s) => s.count);
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1);
    }));
  });

  it('gives the observer a few devices, none of a fleet too small to spare them', () => {
    assert.deepEqual([2, 15, 16, 63, 64, 500, 10_000].map(observerDevices), [0, 1, 2, 7, 8, 8, 8]);
  });

  it('names devices and sources so IDs map back to indices', () => {
    assert.equal(deviceIndex(deviceId(9999)), 9999);
    assert.equal(deviceIndex('other'), -1);
    assert.equal(deviceIndex('dev-x'), -1);
    assert.equal(sourceAddress(0), '127.1.0.1');
    assert.equal(sourceAddress(249), '127.1.0.250');
    assert.equal(sourceAddress(250), '127.1.0.1');
  });

  it('takes nearest-rank percentiles', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(percentile(values, 50), 50);
    assert.equal(percentile(values, 99), 99);
    assert.equal(percentile(values, 100), 100);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([], 50), null);
  });

  it('draws pairs of distinct members, the same for the same seed', () => {
    const members = [3, 5, 8, 13];
    const pairs = randomPairs(members, 500, seededRandom(1));
    for (const [a, b] of pairs) {
      assert.notEqual(a, b);
      assert.ok(members.includes(a) && members.includes(b));
    }
    assert.equal(new Set(pairs.map(([a, b]) => `${a}>${b}`)).size, 12, 'every ordered pair turns up');
    assert.deepEqual(randomPairs(members, 20, seededRandom(9)), randomPairs(members, 20, seededRandom(9)));
    assert.deepEqual(randomPairs([1], 5, seededRandom(1)), []);
  });

  it('prints one Markdown row per run, with what timed out said so', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.50 KiB');
    assert.equal(formatBytes(5.2 * 1024 ** 3), '5.20 GiB');
    const result: ScaleResult = {
      devices: 10000, workers: 4, commit: 'abc', cores: 2, loadavg: { start: [1, 1, 1], end: [2.5, 1, 1] },
      join: { seconds: 197, joined: 10000 }, relay: { rssKib: 1570 * 1024, kibPerDevice: 160.8, joinCpuMs: 13.04, joinCpuShare: 66, joinRunQueueSeconds: 3, idleCpuPercent: 12.5, idleSeconds: 30 },
      discovery: { totalBytes: 5.2 * 1024 ** 3, meanBytes: 545_000 }, peers: { full: 10000, complete: 0, seconds: null }, discoveryRequested: 'full',
      dns: { asked: 200, answered: 0, correct: 0, p50Ms: null, p99Ms: null }, probes: { sent: 2000, delivered: 448 },
      stormProbes: { sent: 2000, delivered: 300, connectedWhenSent: 5000 }, storm: { seconds: null, back: 9990, sameIp: 9990, hadIp: 10000 }, notes: [],
    };
    const lines = formatTable([result]).split('\n');
    assert.equal(lines.length, 3);
    const cells = lines[2].split('|').map((c) => c.trim()).slice(1, -1);
    assert.deepEqual(cells, ['10,000', '1', '197.0 s', '13.0 ms', '1.53 GiB (161 KiB)', '12.5%', '532 KiB (5.20 GiB)', '0 of 10000', '-', '-',
      '448/2000', '-', '300/2000 (5000 back)', '9990/10000 (timeout)', '9990 of 10000', '1.00 → 2.50']);
    // A cluster: how many relays, and the probes between devices on different ones.
    const cluster = { ...result, relays: 3, crossRelay: { sent: 1300, delivered: 1299 } };
    const clusterCells = formatTable([cluster]).split('\n')[2].split('|').map((c) => c.trim()).slice(1, -1);
    assert.deepEqual([clusterCells[1], clusterCells[11]], ['3', '1299/1300']);
    const auto = { ...result, peers: { full: 1000, complete: 1000, seconds: 2.25 }, discoveryRequested: 'auto' as const };
    assert.equal(formatTable([auto]).split('\n')[2].split('|')[8].trim(), 'all 1,000 (2.3 s); 9,000 by DNS');
    const names = { ...result, peers: { full: 0, complete: 0, seconds: null }, discoveryRequested: 'names' as const,
      dnsOnJoin: { asked: 200, answered: 200, correct: 199, p50Ms: 2.5, p99Ms: 41 } };
    const namesCells = formatTable([names]).split('\n')[2].split('|').map((c) => c.trim());
    assert.equal(namesCells[8], 'none pushed; 10,000 by DNS');
    assert.equal(namesCells[10], '2.50/41 (199/200 right)');
  });
});
