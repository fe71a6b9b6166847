import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '@mnedc/common';
import { certificateFingerprint, formatJoin, SECRET_BYTES, type Endorsement } from '@mnedc/protocol';
import { loadEndorsement } from './endorsement-file';
import { CertificateError, selfSignedCertificate } from './certificate';
import { DerError } from './der';
import { JournalError, JournalStore, type JournalOptions } from './journal';

/**
 * The relay's long-lived secrets in state_dir. The key and certificate are created once and never
 * overwritten: every client pins the certificate, so replacing it must be a deliberate act (delete the
 * files), never an accident of a restart. New keys are Ed25519 (cheap to sign a handshake with); an RSA
 * key from an older relay stays, and gets an RSA certificate if its certificate is missing.
 */
export interface ServerIdentity {
  keyPem: string;
  certPem: string;
  /** This relay's certificate, DER. */
  certificate: Buffer;
  /** What join strings pin: this relay's certificate's, or with an endorsement the network's. */
  fingerprint: Buffer;
  /** Set on a relay that joins a network with a key of its own (endorsement-file.ts); sent to every client first. */
  endorsement?: Endorsement;
}

export class IdentityError extends Error {}

const KEY_FILE = 'server.key';
const CERT_FILE = 'server.crt';
const SECRET_FILE = 'join.secret';

export function loadOrCreateIdentity(stateDir: string): { identity: ServerIdentity; created: boolean } {
  const keyPath = join(stateDir, KEY_FILE);
  const certPath = join(stateDir, CERT_FILE);
  let created = false;
  if (!existsSync(keyPath)) {
    if (existsSync(certPath)) {
      throw new IdentityError(`${certPath} exists without its key ${keyPath}; restore the key, or delete both to create a new identity (every client then needs a new join string)`);
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileAtomic(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    created = true;
  }
  const keyPem = readFileSync(keyPath, 'utf8');
  if (!existsSync(certPath)) {
    const key = parseKey(keyPem, keyPath);
    try {
      writeFileAtomic(certPath, selfSignedCertificate(key, { commonName: `mnedc relay ${hostname()}` }), 0o644);
    } catch (err) {
      // DerError: the one thing outside our control is the clock (a year past 9999 has no certificate time).
      if (err instanceof CertificateError || err instanceof DerError) throw new IdentityError(`cannot create ${certPath} for ${keyPath}: ${err.message}`);
      throw err;
    }
    created = true;
  }
  const certPem = readFileSync(certPath, 'utf8');
  let der: Buffer;
  try {
    der = new X509Certificate(certPem).raw;
  } catch (err) {
    throw new IdentityError(`${certPath} is not a certificate (${(err as Error).message})`);
  }
  const endorsement = loadEndorsement(stateDir, der, Date.now());
  const fingerprint = certificateFingerprint(endorsement ? endorsement.network : der);
  return { identity: { keyPem, certPem, certificate: der, fingerprint, ...(endorsement ? { endorsement } : {}) }, created };
}

function parseKey(keyPem: string, keyPath: string): KeyObject {
  try {
    return createPrivateKey(keyPem);
  } catch (err) {
    throw new IdentityError(`${keyPath} is not a private key (${(err as Error).message}); restore it, or delete it to create a new identity (every client then needs a new join string)`);
  }
}

/** The join secret: created on first start, replaced only by rotation. */
export class JoinSecret {
  private readonly path: string;
  private value: Buffer;

  constructor(stateDir: string) {
    this.path = join(stateDir, SECRET_FILE);
    if (existsSync(this.path)) {
      this.value = Buffer.from(readFileSync(this.path, 'utf8').trim(), 'base64url');
      if (this.value.length !== SECRET_BYTES) throw new IdentityError(`${this.path} is damaged; delete it to create a new join secret`);
    } else {
      this.value = this.write();
    }
  }

  get current(): Buffer {
    return this.value;
  }

  /** A new secret; every join string handed out before stops working at once. */
  rotate(): Buffer {
    this.value = this.write();
    return this.value;
  }

  /** A secret decided elsewhere (a cluster's, in etcd): kept here too, for a start without etcd. */
  adopt(secret: Buffer): void {
    if (secret.length !== SECRET_BYTES) throw new IdentityError(`a join secret is ${SECRET_BYTES} bytes, not ${secret.length}`);
    if (secret.equals(this.value)) return;
    this.value = this.write(secret);
  }

  joinString(fingerprint: Buffer): string {
    return formatJoin({ fingerprint, secret: this.value });
  }

  private write(secret = randomBytes(SECRET_BYTES)): Buffer {
    writeFileAtomic(this.path, `${secret.toString('base64url')}\n`, 0o600);
    return secret;
  }
}

/**
 * Device ID → the fingerprint of the key that first joined with it. A binding lost in a crash would let
 * another key take the ID over, so `bind` resolves only once the binding is on disk, and the caller waits
 * for that before admitting the device. Recording one is O(1) (a journal append, group-committed); the
 * file is compacted in the background. `bindings.json` is the snapshot, and a version 1 file from before
 * the journal is read as it is.
 */
export class DeviceBindings {
  private readonly store: JournalStore<string>;

  constructor(stateDir: string, options: Pick<JournalOptions<string>, 'compactSlack' | 'sliceEntries' | 'onCompactionError'> = {}) {
    try {
      this.store = JournalStore.open({ dir: stateDir, name: 'bindings', field: 'bindings', check: checkFingerprint, ...options });
    } catch (err) {
      if (!(err instanceof JournalError)) throw err;
      throw new IdentityError(`cannot load the device bindings in ${stateDir}: ${err.message}; ` +
        'refusing to start without them, which would let any key claim any device ID');
    }
  }

  /** What the load found, for the startup log: a torn final record is a crash mid-append, nothing lost. */
  get loaded(): { entries: number; records: number; tornBytes: number } {
    return this.store.loaded;
  }

  get(deviceId: string): string | undefined {
    return this.store.get(deviceId);
  }

  get size(): number {
    return this.store.size;
  }

  /** Device ID → fingerprint, every binding. */
  entries(): IterableIterator<[string, string]> {
    return this.store.entries();
  }

  /** Appends and syncs so far, and journal records a restart would replay. */
  get stats(): { batches: number; records: number; compactions: number; journalRecords: number } {
    return { ...this.store.stats, journalRecords: this.store.journalRecords };
  }

  /** Takes effect at once; resolves when durable, rejects (JournalError) if the disk refused it. */
  bind(deviceId: string, fingerprint: string): Promise<void> {
    return this.store.set(deviceId, fingerprint);
  }

  /** The write a binding (or forget) of the device still waits for; undefined if it is durable. */
  pending(deviceId: string): Promise<void> | undefined {
    return this.store.pending(deviceId);
  }

  /** Whether there was a binding; resolves once its removal is durable. */
  forget(deviceId: string): Promise<boolean> {
    return this.store.delete(deviceId);
  }

  /** Compacts now instead of when the journal has grown enough; resolves when done. */
  compact(): Promise<void> {
    return this.store.compact();
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

function checkFingerprint(value: unknown, deviceId: string): string {
  if (typeof value !== 'string') throw new Error(`binding of ${deviceId} is not a fingerprint`);
  return value;
}
