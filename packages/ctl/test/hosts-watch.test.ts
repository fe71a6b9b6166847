import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BLOCK_BEGIN, BLOCK_END, MAX_SOURCE_BYTES } from '../src/hosts-merge';
import type { MergeTiming } from '../src/hosts-schedule';
import { syncHosts, type SyncResult } from '../src/hosts-sync';
import { watchHosts } from '../src/hosts-watch';

const OTHER = '127.0.0.1\tlocalhost\n';
const block = (...entries: string[]) => [BLOCK_BEGIN, ...entries, BLOCK_END].map((l) => `${l}\n`).join('');
/** No safety interval within a test's time: only the watch can bring a change in. */
const TIMING: MergeTiming = { quietMs: 50, maxDelayMs: 500, intervalMs: 3_600_000, retryMs: 100 };
const WAIT_MS = 10_000;

const root = fs.mkdtempSync(path.join(tmpdir(), 'mnedc-hosts-watch-'));
/** A test that failed left its watcher running: stopped here, or the process would never exit. */
const controllers: AbortController[] = [];
after(() => {
  for (const controller of controllers) controller.abort();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A run directory and a target of its own, and a watcher over them whose merges can be awaited. */
function setUp(name: string, options: { timing?: MergeTiming; duringMerge?: (call: number) => void } = {}) {
  const dir = path.join(root, name);
  const run = path.join(dir, 'run');
  const source = path.join(run, 'hosts');
  const target = path.join(dir, 'etc-hosts');
  fs.mkdirSync(dir);
  fs.writeFileSync(target, OTHER);
  const merges: SyncResult[] = [];
  const warnings: string[] = [];
  const waiters = new Set<() => void>();
  const controller = new AbortController();
  controllers.push(controller);
  let calls = 0;
  const start = () => watchHosts({
    source, target, timing: options.timing ?? TIMING, signal: controller.signal,
    merge: (o) => {
      const result = syncHosts(o);
      options.duringMerge?.(++calls);
      return result;
    },
    log: (result) => {
      merges.push(result);
      for (const wake of waiters) wake();
    },
    warn: (message) => {
      warnings.push(message);
      for (const wake of waiters) wake();
    },
  });
  /** Resolves once the target (or the warnings) satisfy `ok`, checked after each merge; fails after WAIT_MS. */
  const until = (ok: () => boolean, what: string) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (!ok()) return;
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`not within ${WAIT_MS} ms: ${what}; target:\n${readTarget()}`));
    }, WAIT_MS);
    waiters.add(check);
    check();
  });
  const readTarget = () => (fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : null);
  /** As the client writes it: a temporary file renamed over the old one. */
  const write = (text: string) => {
    fs.writeFileSync(`${source}.tmp`, text);
    fs.renameSync(`${source}.tmp`, source);
  };
  return { run, source, target, merges, warnings, controller, start, until, readTarget, write };
}

describe('sync-hosts --watch: a real watch on a directory, a target of its own', () => {
  test('a change written just after a merge read the file for the last time is merged too', async () => {
    let stale: string | null = null;
    const t = setUp('race', {
      // The client's next write lands after syncHosts' last re-read, before the merge is over: for the
      // oneshot service that was the end, and systemd started it for no change made while it ran.
      duringMerge: (call) => {
        if (call !== 1) return;
        stale = t.readTarget();
        t.write('10.0.0.2\ta.mnedc\n10.0.0.3\tb.mnedc\n');
      },
    });
    fs.mkdirSync(t.run);
    t.write('10.0.0.2\ta.mnedc\n');
    const done = t.start();
    await t.until(() => stale !== null, 'the first merge');
    assert.equal(stale, OTHER + block('10.0.0.2\ta.mnedc'), 'the first merge missed the second write: the oneshot\'s end state');
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.2\ta.mnedc', '10.0.0.3\tb.mnedc'), 'the second write merged');
    t.controller.abort();
    assert.equal(await done, true);
    assert.equal(t.readTarget(), OTHER, 'stopping takes the block out');
  });

  test('rapid rewrites and a removal converge on the last state, in fewer merges than writes', async () => {
    const t = setUp('burst', { timing: { ...TIMING, quietMs: 200 } });
    fs.mkdirSync(t.run);
    const done = t.start();
    await t.until(() => t.merges.length === 1, 'the first merge');
    const first = t.merges.length;
    for (let i = 1; i <= 10; i++) {
      t.write(`10.0.0.${i}\tpeer${i}.mnedc\n`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.10\tpeer10.mnedc'), 'the tenth write merged');
    assert.ok(t.merges.length - first < 10, `${t.merges.length - first} merges for 10 writes`);
    fs.rmSync(t.source);
    await t.until(() => t.readTarget() === OTHER, 'the client removed its file: the block goes');
    t.controller.abort();
    assert.equal(await done, true);
  });

  test('no directory yet, then a file too large: said, not fatal; merged once both are fixed', async () => {
    const t = setUp('errors');
    const done = t.start();
    await t.until(() => t.warnings.some((w) => w.startsWith(`cannot watch ${t.run}`)), 'the missing directory reported');
    fs.mkdirSync(t.run);
    t.write('#'.repeat(MAX_SOURCE_BYTES + 1));
    await t.until(() => t.warnings.some((w) => /is larger than \d+ bytes: not read/.test(w)), 'the oversized file reported');
    assert.equal(t.readTarget(), OTHER, 'nothing merged from it');
    t.write('10.0.0.2\ta.mnedc\nnot a line\n');
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.2\ta.mnedc'), 'merged after the fix');
    assert.deepEqual(t.merges.at(-1), { entries: 1, skipped: 1, badNames: 0, changed: true });
    t.controller.abort();
    assert.equal(await done, true);
  });

  test('the directory removed and made again (perhaps with the same inode number): watched again, its file merged', async () => {
    const t = setUp('recreated');
    fs.mkdirSync(t.run);
    t.write('10.0.0.2\ta.mnedc\n');
    const done = t.start();
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.2\ta.mnedc'), 'the first merge');
    fs.rmSync(t.source);
    await t.until(() => t.readTarget() === OTHER, 'the file removed');
    // An empty directory going (what the package's purge does) is the only event the dead watch gives.
    fs.rmdirSync(t.run);
    fs.mkdirSync(t.run);
    t.write('10.0.0.3\tb.mnedc\n');
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.3\tb.mnedc'), 'the new directory\'s file merged');
    // Once more: changes in the new directory are seen, not only found by the retry that re-armed.
    t.write('10.0.0.4\tc.mnedc\n');
    await t.until(() => t.readTarget() === OTHER + block('10.0.0.4\tc.mnedc'), 'a later change in the new directory');
    t.controller.abort();
    assert.equal(await done, true);
  });
});
