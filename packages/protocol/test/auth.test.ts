/** HELLO.auth as the relay checks it: the join MAC, the device key (Ed25519 only) and its signature. */
import { strict as assert } from 'node:assert';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { ed25519PublicKey, helloAuth, isFingerprintText, showFingerprint, verifyHelloAuth } from '../src';

const secret = randomBytes(32);
const ekm = randomBytes(32);
const device = generateKeyPairSync('ed25519');

describe('HELLO.auth', () => {
  it('accepts a proof for this session and reports the key fingerprint', () => {
    const auth = helloAuth(secret, device.privateKey, ekm, 'dev-1');
    const der = device.publicKey.export({ format: 'der', type: 'spki' });
    assert.deepEqual(verifyHelloAuth({ ...auth }, secret, ekm, 'dev-1'),
      { ok: true, device: { keyFingerprint: showFingerprint(createHash('sha256').update(der).digest()) } });
  });

  it('tells a fingerprint as shown from anything else a shared store might hold', () => {
    assert.equal(isFingerprintText(showFingerprint(randomBytes(32))), true);
    for (const bad of ['', 'SHA256:', showFingerprint(randomBytes(31)), showFingerprint(randomBytes(32)) + 'x', `MD5:${randomBytes(32).toString('base64url')}`, 'SHA256:' + 'a'.repeat(42) + '=']) {
      assert.equal(isFingerprintText(bad), false, bad);
    }
  });

  it('names what failed: the join MAC, or the device proof', () => {
    const auth = { ...helloAuth(secret, device.privateKey, ekm, 'dev-1') };
    assert.deepEqual(verifyHelloAuth(undefined, secret, ekm, 'dev-1'), { ok: false, failure: 'missing' });
    assert.deepEqual(verifyHelloAuth(auth, randomBytes(32), ekm, 'dev-1'), { ok: false, failure: 'join' });
    assert.deepEqual(verifyHelloAuth(auth, secret, randomBytes(32), 'dev-1'), { ok: false, failure: 'join' }, 'another TLS session');
    const other = helloAuth(secret, generateKeyPairSync('ed25519').privateKey, ekm, 'dev-1');
    assert.deepEqual(verifyHelloAuth({ ...auth, deviceSig: other.deviceSig }, secret, ekm, 'dev-1'), { ok: false, failure: 'device' });
  });

  it('refuses every device key that is not a plain Ed25519 SPKI, without throwing', () => {
    const auth = { ...helloAuth(secret, device.privateKey, ekm, 'dev-1') };
    const der = Buffer.from(auth.deviceKey, 'base64url');
    const others = [
      generateKeyPairSync('x25519').publicKey.export({ format: 'der', type: 'spki' }),
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
      der.subarray(0, 43), Buffer.concat([der, Buffer.from([0])]), Buffer.alloc(0), Buffer.from('not a key'),
    ];
    for (const key of others) {
      assert.equal(ed25519PublicKey(key), null);
      assert.deepEqual(verifyHelloAuth({ ...auth, deviceKey: key.toString('base64url') }, secret, ekm, 'dev-1'), { ok: false, failure: 'device' });
    }
  });

  it('reads an Ed25519 SPKI as OpenSSL does', () => {
    for (let i = 0; i < 20; i++) {
      const der = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
      const key = ed25519PublicKey(der)!;
      assert.equal(key.asymmetricKeyType, 'ed25519');
      assert.deepEqual(key.export({ format: 'der', type: 'spki' }), createPublicKey({ key: der, format: 'der', type: 'spki' }).export({ format: 'der', type: 'spki' }));
    }
  });

  it('never throws on arbitrary auth fields', () => {
    fc.assert(fc.property(fc.string(), fc.string(), fc.string(), fc.uint8Array({ maxLength: 60 }), (join, key, sig, raw) => {
      verifyHelloAuth({ join, deviceKey: key, deviceSig: sig }, secret, ekm, 'dev-1');
      verifyHelloAuth({ join: helloAuth(secret, device.privateKey, ekm, 'd').join, deviceKey: Buffer.from(raw).toString('base64url'), deviceSig: sig }, secret, ekm, 'd');
    }), { numRuns: 300 });
  });
});
