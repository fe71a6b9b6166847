import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { intToIpv4, parseSubnet } from '@mnedc/protocol';
import { LeaseStateError } from '../src/stores/lease-store';
import { LeasePool, type AcquireRequest } from '../src/stores/lease-pool';
import { encodeRecord } from '../src/stores/journal-codec';
import { checkLeaseRecord, leasesVersion1 } from '../src/stores/lease-record';
import { LocalLeases } from '../src/stores/services';
import { tempDirs } from './temp-dirs';

const tempDir = tempDirs('mnedc-leases-');

const log = pino({ level: 'silent' });
const subnet = parseSubnet('10.0.0.0/16');
const req = (deviceId: string, extra: Partial<AcquireRequest> = {}): AcquireRequest =>
  ({ deviceId, hostname: `${deviceId}-host`, underlay: [], now: 1000, isConnected: () => false, ...extra });
const open = (dir: string, s = subnet, seenBatchMs = 20) => new LocalLeases(dir, s, log, { seenBatchMs });
const ipOf = (leases: LocalLeases, id: string) => { const l = leases.get(id); return l && intToIpv4(l.ip); };
const journalBytes = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('leases.journal.')).reduce((n, f) => n + statSync(join(dir, f)).size, 0);

describe('lease store (journal)', () => {
  it('records a new lease as one append, durable before pending() settles, kept without a clean stop', async () => {
    const dir = tempDir();
    const leases = open(dir);
    for (let i = 0; i < 2000; i++) leases.acquire(req(`dev-${i}`));
    await leases.pending('dev-1999');
    await leases.close();
    const snapshot = statSync(join(dir, 'leases.json'));
    const again = open(dir);
    const before = { ...again.stats, bytes: journalBytes(dir) };
    const result = again.acquire(req('dev-new'));
    assert.ok(result.ok);
    const pending = again.pending('dev-new');
    assert.ok(pending, 'a new lease waits for its write');
    await pending;
    assert.equal(again.pending('dev-new'), undefined);
    assert.equal(again.stats.batches - before.batches, 1);
    assert.equal(again.stats.records - before.records, 1, 'one record, not the table');
    assert.ok(journalBytes(dir) - before.bytes < 200, `${journalBytes(dir) - before.bytes} bytes appended`);
    assert.equal(statSync(join(dir, 'leases.json')).mtimeMs, snapshot.mtimeMs, 'the snapshot is not rewritten');
    // No close: as after a kill -9.
    const reopened = open(dir);
    assert.equal(reopened.size, 2001);
    assert.equal(ipOf(reopened, 'dev-new'), intToIpv4(result.lease.ip));
    await again.close();
  });

  it('batches lastSeen into one append and loses at most that on a crash', async () => {
    const dir = tempDir();
    const leases = open(dir, subnet, 60_000);
    for (let i = 0; i < 50; i++) leases.acquire(req(`dev-${i}`));
    await leases.pending('dev-49');
    const batches = leases.stats.batches;
    for (let i = 0; i < 50; i++) leases.touch(`dev-${i}`, 5000);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(leases.stats.batches, batches, 'lastSeen alone costs no write at once');
    assert.equal(open(dir).get('dev-0')?.lastSeen, 1000, 'a crash before the batch loses lastSeen, not the lease');
    await leases.close();
    assert.equal(open(dir).get('dev-0')?.lastSeen, 5000, 'a clean stop writes what was batched');
    const batched = open(dir);
    for (let i = 0; i < 50; i++) batched.touch(`dev-${i}`, 7000);
    const deadline = Date.now() + 5000;
    while (batched.stats.batches === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(batched.stats.batches, 1, 'fifty lastSeen changes in one append');
    assert.equal(batched.stats.records, 50);
    assert.equal(open(dir).get('dev-7')?.lastSeen, 7000);
    await batched.close();
  });

  it('migrates a version 1 leases.json in place and rewrites it as version 2 on a clean stop', async () => {
    const dir = tempDir();
    const old = new LeasePool(subnet);
    old.acquire(req('dev-a'));
    old.acquire(req('dev-b', { requestedIp: 0x0a000a0a }));
    writeFileSync(join(dir, 'leases.json'), JSON.stringify(old.toJSON()));
    const leases = open(dir);
    assert.equal(ipOf(leases, 'dev-b'), '10.0.10.10');
    leases.acquire(req('dev-c'));
    await leases.pending('dev-c');
    assert.equal(JSON.parse(readFileSync(join(dir, 'leases.json'), 'utf8')).version, 1, 'the old file is the snapshot until a compaction');
    assert.deepEqual([...open(dir).leases()].map((l) => l.deviceId), ['dev-a', 'dev-b', 'dev-c']);
    await leases.close();
    const file = JSON.parse(readFileSync(join(dir, 'leases.json'), 'utf8')) as { version: number; leases: Record<string, { ip: string }> };
    assert.equal(file.version, 2);
    assert.equal(file.leases['dev-b']?.ip, '10.0.10.10');
    assert.equal(open(dir).size, 3);
  });

  it('never replays a reclaimed address as leased twice', async () => {
    const dir = tempDir();
    const tiny = parseSubnet('10.0.0.0/30');
    const leases = open(dir, tiny);
    leases.acquire(req('dev-old', { now: 0 }));
    const taken = leases.acquire(req('dev-new', { now: 10_000, leaseLifetimeMs: 1 }));
    assert.ok(taken.ok && taken.reclaimedFrom?.deviceId === 'dev-old');
    await leases.pending('dev-new');
    const reopened = open(dir, tiny);
    assert.deepEqual([...reopened.leases()].map((l) => [l.deviceId, intToIpv4(l.ip)]), [['dev-new', '10.0.0.2']]);
    await leases.close();
  });

  it('refuses damaged state with a message naming the file, and drops leases outside a changed subnet', async () => {
    const dir = tempDir();
    const record = (id: string, ip: string) => encodeRecord({ op: 'set', key: id, value: { ip, hostname: '', underlay: [], createdAt: 1, lastSeen: 1 } });
    const journal = join(dir, 'leases.journal.0');
    const good = Buffer.concat([record('dev-a', '10.0.0.2'), record('dev-b', '10.0.0.3')]);
    writeFileSync(journal, Buffer.concat([good.subarray(0, 12), Buffer.from('X'), good.subarray(13)]));
    assert.throws(() => open(dir), (e: unknown) => e instanceof LeaseStateError &&
      /lease file .*leases\.journal\.0 is corrupt: record 1 .*checksum mismatch.*move it away/.test(e.message));
    writeFileSync(journal, Buffer.concat([good, record('dev-c', '10.0.0.2')]));
    // Two devices on one address (a file edited by hand) must not start.
    assert.throws(() => open(dir), /\(leases\.json and its journals\) are corrupt: 10\.0\.0\.2 is leased twice \(to dev-a and dev-c\).*move it away/);
    writeFileSync(journal, good);
    const smaller = open(dir, parseSubnet('10.0.0.0/30'));
    assert.deepEqual([...smaller.leases()].map((l) => l.deviceId), ['dev-a']);
    await smaller.close();
    assert.deepEqual([...open(dir).leases()].map((l) => l.deviceId), ['dev-a'], 'the dropped lease is deleted for good');
  });

  it('checks every record and the version 1 array', () => {
    assert.throws(() => checkLeaseRecord('x', 'dev-a'), /lease of "dev-a": not an object/);
    assert.throws(() => checkLeaseRecord({ ip: 'nope', createdAt: 1, lastSeen: 1 }, 'dev-a'), /lease of "dev-a": bad ip "nope"/);
    assert.throws(() => checkLeaseRecord({ ip: '10.0.0.2', createdAt: 1, lastSeen: 1 }, 'bad id!'), /bad deviceId/);
    assert.deepEqual(checkLeaseRecord({ ip: '10.0.0.2', createdAt: 1, lastSeen: 2, extra: 1 }, 'dev-a'),
      { ip: '10.0.0.2', hostname: '', underlay: [], createdAt: 1, lastSeen: 2 });
    assert.throws(() => leasesVersion1({ version: 1 }), /no "leases" array/);
    const one = { deviceId: 'a', ip: '10.0.0.2', createdAt: 1, lastSeen: 1 };
    assert.throws(() => leasesVersion1({ version: 1, leases: [one, one] }), /lease 1: device a appears twice/);
  });
});
