import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { decodeError, decodeKeyValue, decodeRange, decodeTxn, decodeWatchMessage, encodeCompare, encodeOp, EtcdProtocolError, prefixEnd } from '../src/wire';

const b = (text: string): string => Buffer.from(text).toString('base64');
const unb = (text: string): string => Buffer.from(text, 'base64').toString('latin1');

describe('etcd JSON gateway shapes', () => {
  it('ends a prefix range at the prefix with its last byte raised (of its UTF-8)', () => {
    assert.equal(unb(prefixEnd('/mnedc/net/leases/')), '/mnedc/net/leases0');
    assert.deepEqual([...Buffer.from(prefixEnd('aÿ'), 'base64')], [0x61, 0xc3, 0xc0]);
    assert.equal(unb(prefixEnd('')), '\0');
  });

  it('decodes key-values with int64 as strings, zero fields absent, lease IDs kept as text', () => {
    const kv = decodeKeyValue({ key: b('k'), value: b('v'), create_revision: '7', mod_revision: '9', version: '2', lease: '7587866577463377676' });
    assert.deepEqual(kv, { key: 'k', value: 'v', createRevision: 7, modRevision: 9, version: 2, lease: '7587866577463377676' });
    assert.deepEqual(decodeKeyValue({ key: b('k') }), { key: 'k', value: '', createRevision: 0, modRevision: 0, version: 0, lease: '0' });
    const range = decodeRange({ header: { revision: '12' }, kvs: [{ key: b('a') }], more: true, count: '3' });
    assert.deepEqual([range.revision, range.more, range.count, range.kvs.length], [12, true, 3, 1]);
  });

  it('refuses what it cannot trust, naming the field', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ key: 'not base64!' }, /kv.key is not base64/],
      [{ key: b('k'), create_revision: '1e3' }, /create_revision "1e3" is not an integer/],
      [{ key: b('k'), mod_revision: '99999999999999999' }, /mod_revision/],
      [{ key: b('k'), lease: 'x' }, /kv.lease "x" is not an ID/],
      [[], /kv is not an object/],
    ];
    for (const [value, message] of cases) assert.throws(() => decodeKeyValue(value), (e: Error) => e instanceof EtcdProtocolError && message.test(e.message));
    assert.throws(() => decodeRange({ kvs: {} }), /kvs is not a list/);
  });

  it('encodes compares and ops as the gateway wants them', () => {
    assert.deepEqual(encodeCompare({ key: 'a', target: 'CREATE', result: 'EQUAL', value: 0 }), { key: b('a'), target: 'CREATE', result: 'EQUAL', create_revision: '0' });
    assert.deepEqual(encodeCompare({ key: 'a', target: 'VALUE', result: 'EQUAL', value: 'dev-1' }), { key: b('a'), target: 'VALUE', result: 'EQUAL', value: b('dev-1') });
    assert.deepEqual(encodeOp({ put: { key: 'a', value: 'b', lease: '5' } }), { request_put: { key: b('a'), value: b('b'), lease: '5' } });
    assert.deepEqual(encodeOp({ get: { key: 'p/', prefix: true } }), { request_range: { key: b('p/'), range_end: b('p0') } });
    assert.deepEqual(encodeOp({ delete: { key: 'a' } }), { request_delete_range: { key: b('a') } });
  });

  it('decodes a transaction: absent succeeded is false, each response in order', () => {
    const t = decodeTxn({ header: { revision: '5' }, responses: [{ response_range: { kvs: [{ key: b('x'), value: b('owner') }], count: '1' } }, { response_put: { header: { revision: '5' } } }] });
    assert.equal(t.succeeded, false);
    assert.deepEqual(t.results, [{ get: { kvs: [{ key: 'x', value: 'owner', createRevision: 0, modRevision: 0, version: 0, lease: '0' }], count: 1 } }, { put: { revision: 5 } }]);
    assert.throws(() => decodeTxn({ responses: [{ response_other: {} }] }), /none of response_put/);
  });

  it('decodes watch messages: PUT is the absent type, compaction and cancel are flagged, errors thrown', () => {
    const m = decodeWatchMessage({ result: { header: { revision: '30' }, events: [{ kv: { key: b('a'), mod_revision: '29' } }, { type: 'DELETE', kv: { key: b('b'), mod_revision: '30' } }] } });
    assert.deepEqual(m.events.map((e) => [e.type, e.kv.key]), [['put', 'a'], ['delete', 'b']]);
    assert.equal(decodeWatchMessage({ result: { compact_revision: '17', canceled: true } }).compactRevision, 17);
    assert.equal(decodeWatchMessage({ result: { created: true } }).created, true);
    assert.throws(() => decodeWatchMessage({ error: { message: 'etcdserver: no leader' } }), /no leader/);
    assert.throws(() => decodeWatchMessage({ result: { events: [{ type: 'EXPLODE', kv: {} }] } }), /event type/);
  });

  it('reads etcd errors and anything else a failing HTTP answer holds', () => {
    assert.deepEqual(decodeError('{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'),
      { code: 5, message: 'etcdserver: requested lease not found' });
    assert.deepEqual(decodeError('<html>bad gateway</html>'), { code: 0, message: '<html>bad gateway</html>' });
  });
});
