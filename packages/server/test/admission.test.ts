import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Admission } from '../src';

describe('Admission', () => {
  const limits = { maxHandshakes: 4, maxHandshakesPerSource: 3, connectionsPerSecond: 2, connectionBurst: 3 };

  it('refills the per-source bucket at the configured rate', () => {
    let now = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 100, maxHandshakesPerSource: 100 }, () => now);
    assert.deepEqual([1, 2, 3, 4].map(() => admission.admit('a')), [null, null, null, 'rateLimited']);
    now = 499;
    assert.equal(admission.admit('a'), 'rateLimited');
    now = 500;
    assert.equal(admission.admit('a'), null, 'one token after 0.5 s at 2/s');
    assert.equal(admission.admit('b'), null, 'other sources have their own bucket');
  });

  it('caps handshakes in progress per source and overall, and frees slots on release', () => {
    const admission = new Admission({ ...limits, connectionsPerSecond: 1000, connectionBurst: 1000 }, () => 0);
    assert.deepEqual([1, 2, 3, 4].map(() => admission.admit('a')), [null, null, null, 'tooManyFromSource']);
    assert.equal(admission.admit('b'), null);
    assert.equal(admission.admit('c'), 'tooManyHandshakes');
    admission.release('a');
    assert.equal(admission.admit('c'), null);
    assert.equal(admission.inProgress, 4);
  });

  it('forgets idle sources so a scan from many addresses cannot grow it without bound', () => {
    let now = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 1e6, maxHandshakesPerSource: 10 }, () => now);
    for (let i = 0; i < 1000; i++) {
      admission.admit(`10.0.${i >> 8}.${i & 255}`);
      admission.release(`10.0.${i >> 8}.${i & 255}`);
    }
    assert.equal(admission.trackedSources, 1000);
    now = 10_000;
    admission.sweep();
    assert.equal(admission.trackedSources, 0);
  });
});
