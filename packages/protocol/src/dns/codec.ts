/**
 * The few DNS messages the relay's responder reads and writes (RFC 1035, RFC 6891 for EDNS): one
 * question in, at most one record out. Pure: bytes in, bytes out, no I/O.
 */

export const DnsType = { A: 1, NS: 2, SOA: 6, PTR: 12, AAAA: 28, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const DnsClass = { IN: 1, ANY: 255 } as const;
export const DnsRcode = { NoError: 0, FormErr: 1, ServFail: 2, NXDomain: 3, NotImp: 4, Refused: 5 } as const;
export type DnsRcode = (typeof DnsRcode)[keyof typeof DnsRcode];

export const DNS_HEADER_BYTES = 12;
/** Without EDNS a UDP answer may not exceed this (RFC 1035 4.2.1). */
export const DNS_UDP_MAX = 512;
/** What we offer in our OPT record and the most we send over UDP: the DNS flag day 2020 size, below any sane path MTU. */
export const DNS_EDNS_UDP_MAX = 1232;
/** A TCP message's two-byte length prefix caps it. */
export const DNS_TCP_MAX = 65_535;
/** An encoded name, length octets and terminating zero included (RFC 1035 3.1). */
export const DNS_MAX_NAME_WIRE = 255;
export const DNS_MAX_LABEL = 63;

/** A query that has a readable header but is malformed past it: it earns FORMERR with its ID. */
export class DnsFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DnsFormatError';
  }
}

export interface DnsQuestion {
  /** Labels as sent (case preserved, bytes as latin1), root excluded. */
  labels: string[];
  type: number;
  class: number;
}

export interface DnsQuery {
  id: number;
  opcode: number;
  /** Recursion desired, echoed in the answer. */
  rd: boolean;
  /** Checking disabled, echoed (RFC 4035 3.2.2). */
  cd: boolean;
  question: DnsQuestion;
  /** The question section's bytes, echoed as they came so the requester's 0x20 case pattern survives. */
  questionBytes: Buffer;
  /** Present when the query carried an OPT record. */
  edns: { udpSize: number; version: number } | null;
}

/** The fields of the header, or null when fewer than 12 bytes arrived (nothing to answer to). */
export function readDnsHeader(packet: Buffer): { id: number; flags: number; qd: number; an: number; ns: number; ar: number } | null {
  if (packet.length < DNS_HEADER_BYTES) return null;
  return {
    id: packet.readUInt16BE(0), flags: packet.readUInt16BE(2),
    qd: packet.readUInt16BE(4), an: packet.readUInt16BE(6), ns: packet.readUInt16BE(8), ar: packet.readUInt16BE(10),
  };
}

/** Reads an uncompressed name at `offset`: compression has nothing earlier to point at in a question. */
function readName(packet: Buffer, offset: number): { labels: string[]; end: number } {
  const labels: string[] = [];
  let wire = 0;
  for (;;) {
    if (offset >= packet.length) throw new DnsFormatError('name runs past the end of the message');
    const length = packet[offset]!;
    wire += 1 + (length & 0x3f);
    if ((length & 0xc0) === 0xc0) throw new DnsFormatError('compressed name in the question');
    if ((length & 0xc0) !== 0) throw new DnsFormatError(`label type 0x${(length & 0xc0).toString(16)} is not supported`);
    if (wire > DNS_MAX_NAME_WIRE) throw new DnsFormatError(`name longer than ${DNS_MAX_NAME_WIRE} bytes`);
    offset++;
    if (length === 0) return { labels, end: offset };
    if (offset + length > packet.length) throw new DnsFormatError('label runs past the end of the message');
    labels.push(packet.toString('latin1', offset, offset + length));
    offset += length;
  }
}

/**
 * A query as the responder accepts it, or a DnsFormatError. The caller checks the header first
 * (readDnsHeader, QR, opcode): this reads the question and the optional OPT record.
 */
export function parseDnsQuery(packet: Buffer): DnsQuery {
  const header = readDnsHeader(packet);
  if (!header) throw new DnsFormatError(`${packet.length} bytes is shorter than a DNS header`);
  if (header.qd !== 1) throw new DnsFormatError(`${header.qd} questions (one expected)`);
  if (header.an !== 0 || header.ns !== 0) throw new DnsFormatError('a query with answer or authority records');
  if (header.ar > 1) throw new DnsFormatError(`${header.ar} additional records (at most one OPT expected)`);
  const name = readName(packet, DNS_HEADER_BYTES);
  if (name.end + 4 > packet.length) throw new DnsFormatError('question type and class missing');
  const question: DnsQuestion = { labels: name.labels, type: packet.readUInt16BE(name.end), class: packet.readUInt16BE(name.end + 2) };
  const questionEnd = name.end + 4;
  let offset = questionEnd;
  let edns: DnsQuery['edns'] = null;
  if (header.ar === 1) {
    // OPT: root name, type 41, class = UDP payload size, TTL = extended rcode, version, flags; RDATA options.
    if (packet[offset] !== 0 || offset + 11 > packet.length) throw new DnsFormatError('additional record is not an OPT record');
    if (packet.readUInt16BE(offset + 1) !== DnsType.OPT) throw new DnsFormatError('additional record is not an OPT record');
    const udpSize = packet.readUInt16BE(offset + 3);
    const version = packet[offset + 6]!;
    const rdLength = packet.readUInt16BE(offset + 9);
    offset += 11 + rdLength;
    if (offset > packet.length) throw new DnsFormatError('OPT record runs past the end of the message');
    edns = { udpSize, version };
  }
  if (offset !== packet.length) throw new DnsFormatError(`${packet.length - offset} bytes after the last record`);
  const flags = header.flags;
  return {
    id: header.id, opcode: (flags >> 11) & 0xf, rd: (flags & 0x0100) !== 0, cd: (flags & 0x0010) !== 0,
    question, questionBytes: packet.subarray(DNS_HEADER_BYTES, questionEnd), edns,
  };
}

/** Encodes labels (each ≤ 63 bytes, the whole ≤ 255) as an uncompressed name. */
export function encodeName(labels: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const label of labels) {
    const bytes = Buffer.from(label, 'latin1');
    if (bytes.length === 0 || bytes.length > DNS_MAX_LABEL) throw new RangeError(`label of ${bytes.length} bytes`);
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  const name = Buffer.concat(parts);
  if (name.length > DNS_MAX_NAME_WIRE) throw new RangeError(`name of ${name.length} bytes`);
  return name;
}

export type DnsRecord = { type: typeof DnsType.A; ip: number } | { type: typeof DnsType.AAAA; address: Uint8Array } | { type: typeof DnsType.PTR; target: readonly string[] };

export interface DnsReply {
  rcode: DnsRcode;
  /** Authoritative: set for names in our zone. */
  aa: boolean;
  answers: DnsRecord[];
  /** Seconds; the same for every answer. */
  ttl: number;
}

/** The name pointer to the question's name, which always sits right after the header. */
const QUESTION_NAME_POINTER = 0xc000 | DNS_HEADER_BYTES;

function encodeRecord(record: DnsRecord, ttl: number): Buffer {
  let rdata: Buffer;
  if (record.type === DnsType.A) {
    rdata = Buffer.alloc(4);
    rdata.writeUInt32BE(record.ip >>> 0);
  } else if (record.type === DnsType.AAAA) rdata = Buffer.from(record.address);
  else rdata = encodeName(record.target);
  const fixed = Buffer.alloc(12);
  fixed.writeUInt16BE(QUESTION_NAME_POINTER, 0);
  fixed.writeUInt16BE(record.type, 2);
  fixed.writeUInt16BE(DnsClass.IN, 4);
  fixed.writeUInt32BE(ttl, 6);
  fixed.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([fixed, rdata]);
}

function header(id: number, flags: number, qd: number, an: number, ar: number): Buffer {
  const buf = Buffer.alloc(DNS_HEADER_BYTES);
  buf.writeUInt16BE(id, 0);
  buf.writeUInt16BE(flags, 2);
  buf.writeUInt16BE(qd, 4);
  buf.writeUInt16BE(an, 6);
  buf.writeUInt16BE(ar, 10);
  return buf;
}

/** Our OPT record: the size we accept, no options; `extendedRcode` is the upper 8 bits (BADVERS = 1). */
function optRecord(extendedRcode = 0): Buffer {
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(DnsType.OPT, 1);
  opt.writeUInt16BE(DNS_EDNS_UDP_MAX, 3);
  opt[5] = extendedRcode;
  return opt;
}

/**
 * The answer to a parsed query. Answers' owner names point at the question (compression). When the
 * whole does not fit `maxBytes`, the answers go and TC is set, so the requester retries over TCP.
 */
export function encodeDnsReply(query: DnsQuery, reply: DnsReply, maxBytes: number, badVersion = false): Buffer {
  const opt = query.edns ? [optRecord(badVersion ? 1 : 0)] : [];
  let answers = reply.answers.map((r) => encodeRecord(r, reply.ttl));
  const size = DNS_HEADER_BYTES + query.questionBytes.length + answers.reduce((n, a) => n + a.length, 0) + (opt[0]?.length ?? 0);
  const truncated = size > maxBytes;
  if (truncated) answers = [];
  const flags = 0x8000 | (reply.aa ? 0x0400 : 0) | (truncated ? 0x0200 : 0) | (query.rd ? 0x0100 : 0) | (query.cd ? 0x0010 : 0) | (reply.rcode & 0xf);
  return Buffer.concat([header(query.id, flags, 1, answers.length, opt.length), query.questionBytes, ...answers, ...opt]);
}

/**
 * An error answer from the header alone (FORMERR for what could not be parsed, NOTIMP for another
 * opcode): no question is echoed, since it may be what was malformed (RFC 1035 allows this).
 */
export function encodeDnsError(id: number, requestFlags: number, rcode: DnsRcode): Buffer {
  // Opcode and RD are copied; everything else is ours.
  const flags = 0x8000 | (requestFlags & 0x7900) | (rcode & 0xf);
  return header(id, flags, 0, 0, 0);
}
