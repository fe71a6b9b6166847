import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { after, describe, it } from 'node:test';
import { writeFileAtomic } from '@mnedc/common';
import { DeviceBindings } from '../src';

const EXISTING = 100_000;
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A fingerprint as the relay stores them (SHA256: + 43 base64url characters). */
const fingerprint = (i: number) => `SHA256:${i.toString(36).padStart(43, 'x')}`;
const ms = (value: number) => `${value.toFixed(2)} ms`;
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;

describe('device bindings at 100k', () => {
  it('record a binding in O(1) and never block the event loop for long, compaction included', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnedc-bench-'));
    dirs.push(dir);
    const existing: Record<string, string> = {};
    for (let i = 0; i < EXISTING; i++) existing[`device-${i}`] = fingerprint(i);
    writeFileSync(join(dir, 'bindings.json'), `${JSON.stringify({ version: 1, bindings: existing }, null, 1)}\n`, { mode: 0o600 });
    // What every bind cost before the journal (DeviceBindings.save): the whole map serialised, written
    // and fsync'd, synchronously.
    let started = performance.now();
    for (let i = 0; i < 3; i++) writeFileAtomic(join(dir, 'rewrite.json'), `${JSON.stringify({ version: 1, bindings: existing }, null, 1)}\n`, 0o600);
    const rewriteMs = (performance.now() - started) / 3;
    rmSync(join(dir, 'rewrite.json'));

    started = performance.now();
    const bindings = new DeviceBindings(dir);
    const loadMs = performance.now() - started;
    assert.equal(bindings.size, EXISTING);

    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const one: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await bindings.bind(`one-${i}`, fingerprint(i));
      one.push(performance.now() - t);
    }
    const before = bindings.stats.batches;
    started = performance.now();
    await Promise.all(Array.from({ length: 1000 }, (_, i) => bindings.bind(`burst-${i}`, fingerprint(i))));
    const burstMs = performance.now() - started;
    const burstSyncs = bindings.stats.batches - before;

    // Binds keep arriving, one per event-loop turn, while 100k entries are compacted.
    started = performance.now();
    let compacting = true;
    const compaction = bindings.compact().then(() => (compacting = false));
    const during: number[] = [];
    let i = 0;
    while (compacting) {
      const t = performance.now();
      void bindings.bind(`during-${i++}`, fingerprint(i)).then(() => during.push(performance.now() - t));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await compaction;
    const compactMs = performance.now() - started;
    await bindings.close();
    delay.disable();
    const maxBlockMs = delay.max / 1e6;

    const report = [
      `load of ${EXISTING} bindings (sync, at startup): ${ms(loadMs)}`,
      `before: one bind rewrote the whole file: ${ms(rewriteMs)}, blocking`,
      `one bind awaited alone: median ${ms(percentile(one, 0.5))}, p99 ${ms(percentile(one, 0.99))}`,
      `1000 binds at once: ${ms(burstMs)} (${ms(burstMs / 1000)} each), ${burstSyncs} fdatasyncs`,
      `compaction of ${bindings.size} bindings: ${ms(compactMs)}; ${during.length} binds during it, p99 ${ms(percentile(during, 0.99))}`,
      `longest event-loop block throughout: ${ms(maxBlockMs)}`,
    ];
    process.stdout.write(report.map((line) => `# ${line}\n`).join(''));
    assert.ok(burstSyncs <= 3, `${burstSyncs} syncs for a burst of 1000`);
    assert.equal(new DeviceBindings(dir).size, bindings.size, 'everything back after the reload');
    // The whole-file rewrite blocked 86-140 ms per bind at 100k on the 2-core test VM (195 ms in the issue),
    // so the burst of 1,000 above blocked for minutes. What remains synchronous is O(1) per record, plus at
    // compaction a copy of the keys and values (~3 ms) and one 2000-entry slice at a time (~3 ms). Alone
    // the longest block is 7-12 ms, mostly GC; with the rest of npm test and other work on the same two
    // cores it reached 53 ms once. 100 ms keeps the test from flaking there and still fails the old design
    // by orders of magnitude.
    assert.ok(maxBlockMs < 100, `the event loop was blocked for ${ms(maxBlockMs)}`);
  });
});
