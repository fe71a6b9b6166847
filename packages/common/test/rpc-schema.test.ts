import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { checkKind, exactly, kind, rpcProblems, type TypeOf } from '../src';

const peer = kind.object({
  ip: 'string', up: 'boolean', ok: 'true', state: kind.oneOf('a', 'b'), remote: kind.nullable('string'), tags: kind.array('string'),
  drops: kind.open({ noRoute: 'number' }), added: kind.optional('number'),
});
type Peer = TypeOf<typeof peer>;

// The derived type is what the daemons return and mnedcctl reads: these lines fail to compile if it drifts.
const good: Peer = { ip: '10.0.0.2', up: true, ok: true, state: 'a', remote: null, tags: [], drops: { noRoute: 1, later: 2 } };
// @ts-expect-error a field the kind does not declare
const extra: Peer = { ...good, surprise: 1 } satisfies Peer;
// @ts-expect-error spread fields are caught too
exactly<Peer>()({ ...good, ...{ surprise: 1 } });
void extra;

describe('checkKind', () => {
  it('accepts a value with exactly the declared fields, open records with extra counters, absent optional fields', () => {
    assert.deepEqual(checkKind(good, peer), []);
    assert.deepEqual(checkKind({ ...good, added: 3 }, peer), []);
  });

  it('names every undeclared, missing or mistyped field by its path', () => {
    const { ip: _ip, ...noIp } = good;
    assert.deepEqual(checkKind({ ...noIp, surprise: 1, up: 'yes', ok: false, state: 'c', tags: ['x', 2], drops: { noRoute: 1, later: 'x' } }, peer, 'p'), [
      'p.ip: missing',
      'p.up: expected a boolean, got "yes"',
      'p.ok: expected true, got a boolean',
      'p.state: expected one of "a", "b", got "c"',
      'p.tags[1]: expected a string, got 2',
      'p.drops.later: expected a finite number, got "x"',
      'p.surprise: not declared',
    ]);
  });

  it('holds a current daemon to its optional fields too when asked', () => {
    assert.deepEqual(checkKind(good, peer, 'p', { requireOptional: true }), ['p.added: missing']);
  });

  it('tells null, arrays and objects apart, and refuses a non-finite number', () => {
    assert.deepEqual(checkKind([], kind.object({})), ['$: expected an object, got an array']);
    assert.deepEqual(checkKind(null, kind.array('number')), ['$: expected an array, got null']);
    assert.deepEqual(checkKind(Number.NaN, 'number'), ['$: expected a finite number, got NaN']);
    assert.deepEqual(checkKind({ a: 1 }, 'null'), ['$: expected null, got an object']);
  });
});

describe('rpcProblems', () => {
  it('refuses a method or notification the schema does not list', () => {
    assert.deepEqual(rpcProblems('client', { result: 'leases' }, []), ['client leases: not declared in RPC_SCHEMA']);
    assert.deepEqual(rpcProblems('server', { notification: 'toString' }, {}), ['server toString: not declared in RPC_SCHEMA']);
  });

  it('checks a peer event against its declaration', () => {
    const event = { event: 'up', deviceId: 'd', ip: '10.0.0.2', hostname: 'h', at: 1 };
    assert.deepEqual(rpcProblems('server', { notification: 'peer' }, event), []);
    assert.deepEqual(rpcProblems('client', { notification: 'peer' }, { ...event, extra: 1 }), ['client peer.extra: not declared']);
  });
});
