import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { fairShare, MulticastAdmission } from '../src/dataplane/multicast';

const limits = { perDeviceRate: 10, perDeviceBurst: 20, copiesPerSecond: 1e9, echoWindowMs: 1000 };

describe('multicast admission', () => {
  it('a sender gets its burst, then its rate, refilled with time', () => {
    const admission = new MulticastAdmission(limits);
    const outcomes = Array.from({ length: 25 }, (_, i) => admission.admit(1, i, 0));
    assert.equal(outcomes.filter((o) => o === 'ok').length, 20);
    assert.equal(admission.admit(1, 100, 100), 'ok', 'one token after 100 ms at 10/s');
    assert.equal(admission.admit(1, 101, 100), 'rateLimited');
    assert.equal(admission.admit(2, 102, 100), 'ok', 'another sender is not affected');
  });

  it('the same datagram from another sender inside the window is an echo; after it, or from its first sender, it is not', () => {
    const admission = new MulticastAdmission(limits);
    assert.equal(admission.admit(1, 7, 0), 'ok');
    assert.equal(admission.admit(2, 7, 500), 'duplicate');
    assert.equal(admission.admit(1, 7, 600), 'ok', 'a sender repeating itself (mDNS probes)');
    assert.equal(admission.admit(2, 7, 1500), 'duplicate', 'the repeat renewed the window');
    assert.equal(admission.admit(2, 7, 1700), 'ok', 'past the window');
  });

  it('a device replaying another\'s periodic datagram never makes that device\'s own copies echoes', () => {
    const admission = new MulticastAdmission(limits);
    const outcomes: string[] = [];
    // The victim (1) sends its datagram every 2 s; from 1.5 s on the attacker (2) replays it every 500 ms.
    for (let t = 0; t <= 10_000; t += 500) {
      if (t % 2000 === 0) outcomes.push(`victim ${admission.admit(1, 7, t)}`);
      if (t >= 1500) admission.admit(2, 7, t + 1);
    }
    assert.deepEqual(outcomes, Array(6).fill('victim ok'));
    assert.equal(admission.admit(2, 7, 70_000), 'ok', 'a minute after its last send the datagram is nobody\'s');
  });

  it('what a flood of sources and datagrams makes it hold is bounded', () => {
    const admission = new MulticastAdmission(limits);
    for (let i = 0; i < 100_000; i++) admission.admit(i, i, i);
    const { senders, digests } = admission.held;
    assert.ok(senders <= 65_536, `${senders} senders`);
    assert.ok(digests <= 16_384, `${digests} digests`);
    assert.equal(admission.admit(200_000, 5, 100_000), 'ok', 'a new sender still gets in');
  });

  it('each device gets an equal share of the copies: the configured rate on a small network, less on a large one', () => {
    const budget = { perDeviceRate: 50, perDeviceBurst: 100, copiesPerSecond: 100_000, echoWindowMs: 1000 };
    const n = (copies: number, senders = copies) => ({ copies, senders });
    assert.deepEqual(fairShare(budget, n(10)), { rate: 50, burst: 100 });
    assert.deepEqual(fairShare(budget, n(50)), { rate: 40, burst: 40 });
    assert.deepEqual(fairShare(budget, n(1000)), { rate: 0.1, burst: 1 });
    assert.deepEqual(fairShare(budget, n(50, 500)), { rate: 4, burst: 4 }, 'a cluster: every device of the network shares this relay\'s copies');
    const admission = new MulticastAdmission(budget);
    // 1,000 devices: one packet at once, then one every 10 s.
    assert.deepEqual([admission.admit(1, 1, 0, n(1000)), admission.admit(1, 2, 5_000, n(1000)), admission.admit(1, 3, 10_000, n(1000))], ['ok', 'rateLimited', 'ok']);
  });

  it('all senders together never get more copies than a second of the budget, whatever their bursts', () => {
    const admission = new MulticastAdmission({ perDeviceRate: 50, perDeviceBurst: 100, copiesPerSecond: 10_000, echoWindowMs: 1000 });
    let copies = 0;
    for (let source = 0; source < 100; source++) {
      for (let k = 0; k < 5; k++) if (admission.admit(source, source * 10 + k, 0, { copies: 10, senders: 10 }) === 'ok') copies += 10;
    }
    assert.equal(copies, 5_000, 'every sender\'s burst fits (each 10 copies, 100 senders × 5)');
    for (let source = 100; source < 2000; source++) if (admission.admit(source, source, 0, { copies: 10, senders: 10 }) === 'ok') copies += 10;
    assert.equal(copies, 10_000, 'then the relay\'s second of copies is spent');
    assert.equal(admission.admit(5000, 5000, 100, { copies: 10, senders: 10 }), 'ok', '100 ms later there is room for more');
  });
});
