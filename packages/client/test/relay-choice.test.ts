/** Choosing a relay of a cluster, and coming back to the preferred one without flapping. Pure. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { parseHostPort } from '@mnedc/common';
import { Failback, MAX_LEARNED_RELAYS, RelayChoice } from '../src/relay-choice';

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

  it('a hostile relay cannot make the list grow without bound', () => {
    const choice = new RelayChoice([hp('10.1.0.1:3334')]);
    choice.learn(Array.from({ length: 500 }, (_, i) => `10.2.${i >> 8}.${i & 255}:3334`));
    assert.equal(choice.learned.length, MAX_LEARNED_RELAYS);
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
