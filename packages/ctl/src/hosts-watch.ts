import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_MERGE_TIMING, MergeSchedule, type MergeTiming } from './hosts-schedule';
import { PEER_HOSTS_FILE, SYSTEM_HOSTS_FILE, syncHosts, type SyncResult } from './hosts-sync';

export interface WatchHostsOptions {
  source?: string;
  target?: string;
  timing?: MergeTiming;
  /** One merge: syncHosts, unless a test needs to act in the middle of one. */
  merge?: (options: { source: string; target: string; remove?: boolean }) => SyncResult;
  /** A merge worth a journal line: the first, one that changed the target or found other input, one after a failure. */
  log: (result: SyncResult) => void;
  /** A failure, once per distinct message until a merge succeeds again. */
  warn: (message: string) => void;
  /** Aborting ends the watch: the block is taken out and the promise resolves. */
  signal: AbortSignal;
}

const summary = (r: SyncResult) => `${r.entries} ${r.skipped} ${r.badNames}`;

/**
 * `mnedcctl sync-hosts --watch`: merges `source` into `target` at once, then after every change of it
 * (debounced, MergeSchedule), and on a slow interval in case an event was lost. A failure is reported and
 * tried again, never fatal: the unit would otherwise restart into the same failure. On abort the block is
 * removed, since no one keeps it current any more; resolves false if that removal failed.
 */
export function watchHosts(options: WatchHostsOptions): Promise<boolean> {
  const source = options.source ?? PEER_HOSTS_FILE;
  const target = options.target ?? SYSTEM_HOSTS_FILE;
  const merge = options.merge ?? syncHosts;
  // The directory, not the file: the client replaces the file by a rename, which ends a watch on the file.
  const dir = path.dirname(source);
  const name = path.basename(source);
  // What an event names when the directory itself goes: the watch is dead then, and must be made again.
  const self = path.basename(dir);
  const schedule = new MergeSchedule(options.timing ?? DEFAULT_MERGE_TIMING, Date.now());
  let watcher: fs.FSWatcher | null = null;
  let watched: number | null = null;
  let timer: NodeJS.Timeout | undefined;
  let lastWarning = '';
  let logged: string | null = null;

  const warn = (message: string) => {
    if (message !== lastWarning) options.warn(message);
    lastWarning = message;
  };
  const unwatch = () => {
    watcher?.close();
    watcher = null;
    watched = null;
  };
  const plan = () => {
    clearTimeout(timer);
    const due = schedule.dueAt();
    if (due !== null && !options.signal.aborted) timer = setTimeout(run, Math.max(0, due - Date.now()));
  };
  /**
   * Watches the directory, again when it was replaced (the watch follows the old inode). Always before a
   * merge: a change made before the watch existed is read by that merge.
   */
  const arm = (): boolean => {
    try {
      const inode = fs.statSync(dir).ino;
      if (watcher && inode === watched) return true;
      unwatch();
      watcher = fs.watch(dir, (_event, file) => {
        if (file !== null && file !== name && file !== self) return;
        // Closed now: a directory made again at once may reuse the inode number, which arm() would trust.
        if (file === self) unwatch();
        schedule.changed(Date.now());
        plan();
      });
      watcher.on('error', (err) => {
        warn(`watching ${dir}: ${err.message}`);
        unwatch();
        // Merged (and watched again) at once, not at the next interval: changes may have gone unseen.
        schedule.changed(Date.now());
        plan();
      });
      watched = inode;
      return true;
    } catch (err) {
      unwatch();
      warn(`cannot watch ${dir} (merging every ${(options.timing ?? DEFAULT_MERGE_TIMING).retryMs / 1000} s until it can): ${(err as Error).message}`);
      return false;
    }
  };
  const run = () => {
    const armed = arm();
    schedule.started();
    let ok = armed;
    try {
      const result = merge({ source, target });
      if (result.changed || summary(result) !== logged) options.log(result);
      logged = summary(result);
    } catch (err) {
      ok = false;
      // Logged again once it works: the journal then shows the recovery.
      logged = null;
      warn((err as Error).message);
    }
    if (ok) lastWarning = '';
    schedule.finished(Date.now(), ok);
    plan();
  };

  return new Promise((resolve) => {
    const stop = () => {
      clearTimeout(timer);
      unwatch();
      try {
        options.log(merge({ source, target, remove: true }));
        resolve(true);
      } catch (err) {
        options.warn((err as Error).message);
        resolve(false);
      }
    };
    if (options.signal.aborted) return stop();
    options.signal.addEventListener('abort', stop, { once: true });
    plan();
  });
}
