/**
 * When `mnedcctl sync-hosts --watch` merges, without I/O or timers: the caller reports changes of the
 * client's file and the start and end of each merge, and asks when the next merge is due.
 *
 * The rule that matters: a change seen after a merge started is never taken as covered by it, since that
 * merge may have read the file before the change. The oneshot this replaces lost exactly such changes
 * (systemd does not trigger a path unit's service again for a change made while it still runs).
 */
export interface MergeTiming {
  /** Quiet time after a change before merging: a burst of peer changes becomes one merge. */
  quietMs: number;
  /** The most a stream of changes (each within quietMs of the last) may hold a merge back. */
  maxDelayMs: number;
  /** A merge this long after the last one even with no change seen, in case an event was lost. */
  intervalMs: number;
  /** The next attempt after a failed merge (a full disk), when no change comes first. */
  retryMs: number;
}

export const DEFAULT_MERGE_TIMING: MergeTiming = { quietMs: 300, maxDelayMs: 2000, intervalMs: 60_000, retryMs: 5000 };

export class MergeSchedule {
  /** The first and the latest change not yet covered by a merge that started after it; null: none. */
  private firstChange: number | null = null;
  private lastChange = 0;
  private lastMerge: number;
  private running = false;
  private failed = false;

  /** `now` is the start: the watcher's first merge is due at once. */
  constructor(private readonly timing: MergeTiming, now: number) {
    this.lastMerge = now;
    this.firstChange = now;
    this.lastChange = now - timing.quietMs;
  }

  changed(now: number): void {
    this.firstChange ??= now;
    this.lastChange = now;
  }

  /** The merge reads the file from now on: changes before this are its to cover. */
  started(): void {
    this.running = true;
    this.firstChange = null;
  }

  finished(now: number, ok: boolean): void {
    this.running = false;
    this.lastMerge = now;
    this.failed = !ok;
  }

  /** When the next merge should start; null while one runs (finished() tells what comes next). */
  dueAt(): number | null {
    if (this.running) return null;
    if (this.firstChange !== null) return Math.min(this.lastChange + this.timing.quietMs, this.firstChange + this.timing.maxDelayMs);
    return this.lastMerge + (this.failed ? Math.min(this.timing.retryMs, this.timing.intervalMs) : this.timing.intervalMs);
  }
}
