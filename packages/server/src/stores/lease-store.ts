import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic, type Logger } from '@mnedc/common';
import { intToIpv4, type Subnet } from '@mnedc/protocol';
import { CorruptLeaseFile, LeasePool } from './lease-pool';

/** Leases on disk. New leases are saved within SOON_MS; lastSeen-only changes are batched for LATER_MS. */
const SOON_MS = 50;
const LATER_MS = 5_000;

export class LeaseStateError extends Error {}

export class LeaseStore {
  readonly path: string;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;

  constructor(stateDir: string, private readonly log: Logger) {
    this.path = join(stateDir, 'leases.json');
  }

  load(subnet: Subnet): LeasePool {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new LeasePool(subnet);
      throw new LeaseStateError(`cannot read lease file ${this.path}: ${(err as Error).message}`);
    }
    try {
      const { pool, dropped } = LeasePool.restore(subnet, text);
      for (const lease of dropped) {
        this.log.warn({ deviceId: lease.deviceId, ip: lease.ip }, `Dropped the lease of ${lease.deviceId} (${lease.ip}): outside the configured subnet ${intToIpv4(subnet.network)}/${subnet.prefix}`);
      }
      if (dropped.length > 0) this.save(pool);
      return pool;
    } catch (err) {
      if (!(err instanceof CorruptLeaseFile)) throw err;
      throw new LeaseStateError(`lease file ${this.path} is corrupt: ${err.message}. ` +
        'Refusing to start with an empty table, which could give two devices one address; ' +
        'repair it, or move it away to start afresh');
    }
  }

  /** Schedules a save; `soon` for changes a crash must not lose (a new lease). */
  changed(pool: LeasePool, soon: boolean): void {
    const due = Date.now() + (soon ? SOON_MS : LATER_MS);
    if (this.timer && this.timerDue <= due) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerDue = Infinity;
      try {
        this.save(pool);
      } catch (err) {
        this.log.error({ err, path: this.path }, `Could not save leases to ${this.path}: ${(err as Error).message}`);
      }
    }, due - Date.now());
    this.timer.unref();
  }

  save(pool: LeasePool): void {
    writeFileAtomic(this.path, `${JSON.stringify(pool.toJSON(), null, 1)}\n`, 0o640);
  }

  /** Saves now if anything is pending (shutdown). */
  flush(pool: LeasePool): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.timerDue = Infinity;
    this.save(pool);
  }
}
