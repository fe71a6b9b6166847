import type { KeyObject } from 'node:crypto';
import { connect, type TLSSocket } from 'node:tls';
import { parseHostPort, type Logger } from '@mnedc/common';
import { Link } from '@mnedc/link';
import {
  CAPABILITY_GSO, certificateFingerprint, certificateKey, encodeJsonFrame, encodeMeshHello, endorsementProblem, EXPORTER_BYTES, EXPORTER_MESH_LABEL,
  FrameType, frameName, HEADER_BYTES, MESH_VERSION, meshProof, parseEndorsement, parseMeshWelcome, parseReject, ProtocolError, type Endorsement,
} from '@mnedc/protocol';
import type { WriteBatch } from '@mnedc/link';

/** What one relay may make another hold: it carries many devices' traffic, so more than one device's. */
export const MESH_BUDGET_BYTES = 4 * 1024 * 1024;
/** The listener's ENDORSE and MESH_WELCOME must come within this, or the dial is tried again. */
const MESH_HANDSHAKE_MS = 5_000;
export const MESH_CAPABILITIES = [CAPABILITY_GSO];

export interface MeshIdentity {
  /** The cluster's network name: a relay of another network is refused even with a valid endorsement. */
  network: string;
  relayId: string;
  /** What join strings pin: the network certificate's fingerprint. */
  fingerprint: Buffer;
  certificate: Buffer;
  keyPem: string;
  endorsement?: Endorsement;
}

export interface DialAttempt {
  /** The relay's ID and where it listens, as the registry says, and the certificate it registered. */
  id: string;
  advertise: string;
  registeredKey: string | undefined;
  self: MeshIdentity;
  key: KeyObject;
  log: Logger;
  /** The batch what comes in is forwarded in, and its end. */
  batch: WriteBatch;
  endBatch(): void;
  /** The link is up (MESH_WELCOME came): its frames go to what this returns. */
  opened(link: Link, gso: boolean): (frame: Buffer) => void;
  /** The attempt failed, or the link it made ended; once. */
  ended(why: string): void;
}

/**
 * One attempt to link to another relay (protocol mesh.ts): TLS, the listener checked as a client checks
 * a relay (the network certificate, or an endorsement for the certificate it registered), MESH_HELLO
 * with this relay's proof over the session, MESH_WELCOME from the relay meant. Returns the socket.
 */
export function dialRelay(a: DialAttempt): TLSSocket | null {
  let target: { host: string; port: number };
  try {
    target = parseHostPort(a.advertise);
  } catch (err) {
    a.ended(`its advertised address ${a.advertise} is not host:port (${(err as Error).message})`);
    return null;
  }
  const socket = connect({ host: target.host, port: target.port, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', rejectUnauthorized: false, servername: '' });
  socket.setNoDelay(true);
  let verified = false;
  let deliver: ((frame: Buffer) => void) | null = null;
  let over = false;
  const deadline = setTimeout(() => finish(verified ? `no MESH_WELCOME within ${MESH_HANDSHAKE_MS} ms`
    : `not a relay of this network: its certificate is not the network's and it sent no endorsement within ${MESH_HANDSHAKE_MS} ms`), MESH_HANDSHAKE_MS);
  const finish = (why: string) => {
    clearTimeout(deadline);
    socket.destroy();
    if (over) return;
    over = true;
    a.ended(why);
  };
  const hello = () => {
    verified = true;
    const ekm = socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_MESH_LABEL, Buffer.alloc(0));
    const { relayId, network, certificate, endorsement } = a.self;
    link.sendControl(encodeJsonFrame(FrameType.MeshHello, encodeMeshHello({
      version: MESH_VERSION, network, relay: relayId, to: a.id, certificate, ...(endorsement ? { endorsement } : {}),
      proof: meshProof(a.key, ekm, relayId, a.id), capabilities: MESH_CAPABILITIES,
    })));
  };
  const link = new Link(socket, { budgetBytes: MESH_BUDGET_BYTES, onOverBudget: () => finish('it does not read what this relay sends (over its budget)') }, (frame) => {
    if (deliver) {
      deliver(frame);
      return;
    }
    const type = frame[0]!;
    if (type === FrameType.Endorse && !verified) {
      const endorsement = parseEndorsement(safeJson(frame));
      const presented = socket.getPeerCertificate(false)?.raw;
      const problem = !endorsement ? 'its ENDORSE frame is not an endorsement' : !presented ? 'it presented no certificate'
        : endorsementProblem(endorsement, a.self.fingerprint, presented, Date.now()) ?? (endorsement.relay !== a.id ? `it is endorsed as ${endorsement.relay}, not ${a.id}` : null);
      if (problem) throw new ProtocolError('unexpected', `not a relay of this network: ${problem}`);
      hello();
    } else if (type === FrameType.MeshWelcome && verified) {
      const welcome = parseMeshWelcome(frame.subarray(HEADER_BYTES));
      if (welcome.relay !== a.id) throw new ProtocolError('unexpected', `it answered as relay ${welcome.relay}, not ${a.id}`);
      clearTimeout(deadline);
      deliver = a.opened(link, welcome.capabilities.includes(CAPABILITY_GSO));
    } else if (type === FrameType.Reject) {
      throw new ProtocolError('unexpected', `it refused the link: ${parseReject(frame.subarray(HEADER_BYTES)).reason}`);
    } else {
      throw new ProtocolError('unexpected', `${frameName(type)} before MESH_WELCOME`);
    }
  });
  socket.once('secureConnect', () => {
    const presented = socket.getPeerCertificate(false)?.raw;
    if (presented && a.registeredKey !== undefined && certificateKey(presented) !== a.registeredKey) {
      finish(`it presents another certificate than relay ${a.id} registered`);
      return;
    }
    // The network's own certificate: the relay holds the network key, and sends no ENDORSE.
    if (presented && certificateFingerprint(presented).equals(a.self.fingerprint)) hello();
  });
  socket.on('data', (chunk: Buffer) => {
    try {
      link.receive(chunk, a.batch);
    } catch (err) {
      finish(err instanceof ProtocolError ? err.message : `internal error: ${(err as Error).message}`);
      if (!(err instanceof ProtocolError)) a.log.error({ err, relay: a.id }, `Internal error on the mesh link to ${a.id}: ${(err as Error).message}`);
    } finally {
      a.endBatch();
    }
  });
  socket.on('error', (err) => finish(err.message));
  socket.on('close', () => finish('connection closed'));
  return socket;
}

function safeJson(frame: Buffer): unknown {
  try {
    return JSON.parse(frame.subarray(HEADER_BYTES).toString('utf8'));
  } catch {
    return null;
  }
}
