import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { findOverlaps, hostAddresses, parseProcRoute, parseSubnet, parseSubnetList, type HostNetworks } from '../src';

/** What a home host looks like: LAN 192.168.0.10/24 on eth0, default via 192.168.0.1, plus the overlay's own TUN. */
const ROUTE_FILE = [
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  'eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
  'eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
  'mnedc0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  'docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
  'eth0\t0000710A\t0100A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  '*\t0000000B\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0',
  'eth0\t0000A8C0\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0',
  'garbage line',
  '',
].join('\n');

function host(): HostNetworks {
  return {
    addresses: hostAddresses({
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, cidr: '127.0.0.1/8' }],
      eth0: [
        { address: '192.168.0.10', family: 'IPv4', internal: false, cidr: '192.168.0.10/24' },
        { address: 'fe80::1', family: 'IPv6', internal: false, cidr: 'fe80::1/64' },
      ],
      mnedc0: [{ address: '10.0.0.2', family: 4, internal: false, cidr: '10.0.0.2/24' }],
      docker0: [{ address: '172.17.0.1', family: 'IPv4', internal: false, cidr: '172.17.0.1/16' }],
    }),
    routes: parseProcRoute(ROUTE_FILE),
  };
}

const check = (subnet: string, options: { allowed?: string; relay?: { address: string; source: string } } = {}) =>
  findOverlaps(parseSubnet(subnet), host(), { ownInterface: 'mnedc0', allowed: parseSubnetList(options.allowed ?? ''), ...options.relay ? { relay: options.relay } : {} });

describe('overlay subnet against the host networks', () => {
  it('reads /proc/net/route: little-endian hex, up and not reject, gateway only with RTF_GATEWAY', () => {
    assert.deepEqual(parseProcRoute(ROUTE_FILE), [
      { interface: 'eth0', destination: '0.0.0.0', prefix: 0, gateway: '192.168.0.1' },
      { interface: 'eth0', destination: '192.168.0.0', prefix: 24, gateway: '' },
      { interface: 'mnedc0', destination: '10.0.0.0', prefix: 24, gateway: '' },
      { interface: 'docker0', destination: '172.17.0.0', prefix: 16, gateway: '' },
      { interface: 'eth0', destination: '10.113.0.0', prefix: 24, gateway: '192.168.0.1' },
    ]);
    assert.deepEqual(parseProcRoute('h\neth0\tC0A80000\t00000000\t0001\t0\t0\t0\tFFFFFF00', 'BE'),
      [{ interface: 'eth0', destination: '192.168.0.0', prefix: 24, gateway: '' }]);
    // A mask with a hole is not a prefix: skipped rather than guessed.
    assert.deepEqual(parseProcRoute('h\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FF00FF'), []);
  });

  it('keeps IPv4, non-loopback addresses with their prefix', () => {
    assert.deepEqual(host().addresses, [
      { interface: 'eth0', address: '192.168.0.10', prefix: 24 },
      { interface: 'mnedc0', address: '10.0.0.2', prefix: 24 },
      { interface: 'docker0', address: '172.17.0.1', prefix: 16 },
    ]);
  });

  it('names the LAN address and the default gateway a subnet equal to the LAN would capture', () => {
    assert.deepEqual(check('192.168.0.0/24').refused, [
      "subnet 192.168.0.0/24 overlaps eth0's address 192.168.0.10/24",
      'subnet 192.168.0.0/24 contains 192.168.0.1, the gateway of the route default via 192.168.0.1 dev eth0: the host would lose its default route',
      'subnet 192.168.0.0/24 contains 192.168.0.1, the gateway of the route 10.113.0.0/24 via 192.168.0.1 dev eth0',
    ]);
  });

  it('catches a subnet inside or around a host network, and a routed network', () => {
    assert.deepEqual(check('172.17.5.0/24').refused, ["subnet 172.17.5.0/24 overlaps docker0's address 172.17.0.1/16"]);
    assert.deepEqual(check('172.16.0.0/12').refused, ["subnet 172.16.0.0/12 overlaps docker0's address 172.17.0.1/16"]);
    assert.deepEqual(check('10.113.0.0/16').refused, ['subnet 10.113.0.0/16 overlaps the route 10.113.0.0/24 via 192.168.0.1 dev eth0']);
  });

  it('ignores the default route itself, loopback and the overlay\'s own interface', () => {
    assert.deepEqual(check('10.0.0.0/24'), { refused: [], allowed: [] });
    assert.deepEqual(check('100.64.0.0/16'), { refused: [], allowed: [] });
  });

  it('refuses a subnet outside private space, which the default route reaches, unless allow_overlap names it', () => {
    const publicSpace = "is not private address space (10/8, 172.16/12, 192.168/16, 100.64/10): this host reaches those addresses " +
      'through the default route via 192.168.0.1 dev eth0, and their traffic would go into the tunnel';
    assert.deepEqual(check('8.8.0.0/16').refused, [`subnet 8.8.0.0/16 ${publicSpace}`]);
    assert.deepEqual(check('127.0.0.0/16').refused, [`subnet 127.0.0.0/16 ${publicSpace}`]);
    assert.deepEqual(check('172.32.0.0/16').refused, [`subnet 172.32.0.0/16 ${publicSpace}`]);
    assert.deepEqual(check('8.8.0.0/16', { allowed: '8.8.0.0/16' }).refused, []);
    assert.deepEqual(check('8.8.0.0/16', { allowed: '8.8.0.0/24' }).refused.length, 1, 'the entry must cover the whole subnet');
    // Without a default route those addresses were unreachable anyway: nothing is taken from the host.
    const noDefault = { ...host(), routes: host().routes.filter((r) => r.prefix > 0) };
    assert.deepEqual(findOverlaps(parseSubnet('8.8.0.0/16'), noDefault, { ownInterface: 'mnedc0', allowed: [] }).refused, []);
  });

  it('lets allow_overlap accept exactly the host networks it names', () => {
    const wide = check('192.168.0.0/24', { allowed: '192.168.0.0/24' });
    assert.equal(wide.refused.length, 0);
    assert.equal(wide.allowed.length, 3);
    // An entry must cover the whole host network: a /25 accepts the captured gateway, not the /24 LAN.
    const narrow = check('192.168.0.0/24', { allowed: '192.168.0.0/25 10.0.0.0/8' });
    assert.deepEqual(narrow.refused, ["subnet 192.168.0.0/24 overlaps eth0's address 192.168.0.10/24"]);
    const other = check('192.168.0.0/24', { allowed: '192.168.0.128/25' });
    assert.equal(other.refused.length, 3);
    assert.deepEqual(check('10.113.0.0/16', { allowed: '10.113.0.0/24' }).refused, []);
    // A list entry wider than the host network covers it; narrower does not.
    assert.equal(check('172.17.0.0/16', { allowed: '172.17.0.0/24' }).refused.length, 1);
  });

  it('client: names the next hop to the relay and the source address of the relay connection', () => {
    const viaLan = check('192.168.0.0/24', { relay: { address: '203.0.113.5', source: '192.168.0.10' } });
    assert.ok(viaLan.refused.includes('subnet 192.168.0.0/24 contains 192.168.0.1, the next hop to the relay 203.0.113.5 ' +
      '(the route default via 192.168.0.1 dev eth0)'), viaLan.refused.join('\n'));
    // The source is an address of eth0, already named once.
    assert.equal(viaLan.refused.filter((m) => m.includes('192.168.0.10')).length, 1);
    // A source address no interface lists (e.g. a NAT-less policy-routed setup) is still named.
    const routed = findOverlaps(parseSubnet('198.51.100.0/24'), { addresses: [], routes: [] },
      { ownInterface: 'mnedc0', allowed: [], relay: { address: '203.0.113.5', source: '198.51.100.7' } });
    assert.deepEqual(routed.refused, ['subnet 198.51.100.0/24 contains 198.51.100.7, the address this device reaches the relay from']);
  });

  it('parses allow_overlap lists and names a bad entry', () => {
    assert.deepEqual(parseSubnetList(' 10.0.0.0/8, 192.168.0.0/16  172.16.0.0/12 ').map((s) => s.prefix), [8, 16, 12]);
    assert.deepEqual(parseSubnetList(''), []);
    assert.throws(() => parseSubnetList('10.0.0.0/8, 192.168.0.1/24'), /192\.168\.0\.1\/24 has host bits set/);
    assert.throws(() => parseSubnetList('yes'), /"yes" is not an IPv4 prefix/);
  });
});
