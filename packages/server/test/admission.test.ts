import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Admission, type Handshake, type Refusal } from '../src';

describe('Admission', () => {
  const limits = { maxHandshakes: 4, maxHandshakesPerSource: 3, connectionsPerSecond: 2, connectionBurst: 3 };
  const evicted: string[] = [];
  /** Admits under a name, so evictions can be asserted by name. */
  const admit = (admission: Admission, source: string, name = source): Handshake | Refusal => admission.admit(source, () => evicted.push(name));
  const outcome = (result: Handshake | Refusal): string => (typeof result === 'string' ? result : 'admitted');

  it('refills the per-source bucket at the configured rate', () => {
    let now = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 100, maxHandshakesPerSource: 100 }, () => now);
    assert.deepEqual([1, 2, 3, 4].map(() => outcome(admit(admission, 'a'))), ['admitted', 'admitted', 'admitted', 'rateLimited']);
    now = 499;
    assert.equal(admit(admission, 'a'), 'rateLimited');
    now = 500;
    assert.equal(outcome(admit(admission, 'a')), 'admitted', 'one token after 0.5 s at 2/s');
    assert.equal(outcome(admit(admission, 'b')), 'admitted', 'other sources have their own bucket');
  });

  it('caps handshakes in progress per source, and frees slots on release', () => {
    const admission = new Admission({ ...limits, connectionsPerSecond: 1000, connectionBurst: 1000 }, () => 0);
    const first = admit(admission, 'a') as Handshake;
    assert.deepEqual([1, 2, 3].map(() => outcome(admit(admission, 'a'))), ['admitted', 'admitted', 'tooManyFromSource']);
    admission.release(first);
    admission.release(first);
    assert.equal(outcome(admit(admission, 'a')), 'admitted', 'a released slot is free again, once');
    assert.equal(admission.inProgress, 3);
  });

  it('a full table evicts the oldest silent stranger, then the oldest talking one, never a known source for a stranger', () => {
    evicted.length = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 4, maxHandshakesPerSource: 10, connectionsPerSecond: 1000, connectionBurst: 1000 }, () => 0);
    admission.authenticated('home');
    const fromHome = admit(admission, 'home', 'home') as Handshake;
    admission.started(admit(admission, 'flood', 'talking') as Handshake);
    admit(admission, 'flood', 's1');
    admit(admission, 'flood', 's2');
    assert.equal(fromHome.known, true);
    // Full: a newcomer takes the slot of the oldest stranger that never began TLS ...
    const honest = admit(admission, 'honest', 'honest') as Handshake;
    assert.deepEqual(evicted, ['s1']);
    admission.started(honest);
    // ... so while the honest device talks TLS, a flood of idle connections only evicts itself.
    admit(admission, 'flood', 's3');
    admit(admission, 'flood', 's4');
    assert.deepEqual(evicted, ['s1', 's2', 's3']);
    // With no silent stranger left, the stranger that began TLS first goes; the known source never does.
    admission.started(admit(admission, 'flood', 't5') as Handshake);
    assert.deepEqual(evicted, ['s1', 's2', 's3', 's4']);
    admit(admission, 'flood', 's6');
    assert.deepEqual(evicted, ['s1', 's2', 's3', 's4', 'talking']);
    assert.equal(admission.inProgress, 4);
  });

  it('with only known sources in the table a stranger is refused, a known newcomer evicts the oldest', () => {
    evicted.length = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 2, maxHandshakesPerSource: 10, connectionsPerSecond: 1000, connectionBurst: 1000 }, () => 0);
    admission.authenticated('nat-1');
    admission.authenticated('nat-2');
    admit(admission, 'nat-1', 'old');
    admit(admission, 'nat-2', 'newer');
    assert.equal(admit(admission, 'stranger'), 'tooManyHandshakes');
    assert.equal(outcome(admit(admission, 'nat-2', 'newest')), 'admitted');
    assert.deepEqual(evicted, ['old']);
  });

  it('forgets idle sources, and known sources after a week', () => {
    let now = 0;
    const admission = new Admission({ ...limits, maxHandshakes: 1e6, maxHandshakesPerSource: 10 }, () => now);
    for (let i = 0; i < 1000; i++) {
      const source = `10.0.${i >> 8}.${i & 255}`;
      admission.release(admit(admission, source) as Handshake);
    }
    assert.equal(admission.trackedSources, 1000);
    now = 10_000;
    admission.sweep();
    assert.equal(admission.trackedSources, 0);

    admission.authenticated('nat');
    const before = admit(admission, 'nat') as Handshake;
    assert.equal(before.known, true);
    admission.release(before);
    now += 8 * 24 * 3600_000;
    admission.sweep();
    const later = admit(admission, 'nat') as Handshake;
    assert.equal(later.known, false, 'a week after its last device, the source is a stranger like any other');
  });
});
