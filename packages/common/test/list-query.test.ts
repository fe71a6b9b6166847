import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { fieldMatcher, ListQueryError, parseListQuery, selectRows } from '../src';

describe('list query (peers/leases --filter, --limit)', () => {
  it('matches a substring, or with * or ? a glob on a whole field, case-insensitively', () => {
    const m = (filter: string, ...fields: string[]) => fieldMatcher(filter)(fields);
    assert.ok(m('EDGE', 'site-edge-7'));
    assert.ok(!m('edge-8', 'site-edge-7', 'host', '10.0.0.8'));
    assert.ok(m('10.0.3.', 'dev', 'host', '10.0.3.77'));
    assert.ok(m('edge-*', 'edge-1', ''));
    assert.ok(!m('edge-*', 'site-edge-1'), 'a glob matches the whole field');
    assert.ok(m('10.0.3.?', 'x', 'y', '10.0.3.7'));
    assert.ok(!m('10.0.3.?', 'x', 'y', '10.0.3.77'));
    assert.ok(!m('10.0.3.*', 'x', 'y', '10.0.39.1'), 'a dot in a glob is a dot');
    assert.ok(m('a+(b)*', 'a+(b)c'), 'regex characters are literal');
  });

  it('stops at the limit and keeps the order', () => {
    let looked = 0;
    const rows = Array.from({ length: 10_000 }, (_, i) => `dev-${i}`);
    const picked = selectRows(rows, (r) => { looked++; return [r]; }, { filter: 'dev-1*', limit: 3 });
    assert.deepEqual(picked, ['dev-1', 'dev-10', 'dev-11']);
    assert.equal(looked, 12, 'rows after the limit are not looked at');
    assert.equal(selectRows(rows, (r) => [r], {}).length, 10_000);
  });

  it('parses the parameters and names what is wrong', () => {
    assert.deepEqual(parseListQuery(undefined), {});
    assert.deepEqual(parseListQuery({ filter: 'x', limit: 5 }), { filter: 'x', limit: 5 });
    const bad = (params: unknown, message: RegExp) => assert.throws(() => parseListQuery(params), (e: unknown) => e instanceof ListQueryError && message.test(e.message));
    bad({ limit: 0 }, /limit: 0 is not a whole number from 1 to 1000000/);
    bad({ limit: 1.5 }, /limit: 1.5/);
    bad({ filter: '' }, /filter: 0 characters; give 1 to 256/);
    bad({ filter: 3 }, /params.filter: expected a string, got/);
    bad({ sort: 'ip' }, /params.sort/);
    bad(['x'], /params: expected an object/);
  });
});
