/** Choosing a relay of a cluster, and coming back to the preferred one without flapping. Pure. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { parseHostPort } from '@mnedc/common';
import { Failback, MAX_LEARNED_RELAYS, PreferredProbe, RelayChoice, unfitRelayAddress } from '../src/relay-choice';

const hp = (text: string) => parseHostPort(text);

describe('RelayChoice', () => {
  it('starts on the first configured relay and moves round the list on each loss', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334'), hp('10.1.0.2:3334')]);
    assert.equal(choice.onPreferred, true);
    choice.next();
    assert.deepEqual(choice.current, hp('10.1.0.2:3334'));
    assert.equal(choice.onPreferred, false);
    choice.next();
    assert.deepEqual(choice.current, hp('10.1.0.1:3334'));
  });

  it('relays a WELCOME listed follow the configured ones, without duplicates or what does not parse', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')]);
    assert.equal(choice.learn(['10.1.0.1:3334', '10.1.0.3:3334', 'nonsense', '10.1.0.3:3334', '[fd00::2]:3334', '10.1.0.4:0']), true);
    assert.deepEqual(choice.all, ['10.1.0.1:3334', '10.1.0.3:3334', '[fd00::2]:3334']);
    assert.deepEqual(choice.learned, ['10.1.0.3:3334', '[fd00::2]:3334']);
    assert.equal(choice.learn(['10.1.0.3:3334', '[fd00::2]:3334']), false, 'the same list is no change');
  });

  it('a new list keeps the device on its relay, even one no longer listed, until it is lost', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')], ['10.1.0.3:3334', '10.1.0.4:3334']);
    choice.next();
    choice.next();
    assert.deepEqual(choice.current, hp('10.1.0.4:3334'));
    choice.learn(['10.1.0.5:3334', '10.1.0.4:3334']);
    assert.deepEqual(choice.current, hp('10.1.0.4:3334'));
    choice.learn(['10.1.0.5:3334']);
    assert.deepEqual(choice.current, hp('10.1.0.4:3334'));
    choice.next();
    assert.deepEqual(choice.current, hp('10.1.0.1:3334'));
  });

  it('a WELCOME cannot send the device to its own host, nowhere, link-local or multicast addresses', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')]);
    choice.learn(['127.0.0.1:6379', 'localhost:22', '0.0.0.0:3334', '169.254.169.254:443', '224.0.0.251:5353', '[::1]:3334', '[fe80::1]:3334', '10.1.0.9:3334']);
    assert.deepEqual(choice.learned, ['10.1.0.9:3334']);
    assert.equal(unfitRelayAddress('192.168.0.10'), false);
    // Unless the operator's own relays are there: several relays on one host (a test, a demo).
    const local = new RelayChoice([hp('127.0.0.1:3334')]);
    local.learn(['127.0.0.1:3335']);
    assert.deepEqual(local.learned, ['127.0.0.1:3335']);
  });

  it('a learned relay that proves not to be one of the network is dropped; a configured one stays', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')], ['10.1.0.8:3334', '10.1.0.9:3334']);
    assert.equal(choice.dropIfLearned(), false, 'the configured relay stays');
    choice.next();
    assert.equal(choice.dropIfLearned(), true);
    assert.deepEqual(choice.learned, ['10.1.0.9:3334']);
    assert.deepEqual(choice.current, hp('10.1.0.9:3334'), 'the next one is tried');
    choice.select(hp('10.1.0.1:3334'));
    assert.equal(choice.onPreferred, true);
  });

  it('a hostile relay cannot make the list grow without bound', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')]);
    choice.learn(Array.from({ length: 500 }, (_, i) => `10.2.${i >> 8}.${i & 255}:3334`));
    assert.equal(choice.learned.length, MAX_LEARNED_RELAYS);
  });
});

describe('PreferredProbe', () => {
  it('goes back once the preferred relay answered for the wait; after a failed return the wait doubles', async () => {
    let answers = 0;
    const probe = new PreferredProbe({ probeEveryMs: 10, returnAfterMs: 100, probe: async () => { answers++; return true; } });
    const timed = async () => {
      const before = answers;
      await new Promise<void>((resolve) => probe.start(hp('10.1.0.1:3334'), resolve));
      return answers - before;
    };
    const first = await timed();
    probe.returnFailed();
    probe.returnFailed();
    const second = await timed();
    // ~100 ms of answers at 7–13 ms each the first time (at most 16 probes), ~400 ms after two failed returns (at least 31).
    assert.ok(first <= 16 && second >= 31, `${first} then ${second} probes`);
    probe.returned();
    probe.stop();
  });
});

describe('Failback', () => {
  it('returns only after the preferred relay answered every probe for the whole wait; a failure starts it over', () => {
    const failback = new Failback(60_000);
    assert.equal(failback.probed(true, 0), false);
    assert.equal(failback.probed(true, 30_000), false);
    assert.equal(failback.probed(false, 40_000), false);
    assert.equal(failback.probed(true, 50_000), false);
    assert.equal(failback.probed(true, 100_000), false);
    assert.equal(failback.probed(true, 110_000), true);
  });
});
