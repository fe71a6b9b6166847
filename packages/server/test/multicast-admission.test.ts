import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { MulticastAdmission } from '../src/dataplane/multicast';

const limits = { perDeviceRate: 10, perDeviceBurst: 20, echoWindowMs: 1000 };

describe('multicast admission', () => {
  it('a sender gets its burst, then its rate, refilled with time', () => {
    const admission = new MulticastAdmission(limits);
    const outcomes = Array.from({ length: 25 }, (_, i) => admission.admit(1, i, 0));
    assert.equal(outcomes.filter((o) => o === 'ok').length, 20);
    assert.equal(admission.admit(1, 100, 100), 'ok', 'one token after 100 ms at 10/s');
    assert.equal(admission.admit(1, 101, 100), 'rateLimited');
    assert.equal(admission.admit(2, 102, 100), 'ok', 'another sender is not affected');
  });

  it('the same datagram from another sender inside the window is an echo; after it, or from the same sender, it is not', () => {
    const admission = new MulticastAdmission(limits);
    assert.equal(admission.admit(1, 7, 0), 'ok');
    assert.equal(admission.admit(2, 7, 500), 'duplicate');
    assert.equal(admission.admit(1, 7, 600), 'ok', 'a sender repeating itself (mDNS probes)');
    assert.equal(admission.admit(2, 7, 1500), 'duplicate', 'the repeat renewed the window');
    assert.equal(admission.admit(2, 7, 1700), 'ok', 'past the window');
  });

  it('what a flood of sources and datagrams makes it hold is bounded', () => {
    const admission = new MulticastAdmission(limits);
    for (let i = 0; i < 100_000; i++) admission.admit(i, i, i);
    const { senders, digests } = admission.held;
    assert.ok(senders <= 65_536, `${senders} senders`);
    assert.ok(digests <= 16_384, `${digests} digests`);
    assert.equal(admission.admit(200_000, 5, 100_000), 'ok', 'a new sender still gets in');
  });
});
