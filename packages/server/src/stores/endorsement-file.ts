import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { certificateFingerprint, encodeEndorsement, endorse, endorsementProblem, parseEndorsement, type Endorsement } from '@mnedc/protocol';
import { IdentityError } from './identity';

/** The endorsement that makes this relay one of a network's (protocol endorsement.ts), made by `mnedcd-server --endorse`. */
export const ENDORSEMENT_FILE = 'network.endorsement';

/** A relay starts with an endorsement this close to its end, with a warning. */
export const ENDORSEMENT_WARN_DAYS = 30;

/**
 * This relay's endorsement, checked against its own certificate as a client will check it; null when it
 * has none (it is the network's first relay, or a single one). A file that would make every client
 * refuse the relay stops the start instead, naming what is wrong.
 */
export function loadEndorsement(stateDir: string, ownCertificate: Buffer, nowMs: number): Endorsement | null {
  const path = join(stateDir, ENDORSEMENT_FILE);
  if (!existsSync(path)) return null;
  let endorsement: Endorsement | null = null;
  try {
    endorsement = parseEndorsement(JSON.parse(readFileSync(path, 'utf8')));
  } catch (err) {
    throw new IdentityError(`${path} is not an endorsement (${(err as Error).message}); make it again with mnedcd-server --endorse on the network's first relay`);
  }
  if (!endorsement) throw new IdentityError(`${path} is not an endorsement; make it again with mnedcd-server --endorse on the network's first relay`);
  const network = certificateFingerprint(endorsement.network);
  const problem = endorsementProblem(endorsement, network, ownCertificate, nowMs);
  if (problem) throw new IdentityError(`${path}: clients would refuse this relay: ${problem}; make it again for this relay's server.crt with mnedcd-server --endorse`);
  if (network.equals(certificateFingerprint(ownCertificate))) throw new IdentityError(`${path} endorses the network's own certificate: the first relay needs none; delete it`);
  return endorsement;
}

/**
 * `mnedcd-server --endorse FILE --relay-id ID --days N` on the network's first relay: the endorsement
 * (JSON, for the new relay's state_dir/network.endorsement) of the relay whose certificate (its
 * server.crt, PEM) is in `certificatePem`, signed with this relay's key, the network key.
 */
export function endorseRelay(stateDir: string, certificatePem: string, relayId: string, days: number, nowMs: number): string {
  if (existsSync(join(stateDir, ENDORSEMENT_FILE))) {
    throw new IdentityError(`this relay is endorsed itself (${join(stateDir, ENDORSEMENT_FILE)}): endorse new relays on the network's first relay, which holds the network key`);
  }
  const keyPath = join(stateDir, 'server.key');
  const certPath = join(stateDir, 'server.crt');
  if (!existsSync(keyPath) || !existsSync(certPath)) throw new IdentityError(`${stateDir} has no server.key and server.crt: endorse on the network's first relay`);
  let relayCertificate: Buffer;
  try {
    relayCertificate = new X509Certificate(certificatePem).raw;
  } catch (err) {
    throw new IdentityError(`the relay certificate to endorse is not a certificate (${(err as Error).message}); give the new relay's server.crt`);
  }
  const networkCertificate = new X509Certificate(readFileSync(certPath, 'utf8')).raw;
  if (relayCertificate.equals(networkCertificate)) throw new IdentityError('that is this relay\'s own certificate: the network\'s first relay needs no endorsement');
  try {
    const endorsement = endorse(createPrivateKey(readFileSync(keyPath, 'utf8')), networkCertificate, relayCertificate, relayId, Math.floor(nowMs / 1000) + days * 86_400);
    return `${JSON.stringify(encodeEndorsement(endorsement))}\n`;
  } catch (err) {
    throw new IdentityError(`cannot endorse ${relayId}: ${(err as Error).message}`);
  }
}
