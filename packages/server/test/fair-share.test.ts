/** A mesh link shared fairly: one flooding device cannot take it from the others. Pure. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { FairShare } from '../src/mesh/fair-share';

const LIMIT = 1000;

describe('FairShare', () => {
  it('below half the limit, everyone as they come', () => {
    const fair = new FairShare();
    for (let i = 0; i < 100; i++) assert.ok(fair.admit(1, 100, 499, LIMIT));
  });

  it('above half, a flooding sender gets its part and no more; another still gets its own', () => {
    const fair = new FairShare();
    let flood = 0;
    while (fair.admit(1, 50, 600, LIMIT)) flood += 50;
    assert.equal(flood, 250, 'alone, the flooder had half the upper half: the rest is kept for others');
    assert.ok(fair.admit(2, 50, 750, LIMIT), 'a newcomer finds room');
    let other = 50;
    while (fair.admit(2, 50, 750, LIMIT)) other += 50;
    assert.equal(other, 150, 'the newcomer gets its part (a third of the upper half, one kept for the next)');
    assert.equal(fair.admit(1, 50, 900, LIMIT), false, 'the flooder stays out');
  });

  it('once the queue drains below half, the count starts over', () => {
    const fair = new FairShare();
    while (fair.admit(1, 100, 600, LIMIT));
    assert.equal(fair.admit(1, 100, 600, LIMIT), false);
    assert.ok(fair.admit(1, 100, 100, LIMIT));
    assert.ok(fair.admit(1, 100, 600, LIMIT));
  });
});
