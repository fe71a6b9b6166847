import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { intToIpv4, ipv4ToInt, parseSubnet } from '@mnedc/protocol';
import { CorruptLeaseFile, DEFAULT_LEASE_LIFETIME_MS, LeasePool, type AcquireRequest } from '../src';

const nobodyConnected = () => false;
const req = (deviceId: string, extra: Partial<AcquireRequest> = {}): AcquireRequest =>
  ({ deviceId, hostname: `${deviceId}.lan`, underlay: [], now: 1000, isConnected: nobodyConnected, ...extra });

function acquireIp(pool: LeasePool, r: AcquireRequest): string {
  const result = pool.acquire(r);
  assert.ok(result.ok, result.ok ? '' : result.reason);
  return intToIpv4(result.lease.ip);
}

describe('LeasePool', () => {
  it('never leases the network, broadcast or server address', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/29'));
    assert.equal(intToIpv4(pool.serverIp), '10.0.0.1');
    assert.equal(pool.capacity, 5);
    const ips = ['a', 'b', 'c', 'd', 'e'].map((id) => acquireIp(pool, req(id)));
    assert.deepEqual(ips, ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
  });

  it('gives a device the same address again, and a requested address when free', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/24'));
    const first = acquireIp(pool, req('dev'));
    assert.equal(acquireIp(pool, req('dev', { requestedIp: ipv4ToInt('10.0.0.99') })), first, 'existing lease wins');
    assert.equal(acquireIp(pool, req('other', { requestedIp: ipv4ToInt('10.0.0.99') })), '10.0.0.99');
    assert.notEqual(acquireIp(pool, req('third', { requestedIp: ipv4ToInt('10.0.0.99') })), '10.0.0.99', 'taken address not given twice');
    for (const outside of ['10.0.0.0', '10.0.0.1', '10.0.0.255', '10.0.1.5']) {
      assert.notEqual(acquireIp(pool, req(`x${outside}`, { requestedIp: ipv4ToInt(outside) })), outside);
    }
  });

  it('adopts a lease decided elsewhere: it replaces the device\'s own and displaces the address\'s holder', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/24'));
    acquireIp(pool, req('a'));
    acquireIp(pool, req('b'));
    const lease = { deviceId: 'a', ip: ipv4ToInt('10.0.0.3'), hostname: '', underlay: [], createdAt: 5, lastSeen: 5 };
    const { adopted, displaced } = pool.adopt(lease);
    assert.equal(adopted, true);
    assert.equal(displaced?.deviceId, 'b');
    assert.equal(pool.get('b'), undefined);
    assert.equal(pool.size, 1);
    assert.equal(acquireIp(pool, req('c', { requestedIp: ipv4ToInt('10.0.0.2') })), '10.0.0.2', 'a\'s old address is free again');
    assert.deepEqual(pool.adopt({ ...lease, deviceId: 'd', ip: ipv4ToInt('10.0.1.1') }), { adopted: false });
    assert.equal(pool.get('d'), undefined);
  });

  it('rejects with a clear reason when every address belongs to a connected device', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/30'));
    acquireIp(pool, req('only'));
    // Connected since long before the lifetime: a connected device's address is never taken, expired or not.
    const result = pool.acquire(req('late', { now: 1000 + 2 * DEFAULT_LEASE_LIFETIME_MS, isConnected: () => true }));
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.reason : '',
      /pool full: all 1 addresses of 10\.0\.0\.0\/30 belong to devices within their lease lifetime of 30 days \(1 connected, 0 offline/);
  });

  it('when full, takes the address of the device offline the longest among those whose lease expired', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/29'));
    ['a', 'b', 'c', 'd', 'e'].forEach((id, i) => acquireIp(pool, req(id, { now: 100 + i })));
    pool.touch('a', 500);
    // Expired: seen before 600 - 50 = 550, so b, d and e (a was seen at 500, c is connected).
    const result = pool.acquire(req('new', { now: 600, leaseLifetimeMs: 50, isConnected: (id) => id === 'c' }));
    assert.ok(result.ok);
    assert.equal(result.reclaimedFrom?.deviceId, 'b');
    assert.equal(intToIpv4(result.lease.ip), '10.0.0.3');
    assert.equal(pool.get('b'), undefined);
    const next = pool.acquire(req('newer', { now: 600, leaseLifetimeMs: 50, isConnected: (id) => id === 'c' || id === 'new' }));
    assert.equal(next.ok && next.reclaimedFrom?.deviceId, 'd', 'then the next longest offline');
  });

  it('never takes the address of an offline device within its lease lifetime', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/29'));
    ['a', 'b', 'c', 'd', 'e'].forEach((id, i) => acquireIp(pool, req(id, { now: 1000 + i })));
    const connected = (id: string) => id === 'e';
    // A newcomer minting fresh IDs must not evict devices that are merely offline for a while.
    for (let i = 0; i < 20; i++) {
      const result = pool.acquire(req(`mint${i}`, { now: 1000 + DEFAULT_LEASE_LIFETIME_MS, isConnected: connected }));
      assert.equal(result.ok, false, `mint${i} took an address`);
      assert.match(!result.ok ? result.reason : '', /within their lease lifetime of 30 days \(1 connected, 4 offline but seen since\); use a larger subnet, or .*mnedcctl release ID.*mnedcctl forget ID/);
    }
    assert.deepEqual([...pool.leases()].map((l) => l.deviceId), ['a', 'b', 'c', 'd', 'e']);
    // One millisecond past a's lifetime, a's address (and only a's) may go.
    const late = pool.acquire(req('late', { now: 1001 + DEFAULT_LEASE_LIFETIME_MS, isConnected: connected }));
    assert.ok(late.ok);
    assert.equal(late.reclaimedFrom?.deviceId, 'a');
    const again = pool.acquire(req('again', { now: 1001 + DEFAULT_LEASE_LIFETIME_MS, isConnected: connected }));
    assert.equal(again.ok, false, 'b was seen 1 ms after a: still within its lifetime');
    // A device seen recently (it reconnected and left) is within its lifetime again.
    pool.touch('b', 2 * DEFAULT_LEASE_LIFETIME_MS);
    const afterTouch = pool.acquire(req('after', { now: 2 * DEFAULT_LEASE_LIFETIME_MS + 10, isConnected: connected }));
    assert.equal(afterTouch.ok && afterTouch.reclaimedFrom?.deviceId, 'c', 'c, not the freshly seen b');
  });

  it('takes a lifetime per call and refuses one that is not a duration', () => {
    const pool = new LeasePool(parseSubnet('10.0.0.0/30'));
    acquireIp(pool, req('old', { now: 0 }));
    const short = pool.acquire(req('x', { now: 7_200_000, leaseLifetimeMs: 3_600_000 }));
    assert.equal(short.ok && short.reclaimedFrom?.deviceId, 'old');
    const long = pool.acquire(req('y', { now: 7_200_000, leaseLifetimeMs: 12 * 3_600_000 }));
    assert.match(!long.ok ? long.reason : '', /lease lifetime of 12 hours/);
    for (const bad of [-1, Number.NaN]) {
      assert.throws(() => pool.acquire(req('z', { now: 7_200_000, leaseLifetimeMs: bad })), /lease lifetime .* is not a duration/);
    }
  });

  it('stays fast at a /16: 65533 devices lease, release and re-lease', () => {
    const pool = new LeasePool(parseSubnet('10.1.0.0/16'));
    assert.equal(pool.capacity, 65533);
    const started = process.hrtime.bigint();
    for (let i = 0; i < pool.capacity; i++) assert.ok(pool.acquire(req(`d${i}`)).ok);
    for (let i = 0; i < 1000; i++) pool.release(`d${i * 60}`);
    for (let i = 0; i < 1000; i++) assert.ok(pool.acquire(req(`n${i}`)).ok);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.equal(pool.size, 65533);
    assert.equal(new Set([...pool.leases()].map((l) => l.ip)).size, 65533, 'all addresses distinct');
    // A quadratic pool takes minutes here; the bound is loose so a busy CI machine still passes.
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
  });

  it('round-trips through its file format', () => {
    const subnet = parseSubnet('10.0.0.0/24');
    const pool = new LeasePool(subnet);
    acquireIp(pool, req('a', { underlay: ['192.168.1.10'] }));
    acquireIp(pool, req('b', { requestedIp: ipv4ToInt('10.0.0.200') }));
    const { pool: restored, dropped } = LeasePool.restore(subnet, JSON.stringify(pool.toJSON()));
    assert.deepEqual(dropped, []);
    assert.deepEqual([...restored.leases()], [...pool.leases()]);
    // A restored pool must not hand out an address it restored.
    assert.notEqual(acquireIp(restored, req('c', { requestedIp: ipv4ToInt('10.0.0.200') })), '10.0.0.200');
  });

  it('refuses a corrupt file with a message saying what is wrong', () => {
    const subnet = parseSubnet('10.0.0.0/24');
    const good = new LeasePool(subnet);
    acquireIp(good, req('a'));
    const file = good.toJSON();
    const cases: Array<[string, RegExp]> = [
      ['{"version":1,"leases":[', /not valid JSON/],
      ['[]', /not a version 1 lease file/],
      [JSON.stringify({ ...file, leases: [file.leases[0], file.leases[0]] }), /appears twice/],
      [JSON.stringify({ ...file, leases: [file.leases[0], { ...file.leases[0], deviceId: 'z' }] }), /10\.0\.0\.2 is leased twice/],
      [JSON.stringify({ ...file, leases: [{ ...file.leases[0], ip: 'x' }] }), /lease 0: bad ip/],
    ];
    for (const [text, message] of cases) {
      assert.throws(() => LeasePool.restore(subnet, text), (e: unknown) => e instanceof CorruptLeaseFile && message.test(e.message), text);
    }
  });

  it('drops, and reports, leases outside a changed subnet', () => {
    const old = new LeasePool(parseSubnet('10.0.0.0/24'));
    acquireIp(old, req('a'));
    const { pool, dropped } = LeasePool.restore(parseSubnet('10.9.0.0/24'), JSON.stringify(old.toJSON()));
    assert.equal(pool.size, 0);
    assert.equal(dropped[0]?.deviceId, 'a');
  });
});
