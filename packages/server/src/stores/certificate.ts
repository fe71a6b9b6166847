import { createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import {
  derBitString, derBoolean, derExplicit, derNamedBits, derNull, derOctetString, derOid, derSequence, derSetOfOne, derTime,
  derUnsignedInteger, derUtf8String, pem,
} from './der';

/**
 * The relay's self-signed X.509 v3 certificate, written with the DER writer in der.ts and signed by Node's
 * crypto (Node parses certificates but cannot make them). Clients pin its SHA-256, so nothing here is
 * checked by anyone but TLS itself: the fields are the few a TLS stack and `openssl x509` expect.
 * Ed25519 for new relays (a cheap CertificateVerify in every handshake); RSA for relays whose key
 * predates that and has lost its certificate.
 */

export class CertificateError extends Error {}

export interface CertificateOptions {
  /** The CN, cut to the 64 characters X.520 allows. */
  commonName: string;
  now?: Date;
  /** Big-endian serial; random 16 bytes, positive, by default. */
  serial?: Buffer;
}

const DAY_MS = 86_400_000;
/** Pinning, not expiry, carries the trust: a relay must not stop working on a date. */
const LIFETIME_MS = 100 * 365 * DAY_MS;
/** ub-common-name (RFC 5280 appendix A). */
const MAX_COMMON_NAME = 64;

const OID = {
  commonName: '2.5.4.3',
  ed25519: '1.3.101.112',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** keyUsage bit numbers (RFC 5280 4.2.1.3). */
const DIGITAL_SIGNATURE = 0;
const KEY_ENCIPHERMENT = 2;

interface Signer {
  algorithm: Buffer;
  keyUsage: number[];
  sign(tbs: Buffer): Buffer;
}

function signerFor(key: KeyObject): Signer {
  if (key.type !== 'private') throw new CertificateError(`a certificate is signed with a private key, not a ${key.type} key`);
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      // RFC 8410: no parameters, and Ed25519 hashes the message itself.
      return { algorithm: derSequence(derOid(OID.ed25519)), keyUsage: [DIGITAL_SIGNATURE], sign: (tbs) => sign(null, tbs, key) };
    case 'rsa':
      // RFC 4055: sha256WithRSAEncryption takes explicit NULL parameters. keyEncipherment keeps what the
      // RSA certificates made before had; TLS 1.3 does not use it.
      return {
        algorithm: derSequence(derOid(OID.sha256WithRSAEncryption), derNull()),
        keyUsage: [DIGITAL_SIGNATURE, KEY_ENCIPHERMENT],
        sign: (tbs) => sign('sha256', tbs, key),
      };
    default:
      throw new CertificateError(`cannot make a certificate for a ${key.asymmetricKeyType ?? 'unknown'} key: only Ed25519 and RSA keys are supported`);
  }
}

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  // critical is BOOLEAN DEFAULT FALSE, and DER leaves a DEFAULT value out.
  return critical ? derSequence(derOid(oid), derBoolean(true), derOctetString(value)) : derSequence(derOid(oid), derOctetString(value));
}

/** A random positive 16-byte serial: DER integers are signed, so the top bit stays clear; 0x40 keeps all 16 bytes. */
function randomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

/** `text` cut to `max` characters (code points, so a surrogate pair is never split). */
function cut(text: string, max: number): string {
  return Array.from(text).slice(0, max).join('');
}

/** The certificate in DER for `key` (Ed25519 or RSA), self-signed, valid from a day ago for 100 years. */
export function selfSignedCertificateDer(key: KeyObject, options: CertificateOptions): Buffer {
  const signer = signerFor(key);
  const now = options.now ?? new Date();
  const serial = options.serial ?? randomSerial();
  if (serial.length === 0 || serial.length > 20 || serial.every((b) => b === 0)) {
    throw new CertificateError(`a serial is 1..20 bytes and not zero (RFC 5280 4.1.2.2), not ${serial.length} bytes`);
  }
  const commonName = cut(options.commonName, MAX_COMMON_NAME);
  if (commonName.length === 0) throw new CertificateError('the certificate needs a non-empty common name');
  const name = derSequence(derSetOfOne(derSequence(derOid(OID.commonName), derUtf8String(commonName))));
  const tbs = derSequence(
    derExplicit(0, derUnsignedInteger(2)), // v3
    derUnsignedInteger(serial),
    signer.algorithm,
    name,
    derSequence(derTime(new Date(now.getTime() - DAY_MS)), derTime(new Date(now.getTime() + LIFETIME_MS))),
    name,
    createPublicKey(key).export({ type: 'spki', format: 'der' }),
    derExplicit(3, derSequence(
      // cA is DEFAULT FALSE, so an end-entity's basicConstraints is an empty SEQUENCE.
      extension(OID.basicConstraints, true, derSequence()),
      extension(OID.keyUsage, true, derNamedBits(signer.keyUsage)),
      extension(OID.extKeyUsage, false, derSequence(derOid(OID.serverAuth))),
    )),
  );
  return derSequence(tbs, signer.algorithm, derBitString(signer.sign(tbs)));
}

/** The same, PEM-armoured, as server.crt holds it. */
export function selfSignedCertificate(key: KeyObject, options: CertificateOptions): string {
  return pem('CERTIFICATE', selfSignedCertificateDer(key, options));
}
