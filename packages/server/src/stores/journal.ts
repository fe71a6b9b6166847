import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  compactionDue, encodeRecord, JournalCorrupt, journalGeneration, journalsToReplay, parseSnapshot, replayJournal,
  snapshotChunks, type Snapshot, type ValueCheck, type Version1Reader,
} from './journal-codec';

export class JournalError extends Error {}

export interface JournalOptions<V> {
  dir: string;
  /** Files: `NAME.json` (snapshot), `NAME.journal.G` (appends), `.NAME.json.tmp` (a snapshot being written). */
  name: string;
  /** The snapshot's key for the map, e.g. "bindings". */
  field: string;
  /** Validates every value read back. Values must be JSON-serialisable and never mutated after set(). */
  check: ValueCheck<V>;
  /** Reads a version 1 file whose shape differs from the snapshot's (default: the field is the map already). */
  version1?: Version1Reader;
  /** Journal records beyond twice the live entries before a compaction starts (default 1000). */
  compactSlack?: number;
  /** Entries per snapshot slice between two yields to the event loop (default 2000). */
  sliceEntries?: number;
  /** A compaction that failed; appends go on and a later one retries. */
  onCompactionError?: (err: Error) => void;
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A caller that does not wait must not turn a storage error into an unhandled rejection (a crash).
  promise.catch(() => {});
  return { promise, resolve, reject };
}

interface Batch extends Deferred {
  keys: string[];
  lines: Buffer[];
}

function newBatch(): Batch {
  return { ...deferred(), keys: [], lines: [] };
}

class Aborted extends Error {}

async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += (await handle.write(data, offset, data.length - offset)).bytesWritten;
}

/** Makes a create, rename or unlink in `dir` durable; fsync of a file does not cover its directory entry. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * A string-keyed map persisted as a snapshot plus append-only journals (format in journal-codec.ts).
 *
 * `set`/`delete` change memory at once and return a promise that resolves once the record is durable
 * (appended and fdatasync'd). Group commit: one append+sync is in flight at a time and whatever arrives
 * meanwhile goes out together in the next one, so a burst of N records costs a few syncs, not N, and the
 * work per record is O(1) however large the map. All hot-path I/O is asynchronous.
 *
 * Compaction runs in the background when the journals outgrow the map: appends switch to generation G+1,
 * a snapshot of the map as of the switch is written to a temp file in slices, fsync'd, renamed over the
 * snapshot (which names G+1), the directory fsync'd, and only then are journals below G+1 deleted. A load
 * reads the snapshot and replays journals G.. in order, so a crash at any step loses nothing acknowledged.
 */
export class JournalStore<V> {
  readonly snapshotPath: string;
  /** What the load found: records replayed, and bytes of a torn (never acknowledged) final record dropped. */
  readonly loaded: { entries: number; records: number; tornBytes: number };
  readonly stats = { batches: 0, records: 0, compactions: 0 };
  private readonly map: Map<string, V>;
  private readonly slack: number;
  private readonly slice: number;
  /** Records waiting for the next append. */
  private queue = newBatch();
  private writer: Promise<void> | null = null;
  /** The latest unsynced record's batch, per key. */
  private readonly unsynced = new Map<string, Promise<void>>();
  private handle: FileHandle | null = null;
  private journalExists: boolean;
  private generation: number;
  private snapshotGeneration: number;
  /** Records a load would replay: in journals before the current one, and in the current one. */
  private olderRecords: number;
  private currentRecords: number;
  private compaction: Promise<void> | null = null;
  /** A compaction asked for by compact(), settled when it has finished. */
  private compactRequest: Deferred | null = null;
  private compactRetryAt = 0;
  private failure: JournalError | null = null;
  private closing = false;
  private closed = false;

  private constructor(private readonly options: JournalOptions<V>, snapshot: Snapshot<V>, replayed: number[], counts: number[], tornBytes: number) {
    this.snapshotPath = join(options.dir, `${options.name}.json`);
    this.map = snapshot.entries;
    this.slack = options.compactSlack ?? 1000;
    this.slice = options.sliceEntries ?? 2000;
    this.snapshotGeneration = snapshot.generation;
    this.generation = replayed.at(-1) ?? snapshot.generation;
    this.journalExists = replayed.length > 0;
    this.currentRecords = counts.at(-1) ?? 0;
    this.olderRecords = counts.reduce((a, b) => a + b, 0) - this.currentRecords;
    this.loaded = { entries: this.map.size, records: this.olderRecords + this.currentRecords, tornBytes };
  }

  /**
   * Loads synchronously: it runs once at startup, before anything may be served from the map. A torn final
   * record of the newest journal is cut off the file, so the next append starts on a record boundary.
   * Anything else that is wrong, unreadable files included, is a JournalError naming the file.
   */
  static open<V>(options: JournalOptions<V>): JournalStore<V> {
    const { dir, name } = options;
    const snapshotPath = join(dir, `${name}.json`);
    const journal = (g: number) => join(dir, `${name}.journal.${g}`);
    let where = snapshotPath;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      rmSync(join(dir, `.${name}.json.tmp`), { force: true });
      let snapshot: Snapshot<V> = { generation: 0, entries: new Map() };
      if (existsSync(snapshotPath)) snapshot = parseSnapshot(readFileSync(snapshotPath, 'utf8'), options.field, options.check, options.version1);
      where = dir;
      const plan = journalsToReplay(readdirSync(dir).flatMap((f) => journalGeneration(f, name) ?? []), snapshot.generation, name);
      for (const g of plan.stale) rmSync(journal(g), { force: true });
      const counts: number[] = [];
      let tornBytes = 0;
      plan.replay.forEach((g, i) => {
        const bytes = readFileSync(journal(g));
        const result = replayJournal(bytes, snapshot.entries, options.check, i === plan.replay.length - 1, journal(g));
        counts.push(result.records);
        if (result.validBytes === bytes.length) return;
        tornBytes = bytes.length - result.validBytes;
        const fd = openSync(journal(g), 'r+');
        try {
          ftruncateSync(fd, result.validBytes);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      });
      return new JournalStore(options, snapshot, plan.replay, counts, tornBytes);
    } catch (err) {
      // Replay errors name their journal, fs errors their path; the rest gets the file or directory.
      const message = (err as Error).message;
      throw new JournalError(err instanceof JournalCorrupt && !message.startsWith('/') ? `${where}: ${message}` : message);
    }
  }

  get(key: string): V | undefined {
    return this.map.get(key);
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  get size(): number {
    return this.map.size;
  }

  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }

  /** Journal records a load would replay now (for tests and status). */
  get journalRecords(): number {
    return this.olderRecords + this.currentRecords;
  }

  get currentGeneration(): number {
    return this.generation;
  }

  set(key: string, value: V): Promise<void> {
    const refused = this.refusal();
    if (refused) return refused;
    // Encoded before the map changes: a value JSON cannot carry must not be half applied.
    const line = encodeRecord({ op: 'set', key, value });
    this.map.set(key, value);
    return this.enqueue(key, line);
  }

  /** Resolves to whether the key was there, once its absence is durable. */
  delete(key: string): Promise<boolean> {
    const refused = this.refusal();
    if (refused) return refused.then(() => false);
    // Absent now, but a delete of it may still be on its way to the disk.
    if (!this.map.delete(key)) return this.durable(key).then(() => false);
    return this.enqueue(key, encodeRecord({ op: 'delete', key })).then(() => true);
  }

  /** Resolves once the latest record for `key` is durable (at once if none is pending). */
  durable(key: string): Promise<void> {
    return this.pending(key) ?? Promise.resolve();
  }

  /** The write the latest record for `key` waits for; undefined once it is durable. */
  pending(key: string): Promise<void> | undefined {
    return this.unsynced.get(key);
  }

  /**
   * Compacts now rather than when the journal has grown enough (operators, tests); resolves when the new
   * snapshot is in place. Appends go on meanwhile, as with any compaction.
   */
  compact(): Promise<void> {
    const refused = this.refusal() ?? (this.closing ? Promise.reject(new JournalError(`${this.snapshotPath}: the store is closing`)) : undefined);
    if (refused) return refused;
    this.compactRequest ??= deferred();
    this.writer ??= this.drain();
    return this.compactRequest.promise;
  }

  /** Writes what is pending, abandons a running compaction (the journals still hold everything), closes. */
  async close(): Promise<void> {
    this.closing = true;
    while (this.writer || this.compaction) {
      await this.writer;
      await this.compaction;
    }
    this.compactRequest?.reject(new JournalError(`${this.snapshotPath}: closed before the compaction finished`));
    this.compactRequest = null;
    this.closed = true;
    const handle = this.handle;
    this.handle = null;
    await handle?.close();
  }

  private refusal(): Promise<never> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new JournalError(`${this.snapshotPath}: the store is closed`));
    return undefined;
  }

  private enqueue(key: string, line: Buffer): Promise<void> {
    const batch = this.queue;
    batch.lines.push(line);
    batch.keys.push(key);
    this.unsynced.set(key, batch.promise);
    this.writer ??= this.drain();
    return batch.promise;
  }

  private journalPath(generation: number): string {
    return join(this.options.dir, `${this.options.name}.journal.${generation}`);
  }

  /** The one writer: appends batch after batch until the queue is empty. */
  private async drain(): Promise<void> {
    // Records set in the same turn of the event loop as the first one join its batch.
    await null;
    while (!this.failure) {
      if (this.shouldCompact()) await this.switchGeneration();
      if (this.queue.lines.length === 0) break;
      const batch = this.queue;
      this.queue = newBatch();
      try {
        await this.append(batch.lines);
      } catch (err) {
        this.fail(err as Error, batch);
        break;
      }
      for (const key of batch.keys) if (this.unsynced.get(key) === batch.promise) this.unsynced.delete(key);
      batch.resolve();
    }
    // No await between the loop's last check and here, so no record can be queued without a writer.
    this.writer = null;
  }

  private async append(lines: Buffer[]): Promise<void> {
    if (!this.handle) {
      this.handle = await open(this.journalPath(this.generation), 'a', 0o600);
      if (!this.journalExists) await syncDir(this.options.dir);
      this.journalExists = true;
    }
    await writeAll(this.handle, lines.length === 1 ? lines[0]! : Buffer.concat(lines));
    await this.handle.datasync();
    this.currentRecords += lines.length;
    this.stats.batches++;
    this.stats.records += lines.length;
  }

  /**
   * After a storage error nothing more is acknowledged until a restart: a failed fsync leaves the file's
   * state unknown, and appending after a partial record would corrupt the middle of the journal.
   */
  private fail(err: Error, batch: Batch): void {
    this.failure = new JournalError(`cannot write ${this.journalPath(this.generation)}: ${err.message}; ` +
      'no further changes are recorded until a restart');
    batch.reject(this.failure);
    this.queue.reject(this.failure);
    this.compactRequest?.reject(this.failure);
    this.compactRequest = null;
  }

  private shouldCompact(): boolean {
    if (this.compaction || this.closing) return false;
    if (this.compactRequest) return true;
    return this.journalRecords >= this.compactRetryAt && compactionDue(this.journalRecords, this.map.size, this.slack);
  }

  /**
   * Runs between two appends, so every record from here on goes to the new journal. A failure to start
   * the new journal is a failed compaction, not a failed store: appends go on in the current one.
   */
  private async switchGeneration(): Promise<void> {
    const next = this.generation + 1;
    const request = this.compactRequest;
    this.compactRequest = null;
    let handle: FileHandle | undefined;
    try {
      handle = await open(this.journalPath(next), 'w', 0o600);
      await syncDir(this.options.dir);
    } catch (err) {
      await handle?.close().catch(() => {});
      // An empty newer journal left behind would make a torn tail of the current one look like damage.
      if (handle) await unlink(this.journalPath(next)).catch(() => {});
      this.compactionFailed(err as Error);
      request?.reject(err as Error);
      return;
    }
    const old = this.handle;
    this.handle = handle;
    this.generation = next;
    this.olderRecords += this.currentRecords;
    this.currentRecords = 0;
    // The map as of the switch: every change after this line is appended to journal `next`. Two flat
    // arrays copy 100k entries in ~2 ms where an array of pairs takes ~25 ms; values are not copied,
    // which is why a value must never be mutated after set().
    const keys = [...this.map.keys()];
    const values = [...this.map.values()];
    this.compaction = this.writeSnapshot(next, keys, values).then(
      () => {
        this.stats.compactions++;
        request?.resolve();
      },
      (err: Error) => {
        if (!(err instanceof Aborted)) this.compactionFailed(err);
        request?.reject(err instanceof Aborted ? new JournalError(`${this.snapshotPath}: closed before the compaction finished`) : err);
      },
    ).finally(() => {
      this.compaction = null;
      // compact() called while this one ran asks for another, which the writer starts.
      if (this.compactRequest && !this.closing) this.writer ??= this.drain();
    });
    await old?.close().catch(() => {});
  }

  private compactionFailed(err: Error): void {
    // Retried once the journal has grown by another slack, not after every batch.
    this.compactRetryAt = this.journalRecords + this.slack;
    this.options.onCompactionError?.(err);
  }

  private async writeSnapshot(generation: number, keys: string[], values: V[]): Promise<void> {
    const temp = join(this.options.dir, `.${this.options.name}.json.tmp`);
    const handle = await open(temp, 'w', 0o600);
    let written = false;
    try {
      for (const chunk of snapshotChunks(generation, this.options.field, keys, values, this.slice)) {
        if (this.closing) throw new Aborted();
        await writeAll(handle, Buffer.from(chunk, 'utf8'));
      }
      await handle.sync();
      written = true;
    } finally {
      await handle.close();
      if (!written) await unlink(temp).catch(() => {});
    }
    await rename(temp, this.snapshotPath);
    await syncDir(this.options.dir);
    const superseded = this.snapshotGeneration;
    this.snapshotGeneration = generation;
    this.olderRecords = 0;
    // Deleting is cleanup only: a load ignores journals older than the snapshot.
    for (let g = superseded; g < generation; g++) await unlink(this.journalPath(g)).catch(() => {});
  }
}
