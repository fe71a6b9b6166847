import type { Logger } from '@mnedc/common';
import { intToIpv4, type Subnet } from '@mnedc/protocol';
import { JournalError, JournalStore, type JournalOptions } from './journal';
import { CorruptLeaseFile, LeasePool, type Lease } from './lease-pool';
import { checkLeaseRecord, leaseFromRecord, leaseRecord, leasesVersion1, type LeaseRecord } from './lease-record';

/** lastSeen-only changes are written this long after the first of them, all in one append. */
const SEEN_BATCH_MS = 5_000;

export class LeaseStateError extends Error {}

export type LeaseStoreOptions = Pick<JournalOptions<LeaseRecord>, 'compactSlack' | 'sliceEntries'> & { seenBatchMs?: number };

/**
 * Leases on disk: `leases.json` (snapshot) plus append-only `leases.journal.G`, the store the device
 * bindings use (journal.ts). A new or released lease is one record, group-committed: `record` resolves once
 * it is durable, and the handshake waits for that before its WELCOME. lastSeen changes only mark the lease;
 * they are appended together every SEEN_BATCH_MS, so a kill -9 loses at most that much lastSeen, never a
 * lease. A version 1 leases.json (the whole table rewritten per change) is read as the first snapshot.
 */
export class LeaseStore {
  private readonly store: JournalStore<LeaseRecord>;
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private readonly seenBatchMs: number;

  constructor(private readonly stateDir: string, private readonly log: Logger, options: LeaseStoreOptions = {}) {
    this.seenBatchMs = options.seenBatchMs ?? SEEN_BATCH_MS;
    try {
      this.store = JournalStore.open({
        dir: stateDir, name: 'leases', field: 'leases', check: checkLeaseRecord, version1: leasesVersion1, ...options,
        onCompactionError: (err) => log.error({ err }, `Could not compact the leases (retried later; nothing is lost): ${err.message}`),
      });
    } catch (err) {
      if (!(err instanceof JournalError)) throw err;
      throw refusal(corruptFile(err.message, stateDir));
    }
    if (this.store.loaded.tornBytes > 0) {
      log.warn(`Dropped a torn final record (${this.store.loaded.tornBytes} bytes) of the lease journal: ` +
        'the relay stopped mid-write; that lease was never confirmed to its device');
    }
  }

  get path(): string {
    return this.store.snapshotPath;
  }

  /** Appends and syncs so far, and journal records a restart would replay. */
  get stats(): { batches: number; records: number; compactions: number; journalRecords: number } {
    return { ...this.store.stats, journalRecords: this.store.journalRecords };
  }

  load(subnet: Subnet): LeasePool {
    let loaded: { pool: LeasePool; dropped: Lease[] };
    try {
      loaded = LeasePool.fromLeases(subnet, [...this.store.entries()].map(([id, record]) => leaseFromRecord(id, record)));
    } catch (err) {
      if (!(err instanceof CorruptLeaseFile)) throw err;
      throw refusal(`the leases in ${this.stateDir} (leases.json and its journals) are corrupt: ${err.message}`);
    }
    for (const lease of loaded.dropped) {
      this.log.warn({ deviceId: lease.deviceId, ip: intToIpv4(lease.ip) }, `Dropped the lease of ${lease.deviceId} (${intToIpv4(lease.ip)}): outside the configured subnet ${intToIpv4(subnet.network)}/${subnet.prefix}`);
      this.quietly(this.store.delete(lease.deviceId));
    }
    return loaded.pool;
  }

  /** A new lease: resolves once it is durable. */
  record(lease: Lease): Promise<void> {
    this.seen.delete(lease.deviceId);
    return this.quietly(this.store.set(lease.deviceId, leaseRecord(lease)));
  }

  remove(deviceId: string): Promise<boolean> {
    this.seen.delete(deviceId);
    return this.quietly(this.store.delete(deviceId));
  }

  /** The lease changed in ways a crash may lose (lastSeen, hostname): written with the next batch. */
  touched(deviceId: string, pool: LeasePool): void {
    this.seen.add(deviceId);
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.writeSeen(pool);
    }, this.seenBatchMs);
    this.timer.unref();
  }

  pending(deviceId: string): Promise<void> | undefined {
    return this.store.pending(deviceId);
  }

  /** Writes the pending lastSeen changes, folds the journal into leases.json and closes (shutdown). */
  async close(pool: LeasePool): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.writeSeen(pool);
    try {
      await this.store.compact();
    } catch (err) {
      this.log.warn({ err }, `Could not compact the leases at shutdown (the journal keeps them): ${(err as Error).message}`);
    }
    await this.store.close();
  }

  private writeSeen(pool: LeasePool): void {
    for (const deviceId of this.seen) {
      const lease = pool.get(deviceId);
      // A released lease has its delete record queued already.
      if (lease) this.quietly(this.store.set(deviceId, leaseRecord(lease)));
    }
    this.seen.clear();
  }

  /** Logs a write the disk refused; the returned promise still rejects for a caller that waits. */
  private quietly<T>(write: Promise<T>): Promise<T> {
    write.catch((err: Error) => this.log.error({ err }, `Could not record a lease: ${err.message}`));
    return write;
  }
}

/** What is wrong, with the file named first as the journal's messages have it. */
function corruptFile(message: string, stateDir: string): string {
  const named = /^(\/[^:]+): (.*)$/s.exec(message);
  return named ? `lease file ${named[1]} is corrupt: ${named[2]}` : `the leases in ${stateDir} cannot be loaded: ${message}`;
}

function refusal(what: string): LeaseStateError {
  return new LeaseStateError(`${what}. Refusing to start with an empty table, which could give two devices one address; ` +
    'repair it, or move it away (leases.json and leases.journal.*) to start afresh');
}
