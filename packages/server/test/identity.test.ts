import { strict as assert } from 'node:assert';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { selfSignedCertificate } from '../src/stores/certificate';
import { IdentityError, loadOrCreateIdentity } from '../src/stores/identity';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays('mnedc-identity-');
const stateDir = () => relays.stateDir();
const files = (dir: string) => ({ key: readFileSync(join(dir, 'server.key')), crt: readFileSync(join(dir, 'server.crt')) });

describe('relay identity', () => {
  it('creates an Ed25519 key (PKCS#8, 0600) and its certificate in a new state dir, and reuses them', () => {
    const dir = stateDir();
    const first = loadOrCreateIdentity(dir);
    assert.equal(first.created, true);
    const key = createPrivateKey(first.identity.keyPem);
    assert.equal(key.asymmetricKeyType, 'ed25519');
    assert.match(first.identity.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal(statSync(join(dir, 'server.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'server.crt')).mode & 0o777, 0o644);
    const cert = new X509Certificate(first.identity.certPem);
    assert.equal(cert.checkPrivateKey(key), true);
    assert.equal(cert.verify(createPublicKey(key)), true);
    assert.match(cert.subject, /^CN=mnedc relay \S/);
    assert.ok(first.identity.fingerprint.equals(createHash('sha256').update(cert.raw).digest()));

    const before = files(dir);
    const again = loadOrCreateIdentity(dir);
    assert.equal(again.created, false);
    assert.ok(again.identity.fingerprint.equals(first.identity.fingerprint));
    assert.deepEqual(files(dir), before);
  });

  it('gives an older relay\'s RSA key without a certificate an RSA certificate for that key, leaving the key alone', () => {
    const dir = stateDir();
    // What the relay wrote before Ed25519: RSA-2048 in PKCS#1 PEM.
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const keyPem = rsa.export({ type: 'pkcs1', format: 'pem' }) as string;
    writeFileSync(join(dir, 'server.key'), keyPem, { mode: 0o600 });
    const { identity, created } = loadOrCreateIdentity(dir);
    assert.equal(created, true);
    assert.equal(identity.keyPem, keyPem);
    assert.equal(readFileSync(join(dir, 'server.key'), 'utf8'), keyPem, 'the key is never replaced');
    const cert = new X509Certificate(identity.certPem);
    assert.equal(cert.publicKey.asymmetricKeyType, 'rsa');
    assert.equal(cert.checkPrivateKey(rsa), true);
    assert.equal(cert.verify(createPublicKey(rsa)), true);
  });

  it('loads an existing RSA key and certificate byte for byte, never rewriting them', () => {
    const dir = stateDir();
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const keyPem = rsa.export({ type: 'pkcs1', format: 'pem' }) as string;
    const certPem = selfSignedCertificate(rsa, { commonName: 'mnedc relay old-host', now: new Date('2024-01-01T00:00:00Z') });
    writeFileSync(join(dir, 'server.key'), keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'server.crt'), certPem, { mode: 0o644 });
    const before = { ...files(dir), mtime: statSync(join(dir, 'server.crt')).mtimeMs };
    const { identity, created } = loadOrCreateIdentity(dir);
    assert.equal(created, false);
    assert.equal(identity.keyPem, keyPem);
    assert.equal(identity.certPem, certPem);
    assert.ok(identity.fingerprint.equals(createHash('sha256').update(new X509Certificate(certPem).raw).digest()), 'the pinned fingerprint is unchanged');
    assert.deepEqual({ ...files(dir), mtime: statSync(join(dir, 'server.crt')).mtimeMs }, before);
  });

  it('names the file when the key is damaged or of a kind it cannot certify', () => {
    const dir = stateDir();
    writeFileSync(join(dir, 'server.key'), 'not a key\n', { mode: 0o600 });
    assert.throws(() => loadOrCreateIdentity(dir), (err: Error) => err instanceof IdentityError && err.message.startsWith(`${join(dir, 'server.key')} is not a private key`));
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileSync(join(dir, 'server.key'), ec, { mode: 0o600 });
    assert.throws(() => loadOrCreateIdentity(dir), (err: Error) => err instanceof IdentityError && /cannot create .*server\.crt for .*server\.key: cannot make a certificate for a ec key/.test(err.message));
  });
});
