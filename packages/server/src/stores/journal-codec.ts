/**
 * The on-disk format of a JournalStore, without any I/O: what a record looks like, how a journal is
 * replayed onto a map, how a snapshot is written and read. Kept pure so every crash shape (torn tail,
 * flipped byte, missing generation) is tested on byte strings rather than by killing processes.
 *
 * A journal is a sequence of lines `CCCCCCCC JSON\n`: CRC-32 (8 hex digits) of the JSON, then the record,
 * `["s",key,value]` (set) or `["d",key]` (delete). JSON never contains a raw newline (strings escape it,
 * UTF-8 continuation bytes are >= 0x80), so a line boundary is a record boundary.
 */

export class JournalCorrupt extends Error {}

export type JournalRecord<V> = { op: 'set'; key: string; value: V } | { op: 'delete'; key: string };

/** Checks a value read back from disk; throws with a message saying what is wrong with it. */
export type ValueCheck<V> = (value: unknown, key: string) => V;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE), as zlib computes it; Node 18 has no zlib.crc32. */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export function encodeRecord<V>(record: JournalRecord<V>): Buffer {
  const json = JSON.stringify(record.op === 'set' ? ['s', record.key, record.value] : ['d', record.key]);
  const body = Buffer.from(json, 'utf8');
  const line = Buffer.allocUnsafe(body.length + 10);
  line.write(crc32(body).toString(16).padStart(8, '0'), 0, 'latin1');
  line[8] = 0x20;
  body.copy(line, 9);
  line[line.length - 1] = 0x0a;
  return line;
}

export interface ReplayResult {
  /** Records applied. */
  records: number;
  /** Bytes of whole records; anything after it is a torn tail (only ever in the newest journal). */
  validBytes: number;
}

/**
 * Applies a journal's records to `into`, in order. A final line without its newline is the remains of an
 * append that was cut short (kill -9, power loss) before it was acknowledged: it is ignored, but only in
 * the newest journal (`newest`), because an older journal was complete before the next one was started.
 * Any other damage is an error: silently skipping a record could drop an acknowledged binding.
 */
export function replayJournal<V>(bytes: Buffer, into: Map<string, V>, check: ValueCheck<V>, newest: boolean, name: string): ReplayResult {
  let records = 0;
  let start = 0;
  while (start < bytes.length) {
    const end = bytes.indexOf(0x0a, start);
    if (end < 0) {
      if (newest) break;
      throw new JournalCorrupt(`${name}: the last record (byte ${start}) is cut short in a journal that is not the newest`);
    }
    const record = decodeLine(bytes, start, end, check, () => `${name}: record ${records + 1} (byte ${start})`);
    if (record.op === 'set') into.set(record.key, record.value);
    else into.delete(record.key);
    records++;
    start = end + 1;
  }
  return { records, validBytes: start };
}

function decodeLine<V>(bytes: Buffer, start: number, end: number, check: ValueCheck<V>, where: () => string): JournalRecord<V> {
  const fail = (what: string): never => {
    throw new JournalCorrupt(`${where()}: ${what}`);
  };
  const checksum = bytes.toString('latin1', start, start + 8);
  if (end - start < 10 || bytes[start + 8] !== 0x20 || !/^[0-9a-f]{8}$/.test(checksum)) fail('not a journal record');
  if (crc32(bytes, start + 9, end) !== Number.parseInt(checksum, 16)) fail('checksum mismatch (the file was damaged)');
  let data: unknown;
  try {
    data = JSON.parse(bytes.toString('utf8', start + 9, end));
  } catch (err) {
    fail(`not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(data) || typeof data[1] !== 'string') return fail('not a set or delete record');
  const key: string = data[1];
  if (data[0] === 'd' && data.length === 2) return { op: 'delete', key };
  if (data[0] !== 's' || data.length !== 3) return fail('not a set or delete record');
  try {
    return { op: 'set', key, value: check(data[2], key) };
  } catch (err) {
    return fail((err as Error).message);
  }
}

/**
 * The snapshot: `{"version":2,"generation":G,"<field>":{...}}`, the state as of the moment appends moved
 * to journal G. Version 1 (no generation) is the single file the bindings used to be, read as generation 0
 * so an existing install upgrades in place. Version 2 is a different number on purpose: an older relay
 * refuses it rather than starting without the bindings held in the journals next to it.
 */
export const SNAPSHOT_VERSION = 2;

export interface Snapshot<V> {
  generation: number;
  entries: Map<string, V>;
}

/**
 * Turns a version 1 file into the field's map, for a store whose version 1 file had another shape (the
 * leases were an array); throws with a message saying what is wrong.
 */
export type Version1Reader = (file: Record<string, unknown>) => Record<string, unknown>;

export function parseSnapshot<V>(text: string, field: string, check: ValueCheck<V>, version1?: Version1Reader): Snapshot<V> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new JournalCorrupt(`not valid JSON (${(err as Error).message})`);
  }
  const file = data as Record<string, unknown> | null;
  if (typeof file !== 'object' || file === null || Array.isArray(file)) throw new JournalCorrupt('not a snapshot');
  let generation = 0;
  if (file.version === SNAPSHOT_VERSION) {
    generation = file.generation as number;
    if (!Number.isSafeInteger(generation) || generation < 0) throw new JournalCorrupt(`bad generation ${JSON.stringify(file.generation)}`);
  } else if (file.version !== 1) {
    throw new JournalCorrupt(`version ${JSON.stringify(file.version)} is not 1 or ${SNAPSHOT_VERSION}`);
  }
  let map = file[field];
  if (file.version === 1 && version1) {
    try {
      map = version1(file);
    } catch (err) {
      throw new JournalCorrupt((err as Error).message);
    }
  }
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new JournalCorrupt(`no "${field}" object`);
  const entries = new Map<string, V>();
  for (const [key, value] of Object.entries(map)) {
    try {
      entries.set(key, check(value, key));
    } catch (err) {
      throw new JournalCorrupt(`entry ${JSON.stringify(key)}: ${(err as Error).message}`);
    }
  }
  return { generation, entries };
}

/** The snapshot's text in pieces of `slice` entries (keys[i] → values[i]), so a writer can yield between them. */
export function* snapshotChunks<V>(generation: number, field: string, keys: readonly string[], values: readonly V[], slice: number): Generator<string> {
  let chunk = `{"version":${SNAPSHOT_VERSION},"generation":${generation},${JSON.stringify(field)}:{`;
  for (let i = 0; i < keys.length; i++) {
    chunk += `${i === 0 ? '' : ','}\n${JSON.stringify(keys[i])}:${JSON.stringify(values[i])}`;
    if ((i + 1) % slice === 0) {
      yield chunk;
      chunk = '';
    }
  }
  yield `${chunk}\n}}\n`;
}

/** `NAME.journal.G` → G; anything else → undefined. */
export function journalGeneration(fileName: string, name: string): number | undefined {
  const prefix = `${name}.journal.`;
  if (!fileName.startsWith(prefix)) return undefined;
  const digits = fileName.slice(prefix.length);
  if (!/^(0|[1-9][0-9]{0,14})$/.test(digits)) return undefined;
  return Number(digits);
}

/**
 * Which journals a load replays: every generation from the snapshot's on, with none missing. Older ones
 * are leftovers of a compaction that finished (its snapshot supersedes them) and may be deleted.
 */
export function journalsToReplay(generations: number[], snapshotGeneration: number, name: string): { replay: number[]; stale: number[] } {
  const sorted = [...generations].sort((a, b) => a - b);
  const stale = sorted.filter((g) => g < snapshotGeneration);
  const replay = sorted.filter((g) => g >= snapshotGeneration);
  replay.forEach((g, i) => {
    const expected = snapshotGeneration + i;
    if (g !== expected) {
      throw new JournalCorrupt(`${name}.journal.${expected} is missing (the snapshot is generation ${snapshotGeneration}, ` +
        `journals ${replay.join(', ')} exist); records in it would be lost`);
    }
  });
  return { replay, stale };
}

/**
 * Compaction pays off once replaying the journal costs clearly more than reading a snapshot: more
 * records than twice the live entries plus a fixed slack, so a small store does not compact constantly.
 */
export function compactionDue(journalRecords: number, liveEntries: number, slack: number): boolean {
  return journalRecords > liveEntries * 2 + slack;
}
