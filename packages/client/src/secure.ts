import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OnReadOpts } from 'node:net';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { writeFileAtomic } from '@mnedc/common';
import {
  certificateFingerprint, endorsementProblem, FrameDecoder, FrameType, HEADER_BYTES, MAX_CONTROL_PAYLOAD, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, helloAuth, parseEndorsement, PROTOCOL_VERSION, showFingerprint,
  type Hello, type HelloAuth, type JoinString,
} from '@mnedc/protocol';

/** What a device proves itself with: the join string it was given and its own key. */
export interface Credentials {
  join: JoinString;
  deviceKey: KeyObject;
}

/**
 * The device's Ed25519 key, created on first start (mode 0600). It is the device's identity to the
 * server: losing it means an operator must `mnedcctl forget` the device before it can rejoin.
 */
export function loadOrCreateDeviceKey(stateDir: string): { key: KeyObject; created: boolean } {
  const path = join(stateDir, 'device.key');
  if (existsSync(path)) {
    const key = createPrivateKey(readFileSync(path, 'utf8'));
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${path} is not an Ed25519 key; move it away to create a new one`);
    return { key, created: false };
  }
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileAtomic(path, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  return { key: privateKey, created: true };
}

/** Node hands over one TLS record's plaintext (at most 16 KiB) per callback, and splits anything larger. */
const READ_BUFFER_BYTES = 16 * 1024;

/**
 * TLS 1.3 to the relay. No CA is consulted (the certificate is self-signed); trust comes from pinning the
 * fingerprint in the join string, checked by serverMismatch before anything is sent.
 *
 * With `onData`, received data goes there instead of 'data' events: Node then decrypts into one reused
 * buffer instead of allocating a Buffer and running the Readable machinery for every 16 KiB record. The
 * chunk is only valid during the call.
 */
export function openTunnel(host: string, port: number, onData?: (chunk: Buffer) => void): TLSSocket {
  // tls.connect has taken onread since Node 14; @types/node 18 only declares it for net.
  const options: ConnectionOptions & { onread?: OnReadOpts } = {
    host,
    port,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    rejectUnauthorized: false,
    // SNI is meaningless for a pinned, self-signed relay; without it nothing names the host on the wire.
    servername: '',
  };
  if (onData) {
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    options.onread = {
      buffer,
      callback: (bytes: number) => {
        onData(buffer.subarray(0, bytes));
        return true;
      },
    };
  }
  return connect(options);
}

/**
 * Whether a relay proves within `timeoutMs` that it is one of the network the join string pins (its
 * certificate, or its ENDORSE): the failback probe (relay-choice.ts). It sends nothing, so the relay
 * learns nothing of the device.
 */
export function probeRelay(host: string, port: number, pinned: Buffer, timeoutMs = ENDORSE_WAIT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = openTunnel(host, port);
    const decoder = new FrameDecoder(MAX_CONTROL_PAYLOAD);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => {
      if (serverMismatch(socket, pinned) === null) done(true);
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        decoder.push(chunk, (frame) => done(frame[0] === FrameType.Endorse && endorsedRelayProblem(frame.subarray(HEADER_BYTES), socket, pinned) === null));
      } catch {
        done(false);
      }
    });
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

/** Null when the server is the one the join string pins; else a sentence for the log and status. */
export function serverMismatch(socket: TLSSocket, pinned: Buffer): string | null {
  const certificate = socket.getPeerCertificate(false);
  if (!certificate || !certificate.raw) return 'the server presented no certificate';
  const presented = certificateFingerprint(certificate.raw);
  if (presented.equals(pinned)) return null;
  return `server identity changed: it presented ${showFingerprint(presented)} but the join string pins ${showFingerprint(pinned)}. ` +
    'If the server was reinstalled, get a new join string (mnedcd-server --print-join) and set [client] join; ' +
    'if [client] server names another TLS server, not the mnedc relay, correct it; otherwise someone may be intercepting the connection';
}

/**
 * How long a relay presenting another certificate than the pinned one has to send its ENDORSE: it is
 * written as the relay's side of the TLS handshake completes, so this covers a relay busy with a join
 * storm, while a wrong server (a misconfigured [client] server) is still named within seconds.
 */
export const ENDORSE_WAIT_MS = 3_000;

/**
 * Null when an ENDORSE payload makes the relay on `socket` (whose certificate the TLS session proved) a
 * relay of the network `pinned` names; else why not (protocol endorsement.ts).
 */
export function endorsedRelayProblem(payload: Buffer, socket: TLSSocket, pinned: Buffer): string | null {
  let endorsement;
  try {
    endorsement = parseEndorsement(JSON.parse(payload.toString('utf8')));
  } catch {
    endorsement = null;
  }
  if (!endorsement) return 'its ENDORSE frame is not an endorsement';
  const presented = socket.getPeerCertificate(false)?.raw;
  if (!presented) return 'it presented no certificate';
  return endorsementProblem(endorsement, pinned, presented, Date.now());
}

export function proveIdentity(socket: TLSSocket, credentials: Credentials, deviceId: string): HelloAuth {
  const ekm = socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
  return helloAuth(credentials.join.secret, credentials.deviceKey, ekm, deviceId);
}

/** The HELLO this device opens a session with, its proof bound to this TLS connection. */
export function buildHello(socket: TLSSocket, credentials: Credentials, device: Pick<Hello, 'deviceId' | 'hostname' | 'underlay' | 'capabilities' | 'previousIp' | 'discovery'>): Hello {
  const hello: Hello = {
    version: PROTOCOL_VERSION,
    deviceId: device.deviceId,
    hostname: device.hostname,
    underlay: device.underlay,
    capabilities: device.capabilities,
    software: 'mnedcd-client',
  };
  if (device.previousIp) hello.previousIp = device.previousIp;
  if (device.discovery) hello.discovery = device.discovery;
  hello.auth = { ...proveIdentity(socket, credentials, device.deviceId) };
  return hello;
}
