import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  buildIcmpUnreachable, internetChecksum, intToIpv4, ipv4ToInt, parseHello, parsePeerUpdate, parseReject,
  parseSubnet, parseWelcome, ProtocolError,
} from '../src';

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const isBad = (field: string) => (e: unknown) =>
  e instanceof ProtocolError && e.message.includes(field);

describe('handshake messages', () => {
  const hello = { version: 1, deviceId: 'dev-1', hostname: 'h', underlay: ['192.168.1.10'], previousIp: '10.0.0.5' };

  it('parses a valid HELLO and ignores unknown fields', () => {
    const parsed = parseHello(json({ ...hello, futureField: 42, auth: { token: 'x' } }));
    assert.equal(parsed.deviceId, 'dev-1');
    assert.equal(parsed.previousIp, '10.0.0.5');
    assert.deepEqual(parsed.auth, { token: 'x' });
    assert.deepEqual(parsed.capabilities, []);
  });

  it('names the field that is wrong', () => {
    assert.throws(() => parseHello(json({ ...hello, deviceId: '' })), isBad('HELLO.deviceId'));
    assert.throws(() => parseHello(json({ ...hello, deviceId: 'a b' })), isBad('HELLO.deviceId'));
    assert.throws(() => parseHello(json({ ...hello, deviceId: 'x'.repeat(129) })), isBad('HELLO.deviceId'));
    assert.throws(() => parseHello(json({ ...hello, version: '1' })), isBad('HELLO.version'));
    assert.throws(() => parseHello(json({ ...hello, previousIp: '10.0.0.256' })), isBad('HELLO.previousIp'));
    assert.throws(() => parseHello(json({ ...hello, underlay: new Array(17).fill('1.2.3.4') })), isBad('HELLO.underlay'));
    assert.throws(() => parseHello(json({ ...hello, underlay: ['<script>'] })), isBad('HELLO.underlay[0]'));
    assert.throws(() => parseHello(Buffer.from('{"version":1')), (e: unknown) => e instanceof ProtocolError && e.code === 'bad-json');
    assert.throws(() => parseHello(json([1, 2])), (e: unknown) => e instanceof ProtocolError && e.code === 'bad-json');
  });

  it('WELCOME.ip6 is taken only as the unique local address that carries the IPv4 lease; multicast keeps the groups it knows', () => {
    const welcome = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 2000, deadAfterMs: 6000 };
    assert.equal(parseWelcome(json({ ...welcome, ip6: 'FD12:3456:789a:0:0:0:a00:2' })).ip6, 'fd12:3456:789a::a00:2');
    for (const ip6 of ['fd12:3456:789a::a00:3', 'fd12:3456:789a::1:a00:2', '2001:db8::a00:2', 'fe80::a00:2', 'fd12::10.0.0.2', 'fd12::a00:2%eth0', 'x']) {
      assert.throws(() => parseWelcome(json({ ...welcome, ip6 })), isBad('WELCOME.ip6'), ip6);
    }
    assert.deepEqual(parseWelcome(json({ ...welcome, multicast: ['ssdp', 'llmnr', 'mdns'] })).multicast, ['mdns', 'ssdp']);
    assert.throws(() => parseWelcome(json({ ...welcome, multicast: ['MDNS!'] })), isBad('WELCOME.multicast[0]'));
  });

  it('round-trips WELCOME, REJECT and PEERS', () => {
    const welcome = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 2000, deadAfterMs: 6000 };
    // An older server sends no capabilities: none are granted.
    assert.deepEqual(parseWelcome(json(welcome)), { ...welcome, capabilities: [] });
    assert.deepEqual(parseWelcome(json({ ...welcome, capabilities: ['gso'] })).capabilities, ['gso']);
    assert.throws(() => parseWelcome(json({ ...welcome, capabilities: 'gso' })), isBad('WELCOME.capabilities'));
    assert.throws(() => parseWelcome(json({ ...welcome, mtu: 100 })), isBad('WELCOME.mtu'));
    // The DNS domain goes to resolvectl as an argument: nothing but a plain lowercase name is taken.
    assert.equal(parseWelcome(json({ ...welcome, dnsDomain: 'overlay.example' })).dnsDomain, 'overlay.example');
    for (const bad of ['', 'MNEDC', '~.', 'a b', '-x', 'x'.repeat(64), 7]) {
      assert.throws(() => parseWelcome(json({ ...welcome, dnsDomain: bad })), isBad('WELCOME.dnsDomain'), String(bad));
    }
    assert.deepEqual(parseReject(json({ code: 'pool-full', reason: 'all 253 addresses are in use' })),
      { code: 'pool-full', reason: 'all 253 addresses are in use' });
    assert.equal(parseReject(json({ code: 'from-the-future', reason: 'r' })).code, 'forbidden');
    const peer = { deviceId: 'p', ip: '10.0.0.9', hostname: 'ph', underlay: [], since: 5 };
    assert.deepEqual(parsePeerUpdate(json({ reset: true, more: true, up: [peer], down: ['q'] })), { reset: true, more: true, up: [peer], down: ['q'] });
    assert.throws(() => parsePeerUpdate(json({ up: [{ ...peer, ip: 'nope' }] })), isBad('PEERS.up[0].ip'));
  });

  it('refuses a WELCOME that would make the client route what is not the overlay into its TUN', () => {
    const welcome = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 2000, deadAfterMs: 6000 };
    const refused: Array<[object, string, RegExp]> = [
      [{ prefix: 1 }, 'WELCOME.prefix', /1 is outside 16\.\.30/],
      [{ prefix: 31 }, 'WELCOME.prefix', /outside 16\.\.30/],
      [{ ip: '10.0.1.2' }, 'WELCOME.serverIp', /10\.0\.0\.1 is outside the announced subnet 10\.0\.1\.0\/24/],
      [{ ip: '10.0.0.0' }, 'WELCOME.ip', /network or broadcast/],
      [{ ip: '10.0.0.255' }, 'WELCOME.ip', /network or broadcast/],
      [{ ip: '224.0.0.2', serverIp: '224.0.0.1' }, 'WELCOME.ip', /not a unicast address/],
      [{ ip: '127.0.0.2', serverIp: '127.0.0.1' }, 'WELCOME.ip', /not a unicast address/],
      [{ serverIp: '10.0.0.2' }, 'WELCOME.serverIp', /cannot be the relay's address/],
      [{ keepaliveMs: 5000, deadAfterMs: 6000 }, 'WELCOME.deadAfterMs', /less than twice keepaliveMs/],
    ];
    for (const [change, field, why] of refused) {
      assert.throws(() => parseWelcome(json({ ...welcome, ...change })), (e: unknown) => isBad(field)(e) && why.test((e as Error).message), JSON.stringify(change));
    }
    assert.equal(parseWelcome(json({ ...welcome, ip: '172.16.3.4', serverIp: '172.16.0.1', prefix: 16 })).prefix, 16);
  });
});

describe('IPv4 helpers', () => {
  it('converts addresses both ways and rejects junk', () => {
    assert.equal(ipv4ToInt('10.0.0.1'), 0x0a000001);
    assert.equal(ipv4ToInt('255.255.255.255'), 0xffffffff);
    assert.equal(intToIpv4(0xc0a80101), '192.168.1.1');
    for (const bad of ['1.2.3', '1.2.3.4.5', '01.2.3.4', '256.0.0.1', ' 1.2.3.4', '']) {
      assert.throws(() => ipv4ToInt(bad), /is not an IPv4 address/, bad);
    }
  });

  it('parses subnets and refuses host bits', () => {
    assert.deepEqual(parseSubnet('10.0.0.0/24'), { network: 0x0a000000, prefix: 24, broadcast: 0x0a0000ff });
    assert.equal(parseSubnet('10.1.0.0/16').broadcast, 0x0a01ffff);
    assert.throws(() => parseSubnet('10.0.0.5/24'), /host bits set; the network is 10\.0\.0\.0\/24/);
    assert.throws(() => parseSubnet('10.0.0.0/33'), /larger than 32/);
    assert.throws(() => parseSubnet('10.0.0.0'), /not an IPv4 prefix/);
  });

  it('builds a checksummed ICMP unreachable quoting the original header, but never for ICMP errors', () => {
    const original = Buffer.alloc(60);
    original[0] = 0x45; original.writeUInt16BE(60, 2); original[8] = 64; original[9] = 17;
    original.writeUInt32BE(ipv4ToInt('10.0.0.2'), 12); original.writeUInt32BE(ipv4ToInt('10.0.0.77'), 16);
    const icmp = buildIcmpUnreachable(original, ipv4ToInt('10.0.0.1'), 1)!;
    assert.equal(icmp.length, 20 + 8 + 28);
    assert.equal(internetChecksum(icmp, 0, 20), 0, 'IP header checksum verifies');
    assert.equal(internetChecksum(icmp, 20), 0, 'ICMP checksum verifies');
    assert.equal(intToIpv4(icmp.readUInt32BE(16)), '10.0.0.2');
    assert.equal(icmp[20], 3);
    assert.ok(icmp.subarray(28).equals(original.subarray(0, 28)));
    assert.equal(buildIcmpUnreachable(icmp, ipv4ToInt('10.0.0.1'), 1), null);
    const fragment = Buffer.from(original); fragment.writeUInt16BE(100, 6);
    assert.equal(buildIcmpUnreachable(fragment, ipv4ToInt('10.0.0.1'), 1), null);
  });
});
