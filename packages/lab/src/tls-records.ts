/**
 * A walk over the TLS records in one direction's reassembled TCP stream (pcap.ts), for tests that check
 * what crossed the wire: record types and counts, and the version the ServerHello negotiated. Pure.
 */
export const TLS_CHANGE_CIPHER_SPEC = 20;
export const TLS_ALERT = 21;
export const TLS_HANDSHAKE = 22;
export const TLS_APPLICATION_DATA = 23;
const TLS_HEARTBEAT = 24;
const HS_CLIENT_HELLO = 1;
const HS_SERVER_HELLO = 2;
const EXT_SUPPORTED_VERSIONS = 0x002b;
/** TLS 1.2 allows 2^14 + 2048 bytes of ciphertext per record; TLS 1.3 allows 2^14 + 256. */
const MAX_RECORD_LENGTH = 16384 + 2048;

export interface TlsSummary {
  /** Complete TLS records seen in both directions. */
  records: number;
  /**
   * The version each ServerHello chose (a HelloRetryRequest counts too): its supported_versions extension
   * when present ('TLSv1.3' for 0x0304), else its legacy_version field ('TLSv1.2' for 0x0303).
   */
  handshakeVersions: string[];
  /**
   * Payload bytes of application_data records, both directions. In TLS 1.3 this includes the encrypted
   * handshake (EncryptedExtensions .. Finished, typically 1-3 KiB): it is > 0 after any 1.3 handshake.
   */
  appDataBytes: number;
  clientAppDataBytes: number;
  serverAppDataBytes: number;
  /**
   * True when records were seen and every handshake message readable in plaintext is a ClientHello or a
   * ServerHello (as in TLS 1.3, where the certificate and everything after the ServerHello is encrypted),
   * and no heartbeat record was seen. False for TLS 1.2 (Certificate etc. in clear).
   */
  sawPlaintextHandshakeOnly: boolean;
  /** Types of the plaintext handshake messages, in order per direction (client's first). */
  plaintextHandshakeTypes: number[];
  /** Alert records (in TLS 1.3 alerts after the handshake are encrypted and count as application data). */
  alerts: number;
  /**
   * Where a direction's bytes were not a TLS record header (e.g. "client→server: byte 0: invalid record
   * header 8f3a..; records resume at byte 1187"), as with a capture that started mid-connection; the walk
   * resynchronises and counts the records after it. Empty when both directions are whole TLS records from
   * their first byte; a trailing partial record is not a problem.
   */
  problems: string[];
}

export function tlsVersionName(version: number): string {
  switch (version) {
    case 0x0304: return 'TLSv1.3';
    case 0x0303: return 'TLSv1.2';
    case 0x0302: return 'TLSv1.1';
    case 0x0301: return 'TLSv1.0';
    case 0x0300: return 'SSLv3';
    default: return `0x${version.toString(16).padStart(4, '0')}`;
  }
}

/** The version a ServerHello body selects, or null when it is malformed. */
function serverHelloVersion(body: Buffer): number | null {
  if (body.length < 38) return null;
  const legacy = body.readUInt16BE(0);
  let at = 34;
  const sessionIdLength = body[at]!;
  at += 1 + sessionIdLength + 2 + 1; // session id, cipher suite, compression method
  if (at > body.length) return null;
  if (at === body.length) return legacy; // no extensions at all
  if (at + 2 > body.length) return null;
  const extensionsEnd = Math.min(body.length, at + 2 + body.readUInt16BE(at));
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = body.readUInt16BE(at);
    const length = body.readUInt16BE(at + 2);
    if (type === EXT_SUPPORTED_VERSIONS && length === 2 && at + 6 <= extensionsEnd) return body.readUInt16BE(at + 4);
    at += 4 + length;
  }
  return legacy;
}

/** Whether a handshake record's payload starts like a plaintext hello (to tell it from an encrypted one). */
function looksLikeHello(payload: Buffer): boolean {
  if (payload.length < 6) return false;
  const type = payload[0]!;
  const length = payload.readUIntBE(1, 3);
  const version = payload.readUInt16BE(4);
  return (type === HS_CLIENT_HELLO || type === HS_SERVER_HELLO) && length >= 38 && length <= 0xffff &&
    version >= 0x0300 && version <= 0x0304;
}

interface DirectionSummary {
  records: number;
  appDataBytes: number;
  alerts: number;
  otherTypes: number;
  handshakeTypes: number[];
  serverHelloVersions: number[];
  problems: string[];
}

function validRecordHeader(stream: Buffer, at: number): boolean {
  const type = stream[at]!;
  return type >= TLS_CHANGE_CIPHER_SPEC && type <= TLS_HEARTBEAT && stream[at + 1] === 3 &&
    stream.readUInt16BE(at + 3) <= MAX_RECORD_LENGTH;
}

/**
 * The next offset from `from` where records chain up again: three valid headers in a row, or fewer that
 * reach the end of the stream exactly (or end inside a last record). -1 when there is none.
 */
function resynchronise(stream: Buffer, from: number): number {
  for (let start = from; start + 5 <= stream.length; start++) {
    let at = start;
    let chained = 0;
    while (chained < 3 && at + 5 <= stream.length && validRecordHeader(stream, at)) {
      at += 5 + stream.readUInt16BE(at + 3);
      chained++;
    }
    if (chained === 3 || (chained > 0 && at + 5 > stream.length)) return start;
  }
  return -1;
}

function walkRecords(stream: Buffer): DirectionSummary {
  const out: DirectionSummary = {
    records: 0, appDataBytes: 0, alerts: 0, otherTypes: 0, handshakeTypes: [], serverHelloVersions: [], problems: [],
  };
  let handshake: Buffer = Buffer.alloc(0);
  // After a ChangeCipherSpec, TLS ≤ 1.2 encrypts the handshake (Finished) but keeps record type 22.
  let encryptedHandshake = false;
  let at = 0;
  while (stream.length - at >= 5) {
    if (!validRecordHeader(stream, at)) {
      // Not at a record boundary: a capture that started mid-connection, or bytes it lost. Find the records
      // again so their types and sizes still count, but say so.
      const next = resynchronise(stream, at + 1);
      const header = stream.subarray(at, at + 5).toString('hex');
      out.problems.push(`byte ${at}: invalid record header ${header}` +
        (next < 0 ? '; no records after it' : `; records resume at byte ${next}`));
      if (next < 0) break;
      at = next;
      handshake = Buffer.alloc(0);
      continue;
    }
    const type = stream[at]!;
    const length = stream.readUInt16BE(at + 3);
    if (stream.length - at - 5 < length) break; // the capture ends inside this record
    const payload = stream.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    out.records++;
    if (type === TLS_APPLICATION_DATA) out.appDataBytes += length;
    else if (type === TLS_ALERT) out.alerts++;
    else if (type === TLS_CHANGE_CIPHER_SPEC) {
      encryptedHandshake = true;
      handshake = Buffer.alloc(0);
    } else if (type === TLS_HEARTBEAT) out.otherTypes++;
    else if (type === TLS_HANDSHAKE) {
      if (encryptedHandshake && handshake.length === 0 && !looksLikeHello(payload)) continue;
      encryptedHandshake = false;
      handshake = handshake.length === 0 ? payload : Buffer.concat([handshake, payload]);
      // Handshake messages may share a record or span several.
      while (handshake.length >= 4) {
        const messageLength = handshake.readUIntBE(1, 3);
        if (handshake.length < 4 + messageLength) break;
        const messageType = handshake[0]!;
        out.handshakeTypes.push(messageType);
        if (messageType === HS_SERVER_HELLO) {
          const body = handshake.subarray(4, 4 + messageLength);
          const v = serverHelloVersion(body);
          if (v === null) out.problems.push(`byte ${at - 5 - length}: malformed ServerHello`);
          else out.serverHelloVersions.push(v);
        }
        handshake = handshake.subarray(4 + messageLength);
      }
    }
  }
  return out;
}

/**
 * Walks the TLS records of both directions of a connection (or of several connections' streams, each
 * starting at a record boundary, concatenated) and reports what an observer without keys can see. The
 * handshake (and so handshakeVersions) is only visible when the capture saw the connection start.
 */
export function summarizeTls(serverToClient: Buffer, clientToServer: Buffer): TlsSummary {
  const server = walkRecords(serverToClient);
  const client = walkRecords(clientToServer);
  const plaintextHandshakeTypes = [...client.handshakeTypes, ...server.handshakeTypes];
  const records = server.records + client.records;
  const problems: string[] = [];
  for (const problem of client.problems) problems.push(`client→server: ${problem}`);
  for (const problem of server.problems) problems.push(`server→client: ${problem}`);
  return {
    records,
    handshakeVersions: server.serverHelloVersions.map(tlsVersionName),
    appDataBytes: server.appDataBytes + client.appDataBytes,
    clientAppDataBytes: client.appDataBytes,
    serverAppDataBytes: server.appDataBytes,
    sawPlaintextHandshakeOnly: records > 0 && server.otherTypes + client.otherTypes === 0 &&
      plaintextHandshakeTypes.every((t) => t === HS_CLIENT_HELLO || t === HS_SERVER_HELLO),
    plaintextHandshakeTypes,
    alerts: server.alerts + client.alerts,
    problems,
  };
}
