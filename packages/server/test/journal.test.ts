import { strict as assert } from 'node:assert';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DeviceBindings, IdentityError, JournalError, JournalStore, type JournalOptions } from '../src';
import { encodeRecord } from '../src/stores/journal-codec';
import { tempDirs } from './temp-dirs';

const tempDir = tempDirs('mnedc-journal-');

const check = (value: unknown, key: string): string => {
  if (typeof value !== 'string') throw new Error(`binding of ${key} is not a fingerprint`);
  return value;
};

function openStore(dir: string, extra: Partial<JournalOptions<string>> = {}): JournalStore<string> {
  return JournalStore.open({ dir, name: 'bindings', field: 'bindings', check, ...extra });
}

const files = (dir: string) => readdirSync(dir).sort();

describe('JournalStore', () => {
  it('keeps what was acknowledged across a reopen, in files only its owner can read', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    assert.deepEqual(files(dir), [], 'nothing written before the first record');
    await store.set('dev-a', 'fp-a');
    await store.set('dev-b', 'fp-b');
    assert.equal(await store.delete('dev-a'), true);
    assert.equal(await store.delete('dev-a'), false);
    await store.close();
    await assert.rejects(store.set('dev-c', 'x'), /the store is closed/);
    assert.deepEqual(files(dir), ['bindings.journal.0']);
    assert.equal(statSync(join(dir, 'bindings.journal.0')).mode & 0o777, 0o600);
    const again = openStore(dir);
    assert.deepEqual([...again.entries()], [['dev-b', 'fp-b']]);
    assert.deepEqual(again.loaded, { entries: 1, records: 3, tornBytes: 0 });
    await again.close();
  });

  it('group-commits: a burst of 1,000 records takes a handful of syncs, not 1,000', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    const burst = Array.from({ length: 1000 }, (_, i) => store.set(`dev-${i}`, `fp-${i}`));
    await Promise.all(burst);
    assert.ok(store.stats.batches <= 2, `${store.stats.batches} syncs for one burst`);
    // Records arriving one per event-loop turn, while a sync is in flight, share the next one.
    const trickle: Array<Promise<void>> = [];
    for (let i = 0; i < 300; i++) {
      trickle.push(store.set(`late-${i}`, 'fp'));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(trickle);
    const trickleBatches = store.stats.batches - 2;
    assert.ok(trickleBatches < 300, `${trickleBatches} syncs for 300 records in 300 turns`);
    assert.equal(store.stats.records, 1300);
    await store.close();
    assert.equal(openStore(dir).size, 1300);
  });

  it('says when one key is durable, including a delete of a key already gone from memory', async () => {
    const store = openStore(tempDir());
    assert.equal(store.pending('dev-a'), undefined);
    const written = store.set('dev-a', 'fp');
    assert.equal(store.pending('dev-a'), written);
    await written;
    assert.equal(store.pending('dev-a'), undefined);
    let deleted = false;
    void store.delete('dev-a').then(() => (deleted = true));
    let second = false;
    const again = store.delete('dev-a').then((had) => {
      second = true;
      assert.equal(had, false);
    });
    assert.equal(store.has('dev-a'), false, 'gone from memory at once');
    await again;
    assert.ok(deleted && second, 'the second delete waited for the first to reach the disk');
    await store.close();
  });

  it('upgrades a version 1 bindings.json in place: read as it is, superseded by the first compaction', async () => {
    const dir = tempDir();
    const legacy = `${JSON.stringify({ version: 1, bindings: { 'dev-old': 'fp-old' } }, null, 1)}\n`;
    writeFileSync(join(dir, 'bindings.json'), legacy, { mode: 0o600 });
    const store = openStore(dir);
    assert.equal(store.get('dev-old'), 'fp-old');
    await store.set('dev-new', 'fp-new');
    assert.equal(readFileSync(join(dir, 'bindings.json'), 'utf8'), legacy, 'the old file is not rewritten per record');
    await store.compact();
    assert.deepEqual(files(dir), ['bindings.journal.1', 'bindings.json']);
    const snapshot = JSON.parse(readFileSync(join(dir, 'bindings.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(snapshot, { version: 2, generation: 1, bindings: { 'dev-old': 'fp-old', 'dev-new': 'fp-new' } });
    assert.equal(statSync(join(dir, 'bindings.json')).mode & 0o777, 0o600);
    await store.close();
    assert.deepEqual([...openStore(dir).entries()], [['dev-old', 'fp-old'], ['dev-new', 'fp-new']]);
  });

  it('compacts in the background once the journal outgrows the map, never losing a record written meanwhile', async () => {
    const dir = tempDir();
    const store = openStore(dir, { compactSlack: 50, sliceEntries: 7 });
    const expected = new Map<string, string>();
    for (let round = 0; round < 20; round++) {
      const writes: Array<Promise<unknown>> = [];
      for (let i = 0; i < 40; i++) {
        const key = `dev-${(round * 37 + i) % 90}`;
        if (i % 5 === 0) {
          expected.delete(key);
          writes.push(store.delete(key));
        } else {
          expected.set(key, `fp-${round}-${i}`);
          writes.push(store.set(key, `fp-${round}-${i}`));
        }
      }
      await Promise.all(writes);
    }
    await store.close();
    assert.ok(store.stats.compactions >= 2, `${store.stats.compactions} compactions`);
    // Of 800 records, a load replays at most what built up since the last snapshot: under the threshold
    // (2 x at most 90 keys + 50) once more if a compaction was still running when the store closed.
    assert.ok(store.journalRecords <= 2 * (2 * 90 + 50) + 40, `${store.journalRecords} records left to replay`);
    assert.ok(!files(dir).some((f) => f.endsWith('.tmp')));
    const again = openStore(dir);
    assert.deepEqual(new Map(again.entries()), expected);
    assert.equal(again.loaded.records, store.journalRecords);
  });

  it('drops a torn final record on load, and appends cleanly after it', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.set('dev-a', 'fp-a');
    await store.close();
    const torn = encodeRecord({ op: 'set', key: 'dev-torn', value: 'fp' }).subarray(0, 20);
    appendFileSync(join(dir, 'bindings.journal.0'), torn);
    const reopened = openStore(dir);
    assert.equal(reopened.loaded.tornBytes, 20);
    assert.equal(reopened.has('dev-torn'), false);
    await reopened.set('dev-b', 'fp-b');
    await reopened.close();
    assert.deepEqual([...openStore(dir).entries()], [['dev-a', 'fp-a'], ['dev-b', 'fp-b']]);
  });

  it('refuses to load damage anywhere else, and a journal missing from the sequence', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.set('dev-a', 'fp-a');
    await store.set('dev-b', 'fp-b');
    await store.close();
    const path = join(dir, 'bindings.journal.0');
    const bytes = readFileSync(path);
    bytes[bytes.indexOf('fp-a') + 3] = 0x62;
    writeFileSync(path, bytes);
    assert.throws(() => openStore(dir), (e: unknown) => e instanceof JournalError && /bindings\.journal\.0: record 1 \(byte 0\): checksum mismatch/.test(e.message));
    rmSync(path);
    writeFileSync(join(dir, 'bindings.journal.1'), '');
    assert.throws(() => openStore(dir), (e: unknown) => e instanceof JournalError && /mnedc-journal-\w+: bindings\.journal\.0 is missing/.test(e.message));
    rmSync(join(dir, 'bindings.journal.1'));
    mkdirSync(join(dir, 'bindings.json'));
    assert.throws(() => openStore(dir), (e: unknown) => e instanceof JournalError && /EISDIR/.test(e.message), 'an unreadable file is a JournalError too');
  });

  it('after a write error acknowledges nothing more, and says why', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    mkdirSync(join(dir, 'bindings.journal.0')); // the append cannot open a directory
    const first = store.set('dev-a', 'fp-a');
    void store.set('dev-unawaited', 'fp'); // must not become an unhandled rejection
    await assert.rejects(first, (e: unknown) => e instanceof JournalError && /cannot write .*bindings\.journal\.0: EISDIR.*until a restart/.test(e.message));
    await assert.rejects(store.set('dev-b', 'fp-b'), /until a restart/);
    assert.equal(store.has('dev-b'), false, 'a refused record does not change memory');
    await store.close();
  });

  it('closes without finishing a long compaction, leaving the journals to hold everything', async () => {
    const dir = tempDir();
    const store = openStore(dir, { sliceEntries: 1 });
    await Promise.all(Array.from({ length: 3000 }, (_, i) => store.set(`dev-${i}`, `fp-${i}`)));
    const compaction = store.compact();
    // The switch to journal 1 comes before the next append, so once that is durable the snapshot is being written.
    await store.set('dev-during', 'fp');
    assert.equal(store.currentGeneration, 1);
    const closed = store.close();
    await assert.rejects(compaction, /closed before the compaction finished/);
    await closed;
    assert.deepEqual(files(dir), ['bindings.journal.0', 'bindings.journal.1'], 'no snapshot, no temp file');
    assert.equal(openStore(dir).size, 3001);
  });
});

describe('DeviceBindings', () => {
  it('binds durably and refuses to start on corrupt bindings', async () => {
    const dir = tempDir();
    const bindings = new DeviceBindings(dir);
    const bound = bindings.bind('dev-a', 'fp-a');
    assert.equal(bindings.get('dev-a'), 'fp-a', 'in effect before it is durable');
    assert.ok(bindings.pending('dev-a'));
    await bound;
    assert.equal(await bindings.forget('dev-a'), true);
    await bindings.bind('dev-b', 'fp-b');
    await bindings.close();
    assert.equal(new DeviceBindings(dir).get('dev-b'), 'fp-b');
    writeFileSync(join(dir, 'bindings.json'), '{"version":1,"bindings":{"dev-x":');
    assert.throws(() => new DeviceBindings(dir), (e: unknown) => e instanceof IdentityError &&
      /cannot load the device bindings in .*: .*bindings\.json: not valid JSON.*; refusing to start without them/.test(e.message));
    assert.ok(existsSync(join(dir, 'bindings.journal.0')));
  });
});
