import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { PROTOCOL_VERSION, type Hello } from '@mnedc/protocol';
import { identify, JoinLimits, spreadReject, spreadRetry, type JoinContext, type Turnaway } from '../src';

const hello = (deviceId: string, version = PROTOCOL_VERSION): Hello => ({ version, deviceId, hostname: '', underlay: [], capabilities: [] });
const proven = (key: string) => ({ ok: true as const, device: { keyFingerprint: key } });
const reason = (v: string | Turnaway | null): string => (v === null ? 'ok' : typeof v === 'string' ? `key ${v}` : v.reason);

describe('identify', () => {
  it('settles who the device is: version, the relay\'s own ID, the proofs, then the binding', () => {
    assert.equal(reason(identify(hello('d', 9), proven('K'), undefined, 'srv', 'r')), 'badHello');
    assert.equal(reason(identify(hello('srv'), proven('K'), undefined, 'srv', 'r')), 'badHello');
    assert.equal(reason(identify(hello('d'), { ok: false, failure: 'join' }, undefined, 'srv', 'r')), 'authFailed');
    assert.equal(reason(identify(hello('d'), proven('K'), 'OTHER', 'srv', 'r')), 'boundToOtherKey');
    assert.equal(reason(identify(hello('d'), proven('K'), 'K', 'srv', 'r')), 'key K');
    assert.equal(reason(identify(hello('d'), proven('K'), undefined, 'srv', 'r')), 'key K');
    const wrong = identify(hello('d'), { ok: false, failure: 'join' }, undefined, 'srv', '1.2.3.4:5') as Turnaway;
    assert.match(wrong.reject.reason, /join secret is wrong or was rotated/);
    assert.match(wrong.message, /^Rejected d from 1\.2\.3\.4:5: /);
  });
});

describe('JoinLimits', () => {
  const base: JoinContext = { known: true, connected: false, connectedCount: 0, boundCount: 0, poolCapacity: 253 };
  const settings = { maxClients: 0, maxDevices: 0, deviceJoins: { perSecond: 0.1, burst: 3 }, newDevices: { perSecond: 1, burst: 2 } };

  it('lets a device join `burst` times, then says when it may again; other devices are not affected', () => {
    let now = 0;
    const limits = new JoinLimits(settings, () => now);
    assert.deepEqual([1, 2, 3, 4].map(() => reason(limits.check('a', base))), ['ok', 'ok', 'ok', 'deviceJoinRate']);
    assert.equal((limits.check('a', base) as Turnaway).reject.retryAfterMs, 10_000);
    assert.equal(reason(limits.check('b', base)), 'ok');
    now = 10_000;
    assert.equal(reason(limits.check('a', base)), 'ok');
  });

  it('caps connected devices (a takeover is not a new one), bound devices, and the rate of new ones', () => {
    let now = 0;
    const limits = new JoinLimits({ ...settings, maxClients: 2, maxDevices: 5 }, () => now);
    assert.equal(reason(limits.check('a', { ...base, connectedCount: 2 })), 'maxClients');
    assert.equal(reason(limits.check('b', { ...base, connectedCount: 2, connected: true })), 'ok');
    const fresh = { ...base, known: false };
    assert.equal(reason(limits.check('c', { ...fresh, boundCount: 5 })), 'maxDevices');
    assert.deepEqual(['n1', 'n2', 'n3'].map((id) => reason(limits.check(id, fresh))), ['ok', 'ok', 'newDeviceRate']);
    assert.equal(reason(limits.check('known', base)), 'ok', 'known devices never wait for the new-device rate');
    now = 1000;
    assert.equal(reason(limits.check('n3', fresh)), 'ok');
  });

  it('max_devices 0 means four per address of the pool', () => {
    const limits = new JoinLimits(settings, () => 0);
    assert.equal(reason(limits.check('x', { ...base, known: false, boundCount: 4 * 253 })), 'maxDevices');
    assert.equal(reason(limits.check('y', { ...base, known: false, boundCount: 4 * 253 - 1 })), 'ok');
  });
});

describe('spreadRetry', () => {
  it('never sooner than asked, at most half again later, so a fleet turned away together returns spread out', () => {
    assert.equal(spreadRetry(1000, () => 0), 1000);
    assert.equal(spreadRetry(1000, () => 0.999999), 1500);
    assert.equal(spreadRetry(3_000_000, () => 0.999999), 3_600_000, 'within what a REJECT may carry');
    const hints = Array.from({ length: 200 }, () => spreadRetry(10_000));
    assert.ok(Math.min(...hints) >= 10_000 && Math.max(...hints) <= 15_000 && new Set(hints).size > 100, 'spread');
    assert.deepEqual(spreadReject({ code: 'busy', reason: 'r', retryAfterMs: 30_000 }, () => 0.5), { code: 'busy', reason: 'r', retryAfterMs: 37_500 });
    assert.deepEqual(spreadReject({ code: 'auth', reason: 'r' }), { code: 'auth', reason: 'r' }, 'no hint, none made up');
  });
});
