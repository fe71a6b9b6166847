import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { CertificateError, selfSignedCertificate, selfSignedCertificateDer } from '../src/stores/certificate';
import { child, oidText, readDer } from './der-reader';

const DAY_MS = 86_400_000;
const keys: Record<'ed25519' | 'rsa', KeyObject> = {
  ed25519: generateKeyPairSync('ed25519').privateKey,
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
};
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('self-signed relay certificate', () => {
  for (const type of ['ed25519', 'rsa'] as const) {
    const key = keys[type];

    it(`${type}: parses in Node, matches its key, verifies its own signature, and is no CA`, () => {
      const now = new Date('2026-12-03T17:00:00.250Z');
      const cert = new X509Certificate(selfSignedCertificate(key, { commonName: 'mnedc relay host-1', now }));
      assert.equal(cert.subject, 'CN=mnedc relay host-1');
      assert.equal(cert.issuer, cert.subject);
      assert.equal(cert.serialNumber.length, 32, '16 bytes');
      assert.ok(Number.parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80, 'positive serial');
      assert.equal(new Date(cert.validFrom).getTime(), Date.parse('2026-12-02T17:00:00Z'));
      assert.equal(new Date(cert.validTo).getTime(), Date.parse('2026-12-03T17:00:00Z') + 100 * 365 * DAY_MS);
      assert.equal(cert.checkPrivateKey(key), true);
      assert.equal(cert.verify(createPublicKey(key)), true);
      assert.equal(cert.verify(createPublicKey(keys[type === 'rsa' ? 'ed25519' : 'rsa'])), false, 'another key does not verify it');
      assert.equal(cert.ca, false);
      assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'Node reports extKeyUsage here: serverAuth');
      assert.equal(cert.publicKey.asymmetricKeyType, type);
    });

    it(`${type}: is strict DER with the fields and extensions RFC 5280 wants`, () => {
      const der = selfSignedCertificateDer(key, { commonName: 'x', now: new Date('2030-06-01T00:00:00Z') });
      const cert = readDer(der); // throws on anything BER-only or on trailing bytes
      const tbs = child(cert, 0);
      assert.equal(child(tbs, 0).tag, 0xa0, '[0] version');
      assert.equal(child(tbs, 0, 0).value.toString('hex'), '02', 'v3');
      const algorithm = child(tbs, 2);
      assert.ok(algorithm.children && child(cert, 1).value.equals(algorithm.value), 'outer and inner signature algorithms agree');
      if (type === 'ed25519') {
        assert.equal(oidText(child(algorithm, 0).value), '1.3.101.112');
        assert.equal(algorithm.children.length, 1, 'Ed25519 has no parameters (RFC 8410)');
      } else {
        assert.equal(oidText(child(algorithm, 0).value), '1.2.840.113549.1.1.11');
        assert.equal(child(algorithm, 1).tag, 0x05, 'RSA has NULL parameters (RFC 4055)');
      }
      assert.equal(child(tbs, 4, 0).tag, 0x17, 'notBefore 2030 is UTCTime');
      assert.equal(child(tbs, 4, 1).tag, 0x18, 'notAfter 2130 is GeneralizedTime');
      assert.equal(child(tbs, 4, 1).value.toString(), '21300508000000Z');
      assert.equal(child(tbs, 5, 0, 0, 1).tag, 0x0c, 'CN is a UTF8String');
      assert.ok(child(tbs, 6).value.equals(readDer(createPublicKey(key).export({ type: 'spki', format: 'der' })).value));
      const extensions = child(tbs, 7, 0).children!.map((e) => ({ oid: oidText(child(e, 0).value), parts: e.children!.length, value: e.children!.at(-1)!.value.toString('hex') }));
      assert.deepEqual(extensions, [
        { oid: '2.5.29.19', parts: 3, value: '3000' }, // critical; cA FALSE is the DEFAULT, so left out
        { oid: '2.5.29.15', parts: 3, value: type === 'ed25519' ? '03020780' : '030205a0' },
        { oid: '2.5.29.37', parts: 2, value: '300a06082b06010505070301' },
      ]);
      assert.equal(child(cert, 2).value[0], 0, 'signature BIT STRING has no unused bits');
    });

    it(`${type}: openssl reads it and shows the extensions`, { skip: !hasOpenssl && 'no openssl here' }, () => {
      const pem = selfSignedCertificate(key, { commonName: 'mnedc relay host-1' });
      const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /Subject: CN ?= ?mnedc relay host-1/);
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, type === 'ed25519' ? /X509v3 Key Usage: critical\s+Digital Signature\n/ : /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
      assert.match(text, /X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication/);
      assert.match(text, type === 'ed25519' ? /Signature Algorithm: ED25519/ : /Signature Algorithm: sha256WithRSAEncryption/);
      // openssl's own chain check of a self-signed leaf: signature and the TLS server purpose.
      const verified = spawnSync('bash', ['-c', 'f=$(mktemp) && cat > "$f" && openssl verify -purpose sslserver -CAfile "$f" "$f"; s=$?; rm -f "$f"; exit $s'], { input: pem, encoding: 'utf8' });
      assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    });
  }

  it('cuts a long common name to 64 characters and carries a long serial', () => {
    const serial = Buffer.from('7f'.padEnd(40, 'ab'), 'hex'); // 20 bytes, the RFC 5280 maximum
    const cert = new X509Certificate(selfSignedCertificate(keys.ed25519, { commonName: `mnedc relay ${'h'.repeat(300)}`, serial }));
    assert.equal(cert.subject, `CN=mnedc relay ${'h'.repeat(52)}`);
    assert.equal(cert.serialNumber.toLowerCase(), serial.toString('hex'));
    const emoji = new X509Certificate(selfSignedCertificate(keys.ed25519, { commonName: `${'é'.repeat(63)}😀😀` }));
    assert.equal(emoji.subject, `CN=${'é'.repeat(63)}😀`, 'cut by characters, never inside one');
  });

  it('refuses keys it cannot sign with, and serials RFC 5280 forbids, naming the problem', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    assert.throws(() => selfSignedCertificate(ec, { commonName: 'x' }), (err: Error) => err instanceof CertificateError && /ec key: only Ed25519 and RSA/.test(err.message));
    assert.throws(() => selfSignedCertificate(createPublicKey(keys.ed25519), { commonName: 'x' }), /signed with a private key, not a public key/);
    assert.throws(() => selfSignedCertificate(keys.ed25519, { commonName: 'x', serial: Buffer.alloc(21, 1) }), /1\.\.20 bytes/);
    assert.throws(() => selfSignedCertificate(keys.ed25519, { commonName: 'x', serial: Buffer.alloc(4) }), /not zero/);
    assert.throws(() => selfSignedCertificate(keys.ed25519, { commonName: '' }), /non-empty common name/);
  });
});
