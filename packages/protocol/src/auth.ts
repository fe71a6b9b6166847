import { createHash, createHmac, createPublicKey, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';

/**
 * Admission, on top of TLS 1.3 (see wire.ts). No certificate authority: the client pins the server's
 * certificate by its SHA-256 fingerprint, which reaches it inside the join string together with a join
 * secret:
 *
 *   mnedc1.<SHA-256 of the server certificate, base64url>.<32-byte join secret, base64url>
 *
 * Both proofs in HELLO.auth are bound to this TLS session through its exported keying material (RFC
 * 5705/8446 exporter, label EXPORTER_LABEL), so a captured HELLO is useless on another connection and a
 * man in the middle relaying HELLO between two TLS sessions fails both checks:
 *
 *   auth.join      = HMAC-SHA256(join secret, "mnedc join v1\0" ‖ EKM ‖ deviceId)
 *   auth.deviceKey = the device's Ed25519 public key (SPKI DER), created on its first start
 *   auth.deviceSig = Ed25519 signature by that key over "mnedc device v1\0" ‖ EKM ‖ deviceId
 *
 * The server binds a device ID to the first key that joins with it; another key claiming that ID is
 * rejected until an operator forgets the device.
 */

export const JOIN_PREFIX = 'mnedc1';
export const EXPORTER_LABEL = 'EXPORTER-mnedc-auth-v1';
export const EXPORTER_BYTES = 32;
/** Empty: in TLS 1.3 an absent and an empty exporter context are the same (RFC 8446 7.5). */
export const EXPORTER_CONTEXT = Buffer.alloc(0);
export const SECRET_BYTES = 32;

export interface JoinString {
  /** SHA-256 of the server certificate (DER). */
  fingerprint: Buffer;
  secret: Buffer;
}

export function formatJoin(join: JoinString): string {
  return `${JOIN_PREFIX}.${join.fingerprint.toString('base64url')}.${join.secret.toString('base64url')}`;
}

/** Throws an Error whose message says what is wrong with the string (it ends up in a config error). */
export function parseJoin(text: string): JoinString {
  const parts = text.trim().split('.');
  if (parts.length !== 3 || parts[0] !== JOIN_PREFIX) {
    throw new Error(`not a join string (expected ${JOIN_PREFIX}.<fingerprint>.<secret>, as printed by mnedcd-server --print-join)`);
  }
  const fingerprint = Buffer.from(parts[1]!, 'base64url');
  const secret = Buffer.from(parts[2]!, 'base64url');
  if (fingerprint.length !== 32 || secret.length !== SECRET_BYTES) {
    throw new Error('join string is damaged (wrong length); copy it again from mnedcd-server --print-join');
  }
  return { fingerprint, secret };
}

export function certificateFingerprint(der: Buffer): Buffer {
  return createHash('sha256').update(der).digest();
}

/** How fingerprints appear in logs and in mnedcctl: short enough to compare by eye, as ssh shows keys. */
export function showFingerprint(fingerprint: Buffer): string {
  return `SHA256:${fingerprint.toString('base64url')}`;
}

/** A fingerprint as showFingerprint writes it (SHA-256, base64url): what a key binding may hold. */
export function isFingerprintText(text: string): boolean {
  return /^SHA256:[A-Za-z0-9_-]{43}$/.test(text);
}

function transcript(kind: 'join' | 'device', ekm: Buffer, deviceId: string): Buffer {
  return Buffer.concat([Buffer.from(`mnedc ${kind} v1\0`), ekm, Buffer.from(deviceId, 'utf8')]);
}

export interface HelloAuth {
  join: string;
  deviceKey: string;
  deviceSig: string;
}

/** `publicKey` (the key's SPKI DER) may be given by a caller that keeps it, saving a derivation per HELLO. */
export function helloAuth(secret: Buffer, deviceKey: KeyObject, ekm: Buffer, deviceId: string,
  publicKey: Buffer = createPublicKey(deviceKey).export({ format: 'der', type: 'spki' })): HelloAuth {
  return {
    join: createHmac('sha256', secret).update(transcript('join', ekm, deviceId)).digest('base64url'),
    deviceKey: publicKey.toString('base64url'),
    deviceSig: sign(null, transcript('device', ekm, deviceId), deviceKey).toString('base64url'),
  };
}

/** DER SubjectPublicKeyInfo of an Ed25519 key: this fixed header, then the 32-byte key (RFC 8410). */
const ED25519_SPKI_HEADER = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * The Ed25519 key in `der`, or null for anything else. Read by hand and imported as a JWK: OpenSSL 3's
 * DER decoder costs ~200 µs a key, a sixth of a whole join on the relay, the raw import ~35 µs.
 */
export function ed25519PublicKey(der: Buffer): KeyObject | null {
  if (der.length !== ED25519_SPKI_HEADER.length + 32 || !der.subarray(0, ED25519_SPKI_HEADER.length).equals(ED25519_SPKI_HEADER)) return null;
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: der.subarray(ED25519_SPKI_HEADER.length).toString('base64url') }, format: 'jwk' });
}

export type AuthFailure = 'missing' | 'join' | 'device';

/** What the server learns from a valid HELLO.auth: the device key's fingerprint, to bind the ID to. */
export interface VerifiedDevice {
  keyFingerprint: string;
}

/**
 * Checks HELLO.auth against the current join secret (a rotation leaves no other valid). Returns the
 * device key fingerprint or the reason it failed. Malformed fields are failures, not throws.
 */
export function verifyHelloAuth(auth: Record<string, unknown> | undefined, secret: Buffer, ekm: Buffer, deviceId: string):
  { ok: true; device: VerifiedDevice } | { ok: false; failure: AuthFailure } {
  if (!auth || typeof auth.join !== 'string' || typeof auth.deviceKey !== 'string' || typeof auth.deviceSig !== 'string') {
    return { ok: false, failure: 'missing' };
  }
  const mac = Buffer.from(auth.join, 'base64url');
  const want = createHmac('sha256', secret).update(transcript('join', ekm, deviceId)).digest();
  if (mac.length !== want.length || !timingSafeEqual(mac, want)) return { ok: false, failure: 'join' };
  try {
    const der = Buffer.from(auth.deviceKey, 'base64url');
    const key = ed25519PublicKey(der);
    if (!key) return { ok: false, failure: 'device' };
    if (!verify(null, transcript('device', ekm, deviceId), key, Buffer.from(auth.deviceSig, 'base64url'))) {
      return { ok: false, failure: 'device' };
    }
    return { ok: true, device: { keyFingerprint: showFingerprint(createHash('sha256').update(der).digest()) } };
  } catch {
    return { ok: false, failure: 'device' };
  }
}
