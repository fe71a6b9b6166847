import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MergeSchedule, type MergeTiming } from '../src/hosts-schedule';

const TIMING: MergeTiming = { quietMs: 300, maxDelayMs: 2000, intervalMs: 60_000, retryMs: 5000 };

/** A schedule whose first merge (due at 0) ran from 0 to 10 ms and succeeded. */
function afterFirstMerge(): MergeSchedule {
  const schedule = new MergeSchedule(TIMING, 0);
  assert.equal(schedule.dueAt(), 0, 'the first merge is due at once');
  schedule.started();
  schedule.finished(10, true);
  return schedule;
}

describe('MergeSchedule: when sync-hosts --watch merges', () => {
  test('a change made while a merge runs gets a merge of its own after it (the oneshot lost it)', () => {
    const schedule = afterFirstMerge();
    schedule.changed(1000);
    assert.equal(schedule.dueAt(), 1300);
    schedule.started();
    assert.equal(schedule.dueAt(), null, 'nothing starts while a merge runs');
    // The merge may already have read the file: this change is not covered by it.
    schedule.changed(1310);
    schedule.finished(1320, true);
    assert.equal(schedule.dueAt(), 1610, 'due quietMs after the change made during the merge');
  });

  test('a change before the merge started is covered by it: no second merge', () => {
    const schedule = afterFirstMerge();
    schedule.changed(1000);
    schedule.started();
    schedule.finished(1320, true);
    assert.equal(schedule.dueAt(), 1320 + TIMING.intervalMs, 'only the safety interval is left');
  });

  test('a burst is one merge: quietMs after its last change, no later than maxDelayMs after its first', () => {
    const schedule = afterFirstMerge();
    for (let t = 1000; t <= 1500; t += 100) schedule.changed(t);
    assert.equal(schedule.dueAt(), 1800);
    for (let t = 1600; t <= 5000; t += 100) schedule.changed(t);
    assert.equal(schedule.dueAt(), 3000, 'a stream of changes does not hold the merge back for ever');
  });

  test('no change: merged again after intervalMs, in case an event was lost', () => {
    const schedule = afterFirstMerge();
    assert.equal(schedule.dueAt(), 10 + TIMING.intervalMs);
  });

  test('a failed merge is tried again after retryMs, or at the next change', () => {
    const schedule = afterFirstMerge();
    schedule.started();
    schedule.finished(100, false);
    assert.equal(schedule.dueAt(), 5100);
    schedule.changed(200);
    assert.equal(schedule.dueAt(), 500);
    schedule.started();
    schedule.finished(600, true);
    assert.equal(schedule.dueAt(), 600 + TIMING.intervalMs, 'back to the interval once it works');
  });
});
