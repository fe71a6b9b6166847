import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import {
  answerDns, DNS_TTL_SECONDS, DnsNames, DnsRcode, DnsType, encodeDnsReply, encodeName, formatIpv6, ipv4ToInt, parseDnsQuery, parseIpv6, type DnsZone,
} from '../src';

/** A query as dig sends it: RD set, one question, optionally an OPT record. */
function query(name: string, type: number, options: { id?: number; edns?: number; version?: number; flags?: number; cls?: number } = {}): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(options.id ?? 0x1234, 0);
  header.writeUInt16BE(options.flags ?? 0x0100, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(options.edns === undefined ? 0 : 1, 10);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(options.cls ?? 1, 2);
  const parts = [header, encodeName(name === '' ? [] : name.split('.')), tail];
  if (options.edns !== undefined) {
    const opt = Buffer.alloc(11);
    opt.writeUInt16BE(DnsType.OPT, 1);
    opt.writeUInt16BE(options.edns, 3);
    opt[6] = options.version ?? 0;
    parts.push(opt);
  }
  return Buffer.concat(parts);
}

interface Decoded {
  id: number;
  flags: number;
  rcode: number;
  qd: number;
  answers: Array<{ pointer: number; type: number; ttl: number; data: Buffer }>;
  ar: number;
}

/** Reads a reply back, following only what encodeDnsReply writes (owner names are pointers). */
function decode(reply: Buffer): Decoded {
  const qd = reply.readUInt16BE(4);
  let offset = 12;
  if (qd === 1) {
    while (reply[offset] !== 0) offset += reply[offset]! + 1;
    offset += 5;
  }
  const answers: Decoded['answers'] = [];
  for (let i = 0; i < reply.readUInt16BE(6); i++) {
    const length = reply.readUInt16BE(offset + 10);
    answers.push({ pointer: reply.readUInt16BE(offset), type: reply.readUInt16BE(offset + 2), ttl: reply.readUInt32BE(offset + 6), data: reply.subarray(offset + 12, offset + 12 + length) });
    offset += 12 + length;
  }
  const flags = reply.readUInt16BE(2);
  return { id: reply.readUInt16BE(0), flags, rcode: flags & 0xf, qd, answers, ar: reply.readUInt16BE(10) };
}

function zoneOf(devices: Array<[string, string, string]>, domain = 'mnedc'): { zone: DnsZone; names: DnsNames } {
  const names = new DnsNames();
  for (const [id, ip, host] of devices) names.up(id, ipv4ToInt(ip), host);
  return {
    names,
    zone: { domain: domain.split('.'), subnet: { network: ipv4ToInt('10.0.0.0'), prefix: 24 }, resolve: (n) => names.resolve(n), nameOf: (ip) => names.nameOf(ip) },
  };
}

const { zone, names } = zoneOf([['device-a', '10.0.0.2', 'kitchen'], ['Device_B', '10.0.0.3', 'garage'], ['relay', '10.0.0.1', 'hub']]);
const ask = (packet: Buffer, transport: 'udp' | 'tcp' = 'udp') => {
  const result = answerDns(packet, zone, transport);
  return { ...result, decoded: result.reply ? decode(result.reply) : null };
};

describe('DNS answers', () => {
  it('gives AAAA in the network\'s /64 (the IPv4 lease as interface ID) when the zone has one, both for ANY', () => {
    const prefix = parseIpv6('fd12:3456:789a::')!.subarray(0, 8);
    const v6 = { ...zone, prefix6: prefix };
    const aaaa = decode(answerDns(query('device-a.mnedc', DnsType.AAAA), v6, 'udp').reply!);
    assert.equal(aaaa.answers.length, 1);
    assert.deepEqual({ ...aaaa.answers[0]!, data: formatIpv6(aaaa.answers[0]!.data) }, { pointer: 0xc00c, type: DnsType.AAAA, ttl: DNS_TTL_SECONDS, data: 'fd12:3456:789a::a00:2' });
    const any = decode(answerDns(query('kitchen.mnedc', DnsType.ANY), v6, 'udp').reply!);
    assert.deepEqual(any.answers.map((a) => a.type), [DnsType.A, DnsType.AAAA]);
  });

  it('gives A for <device-id>.<domain>, case-insensitively, with the question echoed as sent and a compressed owner name', () => {
    const packet = query('DeViCe-A.MNEDC', DnsType.A);
    const { reply, decoded, outcome } = ask(packet);
    assert.equal(outcome, 'answer');
    assert.equal(decoded!.id, 0x1234);
    assert.equal(decoded!.flags & 0x8000, 0x8000, 'QR');
    assert.equal(decoded!.flags & 0x0400, 0x0400, 'AA');
    assert.equal(decoded!.flags & 0x0100, 0x0100, 'RD echoed');
    assert.equal(decoded!.rcode, DnsRcode.NoError);
    assert.deepEqual(reply!.subarray(12, packet.length), packet.subarray(12), 'question echoed byte for byte');
    assert.equal(decoded!.answers.length, 1);
    assert.deepEqual(decoded!.answers[0], { pointer: 0xc00c, type: DnsType.A, ttl: DNS_TTL_SECONDS, data: Buffer.from([10, 0, 0, 2]) });
  });

  it('names a device by its sanitised ID and by its unique hostname, and gives PTR for its address', () => {
    assert.deepEqual(ask(query('device-b.mnedc', DnsType.A)).decoded!.answers[0]!.data, Buffer.from([10, 0, 0, 3]));
    assert.deepEqual(ask(query('kitchen.mnedc', DnsType.A)).decoded!.answers[0]!.data, Buffer.from([10, 0, 0, 2]));
    const ptr = ask(query('3.0.0.10.in-addr.arpa', DnsType.PTR)).decoded!;
    assert.equal(ptr.rcode, DnsRcode.NoError);
    assert.deepEqual(ptr.answers[0]!.data, encodeName(['device-b', 'mnedc']));
    assert.equal(ask(query('9.0.0.10.in-addr.arpa', DnsType.PTR)).decoded!.rcode, DnsRcode.NXDomain);
  });

  it('NXDOMAIN for unknown names in the domain, NODATA for other types of known ones, REFUSED outside it', () => {
    const nx = ask(query('nobody.mnedc', DnsType.A));
    assert.equal(nx.outcome, 'nxdomain');
    assert.equal(nx.decoded!.rcode, DnsRcode.NXDomain);
    assert.equal(nx.decoded!.flags & 0x0400, 0x0400, 'authoritative');
    const aaaa = ask(query('device-a.mnedc', DnsType.AAAA));
    assert.equal(aaaa.decoded!.rcode, DnsRcode.NoError);
    assert.equal(aaaa.decoded!.answers.length, 0);
    for (const [name, type] of [['example.com', DnsType.A], ['mnedc.example.com', DnsType.A], ['4.3.2.1.in-addr.arpa', DnsType.PTR], ['0.10.in-addr.arpa', DnsType.PTR]] as const) {
      const refused = ask(query(name, type));
      assert.equal(refused.outcome, 'refused', name);
      assert.equal(refused.decoded!.rcode, DnsRcode.Refused, name);
    }
    assert.equal(ask(query('device-a.mnedc', DnsType.AXFR)).decoded!.rcode, DnsRcode.Refused);
    assert.equal(ask(query('device-a.mnedc', DnsType.A, { cls: 3 })).decoded!.rcode, DnsRcode.Refused, 'CHAOS');
  });

  it('a configured domain of several labels', () => {
    const other = zoneOf([['device-a', '10.0.0.2', '']], 'overlay.example.org');
    const reply = decode(answerDns(query('device-a.Overlay.Example.org', DnsType.A), other.zone, 'udp').reply!);
    assert.deepEqual(reply.answers[0]!.data, Buffer.from([10, 0, 0, 2]));
    assert.equal(answerDns(query('device-a.mnedc', DnsType.A), other.zone, 'udp').outcome, 'refused');
  });

  it('a device is resolvable the moment it is up, and not after it is down', () => {
    names.up('late', ipv4ToInt('10.0.0.9'), '');
    assert.equal(ask(query('late.mnedc', DnsType.A)).outcome, 'answer');
    names.down('late');
    assert.equal(ask(query('late.mnedc', DnsType.A)).outcome, 'nxdomain');
  });

  it('answers EDNS with an OPT record, BADVERS for version 1, NOTIMP for other opcodes, nothing to responses', () => {
    const edns = ask(query('device-a.mnedc', DnsType.A, { edns: 4096 })).decoded!;
    assert.equal(edns.ar, 1);
    assert.equal(edns.answers.length, 1);
    const badvers = ask(query('device-a.mnedc', DnsType.A, { edns: 4096, version: 1 }));
    assert.equal(badvers.outcome, 'formerr');
    assert.equal(badvers.reply![badvers.reply!.length - 6], 1, 'extended rcode BADVERS');
    const notimp = ask(query('device-a.mnedc', DnsType.A, { flags: 2 << 11 }));
    assert.equal(notimp.decoded!.rcode, DnsRcode.NotImp);
    assert.equal(ask(query('device-a.mnedc', DnsType.A, { flags: 0x8000 })).reply, null);
    assert.equal(ask(Buffer.alloc(11)).reply, null);
  });

  it('FORMERR, with the ID, for malformed queries', () => {
    const good = query('device-a.mnedc', DnsType.A);
    const cases: Array<[string, Buffer]> = [
      ['two questions', Buffer.concat([good.subarray(0, 4), Buffer.from([0, 2]), good.subarray(6)])],
      ['truncated name', good.subarray(0, 16)],
      ['no type and class', good.subarray(0, good.length - 3)],
      ['trailing bytes', Buffer.concat([good, Buffer.from([0])])],
      ['compression pointer', Buffer.concat([good.subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])])],
      ['label too long', Buffer.concat([good.subarray(0, 12), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])])],
      ['name too long', Buffer.concat([good.subarray(0, 12), ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])), Buffer.from([0, 0, 1, 0, 1])])],
      ['answer records', Buffer.concat([good.subarray(0, 6), Buffer.from([0, 1]), good.subarray(8)])],
      ['additional record not OPT', Buffer.concat([good.subarray(0, 10), Buffer.from([0, 1]), good.subarray(12), Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])])],
    ];
    for (const [what, packet] of cases) {
      const result = ask(packet);
      assert.equal(result.outcome, 'formerr', what);
      assert.equal(result.decoded!.rcode, DnsRcode.FormErr, what);
      assert.equal(result.decoded!.id, 0x1234, what);
    }
  });

  it('says NXDOMAIN, never throws, for a reverse name whose device name and domain pass 255 octets together', () => {
    const longId = ['a', 'b', 'c'].map((c) => c.repeat(60)).join('.');
    const domain = ['x', 'y'].map((c) => c.repeat(40)).join('.');
    const big = zoneOf([[longId, '10.0.0.5', '']], domain);
    const ptr = answerDns(query('5.0.0.10.in-addr.arpa', DnsType.PTR), big.zone, 'udp');
    assert.equal(ptr.outcome, 'nxdomain');
    assert.equal(decode(ptr.reply!).rcode, DnsRcode.NXDomain);
    assert.equal(answerDns(query(`${longId}.${domain}`.slice(0, 250), DnsType.A), big.zone, 'udp').outcome, 'refused', 'and asking forward is harmless');
  });

  it('sets TC and leaves the answers out rather than exceed the size the transport allows', () => {
    // Our answers fit 512 bytes even at the longest names (a 255-byte PTR target); the limit is still kept.
    const longId = ['a', 'b', 'c', 'd'].map((c) => c.repeat(60)).join('.');
    const big = zoneOf([[longId, '10.0.0.5', '']]);
    const ptr = answerDns(query('5.0.0.10.in-addr.arpa', DnsType.PTR), big.zone, 'udp');
    assert.equal(decode(ptr.reply!).answers.length, 1);
    assert.ok(ptr.reply!.length <= 512);
    const parsed = parseDnsQuery(query('device-a.mnedc', DnsType.A));
    const tiny = decode(encodeDnsReply(parsed, { rcode: DnsRcode.NoError, aa: true, answers: [{ type: DnsType.A, ip: 1 }], ttl: 5 }, 40));
    assert.equal(tiny.flags & 0x0200, 0x0200, 'TC');
    assert.equal(tiny.answers.length, 0);
  });
});

describe('DNS names follow the hosts file rules', () => {
  it('a canonical ID beats a sanitised one; two sanitised IDs or two hostnames alike give nobody the name', () => {
    const table = new DnsNames();
    table.up('DEVICE-B', ipv4ToInt('10.0.0.7'), 'device-c');
    assert.equal(table.resolve('device-b'), ipv4ToInt('10.0.0.7'));
    table.up('device-b', ipv4ToInt('10.0.0.3'), 'x');
    assert.equal(table.resolve('device-b'), ipv4ToInt('10.0.0.3'), 'the canonical ID wins');
    table.up('device-c', ipv4ToInt('10.0.0.4'), '');
    assert.equal(table.resolve('device-c'), ipv4ToInt('10.0.0.4'), 'a hostname never takes an ID\'s name');
    table.up('one', ipv4ToInt('10.0.0.10'), 'same');
    table.up('two', ipv4ToInt('10.0.0.11'), 'same');
    assert.equal(table.resolve('same'), undefined);
    table.down('two');
    assert.equal(table.resolve('same'), ipv4ToInt('10.0.0.10'), 'unique again once the other leaves');
    assert.equal(table.nameOf(ipv4ToInt('10.0.0.7')), undefined, 'DEVICE-B lost its only name');
    assert.equal(table.nameOf(ipv4ToInt('10.0.0.10')), 'one');
  });
});

describe('DNS fuzz (fast-check)', () => {
  const mutated = fc.tuple(
    fc.constantFrom(query('device-a.mnedc', DnsType.A), query('3.0.0.10.in-addr.arpa', DnsType.PTR, { edns: 1232 }), query('x.example', DnsType.AAAA)),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
    fc.nat(),
  ).map(([base, flips, cut]) => {
    const packet = Buffer.from(base);
    for (const [at, value] of flips) packet[at % packet.length] = value;
    return packet.subarray(0, cut % (packet.length + 2));
  });

  it('never throws; every reply is a response to the same ID, and anything with a readable header is answered unless it is a response', () => {
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)), mutated), fc.constantFrom('udp', 'tcp' as const), (packet, transport) => {
      const result = answerDns(packet, zone, transport as 'udp' | 'tcp');
      if (packet.length < 12 || (packet[2]! & 0x80) !== 0) {
        assert.equal(result.reply, null);
        return;
      }
      assert.ok(result.reply, 'answered');
      assert.equal(result.reply.readUInt16BE(0), packet.readUInt16BE(0));
      assert.equal(result.reply[2]! & 0x80, 0x80);
      if (transport === 'udp') assert.ok(result.reply.length <= 1232);
    }), { numRuns: 20_000, seed: 15 });
  });
});
