import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  compactionDue, crc32, encodeRecord, JournalCorrupt, journalGeneration, journalsToReplay, parseSnapshot, replayJournal,
  snapshotChunks, type JournalRecord, type ValueCheck,
} from '../src/stores/journal-codec';

const anyValue: ValueCheck<unknown> = (value) => value;
const text: ValueCheck<string> = (value, key) => {
  if (typeof value !== 'string') throw new Error(`binding of ${key} is not a fingerprint`);
  return value;
};

function journal(...records: Array<JournalRecord<unknown>>): Buffer {
  return Buffer.concat(records.map((r) => encodeRecord(r)));
}

function replay(bytes: Buffer, newest = true, check: ValueCheck<unknown> = anyValue) {
  const map = new Map<string, unknown>();
  const result = replayJournal(bytes, map, check, newest, 'b.journal.3');
  return { map, ...result };
}

function corrupt(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof JournalCorrupt && message.test(e.message), String(message));
}

describe('journal format', () => {
  it('computes CRC-32 as zlib does', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.alloc(0)), 0);
    assert.equal(crc32(Buffer.from('xx123456789yy'), 2, 11), 0xcbf43926);
  });

  it('replays sets and deletes in order, whatever the keys and values contain', () => {
    const odd = 'dev\nwith "quotes", \u00e9 and \u{1f600}';
    const bytes = journal(
      { op: 'set', key: 'a', value: 'fp1' },
      { op: 'set', key: odd, value: { nested: ['x\ny'] } },
      { op: 'set', key: 'a', value: 'fp2' },
      { op: 'delete', key: 'gone' },
      { op: 'set', key: 'gone', value: 1 },
      { op: 'delete', key: 'gone' },
    );
    assert.equal(bytes.filter((b) => b === 0x0a).length, 6, 'one line per record');
    const { map, records, validBytes } = replay(bytes);
    assert.deepEqual([...map], [['a', 'fp2'], [odd, { nested: ['x\ny'] }]]);
    assert.equal(records, 6);
    assert.equal(validBytes, bytes.length);
  });

  it('ignores a torn final record of the newest journal, and only there', () => {
    const whole = journal({ op: 'set', key: 'a', value: 'fp1' }, { op: 'set', key: 'b', value: 'fp2' });
    const third = encodeRecord({ op: 'set', key: 'c', value: 'fp3' });
    for (const cut of [1, 9, third.length - 1]) {
      const torn = Buffer.concat([whole, third.subarray(0, cut)]);
      const { map, records, validBytes } = replay(torn);
      assert.deepEqual([...map.keys()], ['a', 'b'], `cut at ${cut}`);
      assert.equal(records, 2);
      assert.equal(validBytes, whole.length);
      corrupt(() => replay(torn, false), /b\.journal\.3: the last record \(byte \d+\) is cut short in a journal that is not the newest/);
    }
    // Power loss can leave zeros where the unsynced tail was.
    assert.equal(replay(Buffer.concat([whole, Buffer.alloc(700)])).validBytes, whole.length);
  });

  it('refuses any other damage, naming the record and where it is', () => {
    const good = journal({ op: 'set', key: 'a', value: 'fp1' }, { op: 'set', key: 'b', value: 'fp2' }, { op: 'set', key: 'c', value: 'fp3' });
    const flipped = Buffer.from(good);
    flipped[good.indexOf('fp2') + 2] = 0x33; // "fp3" where "fp2" was: valid JSON, wrong content
    corrupt(() => replay(flipped), /b\.journal\.3: record 2 \(byte \d+\): checksum mismatch/);
    // A damaged complete last line is not a torn append: it had its newline, so it was acknowledged.
    const lastFlipped = Buffer.from(good);
    lastFlipped[good.lastIndexOf('fp3') + 2] = 0x39;
    corrupt(() => replay(lastFlipped), /record 3 .*checksum mismatch/);
    const line = (body: string) => Buffer.from(`${crc32(Buffer.from(body)).toString(16).padStart(8, '0')} ${body}\n`);
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from('garbage\n'), /record 1 \(byte 0\): not a journal record/],
      [Buffer.from('\n'), /record 1 \(byte 0\): not a journal record/],
      [line('{"k":"a"}'), /not a set or delete record/],
      [line('["s","a"]'), /not a set or delete record/],
      [line('["d",7]'), /not a set or delete record/],
      [line('["x","a",1]'), /not a set or delete record/],
      [line('["s","a",'), /not valid JSON/],
      [line('["s","dev-a",42]'), /record 1 \(byte 0\): binding of dev-a is not a fingerprint/],
    ];
    for (const [bytes, message] of cases) corrupt(() => replay(bytes, true, text), message);
  });

  it('reads a version 1 bindings file as generation 0 and a version 2 snapshot with its generation', () => {
    const v1 = parseSnapshot('{\n "version": 1,\n "bindings": {\n  "dev-a": "fp-a"\n }\n}\n', 'bindings', text);
    assert.equal(v1.generation, 0);
    assert.deepEqual([...v1.entries], [['dev-a', 'fp-a']]);
    const entries: Array<[string, string]> = Array.from({ length: 5 }, (_, i) => [`dev-${i}`, `fp-\n${i}`]);
    for (const slice of [1, 2, 5, 1000]) {
      const chunks = [...snapshotChunks(7, 'bindings', entries.map((e) => e[0]), entries.map((e) => e[1]), slice)];
      assert.equal(chunks.length, Math.floor(5 / slice) + 1, `slice ${slice}`);
      const back = parseSnapshot(chunks.join(''), 'bindings', text);
      assert.equal(back.generation, 7);
      assert.deepEqual([...back.entries], entries);
    }
    assert.deepEqual([...parseSnapshot([...snapshotChunks(0, 'bindings', [], [], 10)].join(''), 'bindings', text).entries], []);
  });

  it('refuses a damaged snapshot with a message saying what is wrong', () => {
    const cases: Array<[string, RegExp]> = [
      ['{"version":2,"generation":1,"bindings":{"a":"x"', /not valid JSON/],
      ['[]', /not a snapshot/],
      ['{"version":3,"bindings":{}}', /version 3 is not 1 or 2/],
      ['{"version":2,"generation":-1,"bindings":{}}', /bad generation -1/],
      ['{"version":2,"bindings":{}}', /bad generation undefined/],
      ['{"version":1,"entries":{}}', /no "bindings" object/],
      ['{"version":1,"bindings":{"dev-a":5}}', /entry "dev-a": binding of dev-a is not a fingerprint/],
    ];
    for (const [snapshot, message] of cases) corrupt(() => parseSnapshot(snapshot, 'bindings', text), message);
  });

  it('replays every journal from the snapshot generation on and refuses a gap', () => {
    assert.equal(journalGeneration('bindings.journal.12', 'bindings'), 12);
    for (const other of ['bindings.journal.', 'bindings.journal.01', 'bindings.journal.1.tmp', 'leases.journal.1', 'bindings.json']) {
      assert.equal(journalGeneration(other, 'bindings'), undefined, other);
    }
    assert.deepEqual(journalsToReplay([], 0, 'b'), { replay: [], stale: [] });
    assert.deepEqual(journalsToReplay([4, 2, 3, 1], 3, 'b'), { replay: [3, 4], stale: [1, 2] });
    corrupt(() => journalsToReplay([3, 5], 3, 'b'), /b\.journal\.4 is missing \(the snapshot is generation 3, journals 3, 5 exist\)/);
    corrupt(() => journalsToReplay([4], 3, 'b'), /b\.journal\.3 is missing/);
  });

  it('compacts once the journal holds more than twice the live entries plus the slack', () => {
    assert.equal(compactionDue(1000, 0, 1000), false);
    assert.equal(compactionDue(1001, 0, 1000), true);
    assert.equal(compactionDue(201_000, 100_000, 1000), false);
    assert.equal(compactionDue(201_001, 100_000, 1000), true);
  });
});
