/**
 * One network, several relays (issue 16): how a relay with a key of its own proves it belongs to the
 * network a join string pins.
 *
 * The join string pins the fingerprint of the network's certificate: the first relay's own, so the join
 * strings of a single relay stay valid when it grows into a cluster. That relay's key is the network
 * key. Another relay has its own key and self-signed certificate, and an ENDORSEMENT made with the
 * network key (mnedcd-server --endorse): the network certificate, the relay's ID, an expiry, and a
 * signature over the SHA-256 of the relay's public key (SPKI), its ID and the expiry. A relay whose TLS
 * certificate is not the pinned one sends ENDORSE right after the TLS handshake; the client checks it
 * against the certificate the TLS session proved (so an endorsement copied to another key is useless)
 * before it sends anything. A relay that holds the network certificate itself sends none.
 *
 * ENDORSE payload (JSON): { network: base64url DER certificate, relay: relay ID, notAfter: epoch seconds,
 *                           signature: base64url }
 * Signed bytes: "mnedc relay endorsement v1\0" | SHA-256(relay SPKI DER) | notAfter u64 BE | relay ID UTF-8
 * The network key signs as its type does: Ed25519 plainly, RSA with SHA-256 (PKCS #1 v1.5).
 */
import { createHash, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { certificateFingerprint, showFingerprint } from './auth';
import { isValidDeviceId } from './messages';

export interface Endorsement {
  /** The network certificate, DER. */
  network: Buffer;
  relay: string;
  /** Epoch seconds after which the endorsement is void. */
  notAfter: number;
  signature: Buffer;
}

/** An ENDORSE payload is a certificate and a signature: a few KiB at most, even with an RSA network key. */
export const MAX_ENDORSEMENT_BYTES = 16 * 1024;

const LABEL = Buffer.from('mnedc relay endorsement v1\0');

function signedBytes(relaySpki: Buffer, relay: string, notAfter: number): Buffer {
  const expiry = Buffer.alloc(8);
  expiry.writeBigUInt64BE(BigInt(notAfter));
  return Buffer.concat([LABEL, createHash('sha256').update(relaySpki).digest(), expiry, Buffer.from(relay, 'utf8')]);
}

/** The digest a key signs with: none for Ed25519 (it hashes itself), SHA-256 for RSA. */
export function digestFor(key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' ? null : 'sha256';
}

function spkiOf(certificateDer: Buffer): Buffer {
  return new X509Certificate(certificateDer).publicKey.export({ type: 'spki', format: 'der' });
}

/** Endorses the relay whose certificate is `relayCertificate` (DER) as `relay` of the network, until `notAfter`. */
export function endorse(networkKey: KeyObject, networkCertificate: Buffer, relayCertificate: Buffer, relay: string, notAfter: number): Endorsement {
  if (!isValidDeviceId(relay)) throw new Error(`relay ID ${JSON.stringify(relay)} is not an ID (1..128 of A-Z a-z 0-9 . _ : @ -)`);
  if (!Number.isSafeInteger(notAfter) || notAfter <= 0) throw new Error(`expiry ${notAfter} is not a time`);
  const signature = sign(digestFor(networkKey), signedBytes(spkiOf(relayCertificate), relay, notAfter), networkKey);
  return { network: networkCertificate, relay, notAfter, signature };
}

export function encodeEndorsement(e: Endorsement): Record<string, unknown> {
  return { network: e.network.toString('base64url'), relay: e.relay, notAfter: e.notAfter, signature: e.signature.toString('base64url') };
}

/** An ENDORSE payload, checked for shape; null for anything else. */
export function parseEndorsement(value: unknown): Endorsement | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  const b64 = (x: unknown, max: number): Buffer | null => (typeof x === 'string' && x.length <= max && /^[A-Za-z0-9_-]+$/.test(x) ? Buffer.from(x, 'base64url') : null);
  const network = b64(v.network, MAX_ENDORSEMENT_BYTES);
  const signature = b64(v.signature, 1024);
  if (!network || !signature || typeof v.relay !== 'string' || !isValidDeviceId(v.relay)) return null;
  if (typeof v.notAfter !== 'number' || !Number.isSafeInteger(v.notAfter) || v.notAfter <= 0) return null;
  return { network, relay: v.relay, notAfter: v.notAfter, signature };
}

/**
 * Null when `e` makes the relay that presented `presented` (DER, proved by the TLS session) a relay of
 * the network `pinned` names, at `nowMs`; else why not, in a sentence for the log and status.
 */
export function endorsementProblem(e: Endorsement, pinned: Buffer, presented: Buffer, nowMs: number): string | null {
  const network = certificateFingerprint(e.network);
  if (!network.equals(pinned)) {
    return `it is endorsed by the network ${showFingerprint(network)}, not ${showFingerprint(pinned)} that the join string pins`;
  }
  try {
    const key = new X509Certificate(e.network).publicKey;
    if (!verify(digestFor(key), signedBytes(spkiOf(presented), e.relay, e.notAfter), key, e.signature)) {
      return `its endorsement as ${e.relay} is not signed by the network key for the certificate it presented`;
    }
  } catch (err) {
    return `its endorsement cannot be checked (${(err as Error).message})`;
  }
  if (e.notAfter * 1000 <= nowMs) return `its endorsement as ${e.relay} expired at ${new Date(e.notAfter * 1000).toISOString()}`;
  return null;
}
