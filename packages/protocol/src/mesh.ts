/**
 * Relay to relay (issue 16): the mesh of a cluster's relays, over the same TLS port and frames as devices.
 *
 * Each pair of relays keeps one link, dialed by the relay whose ID sorts first. The dialer checks the
 * listener as a client does (its certificate is the network's, or its ENDORSE endorses it), then sends
 * MESH_HELLO instead of HELLO:
 *   { version, network: cluster name, relay: its ID, to: the ID it means to reach,
 *     certificate: its TLS certificate (DER, base64url), endorsement?: as ENDORSE carries it,
 *     proof: its key's signature over "mnedc mesh hello v1\0" | TLS exporter (EXPORTER_MESH_LABEL, 32
 *            bytes) | relay | "\0" | to }
 * The certificate must be the network's own or be endorsed as `relay`; the proof binds it to this TLS
 * connection, so a recorded MESH_HELLO is useless on another. The listener answers MESH_WELCOME
 * { relay: its ID } (the dialer checks it is `to`) or REJECT and closes.
 *
 * After that both sides send DATA / DATA_GSO (only if both listed "gso": MESH_HELLO.capabilities and
 * MESH_WELCOME.capabilities), PING / PONG and GOODBYE. A relay delivers what comes over the mesh only to
 * its own devices, and only when the packet's source is a device the sending relay carries: one hop,
 * never re-forwarded.
 */
import { sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { certificateFingerprint, EXPORTER_BYTES } from './auth';
import { digestFor, encodeEndorsement, endorsementProblem, MAX_ENDORSEMENT_BYTES, parseEndorsement, type Endorsement } from './endorsement';
import { CAPABILITY, decodeJson, DEVICE_ID, Fields, LIMITS } from './messages';

export const EXPORTER_MESH_LABEL = 'EXPORTER-mnedc-mesh-v1';
export const MESH_VERSION = 1;
const PROOF_LABEL = Buffer.from('mnedc mesh hello v1\0');
/** A relay's ID is a device ID (the relay's own, or the one its endorsement names). */
const RELAY_ID = DEVICE_ID;
/** A cluster's network name: where its state is kept in etcd (/mnedc/<network>/). */
const NETWORK_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function isNetworkName(name: string): boolean {
  return NETWORK_NAME.test(name);
}

/** What a relay registers as its key (relays/<id>) and the mesh holds it to: its certificate's SHA-256, base64url. */
export function certificateKey(der: Buffer): string {
  return certificateFingerprint(der).toString('base64url');
}

export interface MeshHello {
  version: number;
  network: string;
  relay: string;
  to: string;
  /** The dialer's TLS certificate, DER. */
  certificate: Buffer;
  endorsement?: Endorsement;
  proof: Buffer;
  capabilities: string[];
}

export interface MeshWelcome {
  relay: string;
  capabilities: string[];
}

function proofBytes(ekm: Buffer, relay: string, to: string): Buffer {
  return Buffer.concat([PROOF_LABEL, ekm, Buffer.from(`${relay}\0${to}`, 'utf8')]);
}

/** The dialer's proof that it holds the key of `certificate`, bound to this TLS session (`ekm`). */
export function meshProof(key: KeyObject, ekm: Buffer, relay: string, to: string): Buffer {
  return sign(digestFor(key), proofBytes(ekm, relay, to), key);
}

export function encodeMeshHello(hello: MeshHello): Record<string, unknown> {
  return {
    version: hello.version,
    network: hello.network,
    relay: hello.relay,
    to: hello.to,
    certificate: hello.certificate.toString('base64url'),
    ...(hello.endorsement ? { endorsement: encodeEndorsement(hello.endorsement) } : {}),
    proof: hello.proof.toString('base64url'),
    capabilities: hello.capabilities,
  };
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function parseMeshHello(payload: Buffer): MeshHello {
  const f = new Fields('MESH_HELLO', decodeJson(payload, 'MESH_HELLO'));
  const hello: MeshHello = {
    version: f.int('version', 0, 0xffff),
    network: f.string('network', 63, NETWORK_NAME),
    relay: f.string('relay', LIMITS.deviceIdLength, RELAY_ID),
    to: f.string('to', LIMITS.deviceIdLength, RELAY_ID),
    certificate: Buffer.from(f.string('certificate', MAX_ENDORSEMENT_BYTES, BASE64URL), 'base64url'),
    proof: Buffer.from(f.string('proof', 1024, BASE64URL), 'base64url'),
    capabilities: f.has('capabilities') ? f.stringList('capabilities', LIMITS.capabilities, LIMITS.capabilityLength, CAPABILITY) : [],
  };
  if (f.has('endorsement')) {
    hello.endorsement = parseEndorsement(f.object('endorsement')) ?? f.fail('endorsement', 'is not an endorsement');
  }
  return hello;
}

export function parseMeshWelcome(payload: Buffer): MeshWelcome {
  const f = new Fields('MESH_WELCOME', decodeJson(payload, 'MESH_WELCOME'));
  return {
    relay: f.string('relay', LIMITS.deviceIdLength, RELAY_ID),
    capabilities: f.has('capabilities') ? f.stringList('capabilities', LIMITS.capabilities, LIMITS.capabilityLength, CAPABILITY) : [],
  };
}

/**
 * Null when `hello` comes from a relay of the network `pinned` names, as `hello.relay`, holding the key
 * of the certificate it sent on the TLS session whose exporter is `ekm`; else why not.
 */
export function meshHelloProblem(hello: MeshHello, pinned: Buffer, ekm: Buffer, nowMs: number): string | null {
  if (ekm.length !== EXPORTER_BYTES) return 'no TLS exporter';
  let key: KeyObject;
  try {
    key = new X509Certificate(hello.certificate).publicKey;
  } catch (err) {
    return `its certificate cannot be read (${(err as Error).message})`;
  }
  if (!certificateFingerprint(hello.certificate).equals(pinned)) {
    if (!hello.endorsement) return 'its certificate is not the network\'s and it sent no endorsement';
    const problem = endorsementProblem(hello.endorsement, pinned, hello.certificate, nowMs);
    if (problem) return problem;
    if (hello.endorsement.relay !== hello.relay) return `it is endorsed as ${hello.endorsement.relay}, not ${hello.relay}`;
  }
  try {
    if (!verify(digestFor(key), proofBytes(ekm, hello.relay, hello.to), key, hello.proof)) return 'its proof is not signed by the key of its certificate for this connection';
  } catch (err) {
    return `its proof cannot be checked (${(err as Error).message})`;
  }
  return null;
}
