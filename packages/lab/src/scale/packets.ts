/**
 * The packets simulated devices put in DATA frames: IPv4/UDP probes between devices and DNS queries to the
 * relay's overlay address. Pure, so the byte layouts are unit-tested without a relay.
 */

import { encodeName, internetChecksum } from '@mnedc/protocol';
import { ipPacket } from '../wire-client';

export const PROBE_PORT = 9; // discard: a real stack would drop it, the bench device counts it
export const DNS_PORT = 53;
const PROBE_MAGIC = 0x6d6e7072; // "mnpr"

/**
 * An IPv4/UDP packet with a valid header checksum (the relay's kernel drops bad ones once a packet reaches
 * its TUN); the UDP checksum is 0, which IPv4 allows (RFC 768).
 */
export function udpPacket(src: number, dst: number, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(srcPort, 0);
  udp.writeUInt16BE(dstPort, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  const packet = ipPacket(src >>> 0, dst >>> 0, udp);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  return packet;
}

export interface Udp {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

/** The UDP datagram in an IPv4 packet, or null for anything else (ICMP, fragments, truncated). */
export function parseUdp(packet: Buffer): Udp | null {
  if (packet.length < 20 || packet[0] >> 4 !== 4 || packet[9] !== 17) return null;
  const ihl = (packet[0] & 0x0f) * 4;
  if (ihl < 20 || packet.length < ihl + 8) return null;
  if ((packet.readUInt16BE(6) & 0x3fff) !== 0) return null;
  const length = packet.readUInt16BE(ihl + 4);
  if (length < 8 || ihl + length > packet.length) return null;
  return {
    src: packet.readUInt32BE(12), dst: packet.readUInt32BE(16),
    srcPort: packet.readUInt16BE(ihl), dstPort: packet.readUInt16BE(ihl + 2),
    payload: packet.subarray(ihl + 8, ihl + length),
  };
}

export function probePayload(id: number): Buffer {
  const payload = Buffer.alloc(8);
  payload.writeUInt32BE(PROBE_MAGIC, 0);
  payload.writeUInt32BE(id >>> 0, 4);
  return payload;
}

/** The probe number in a probe's UDP payload, or null if it is not one. */
export function probeId(payload: Buffer): number | null {
  return payload.length === 8 && payload.readUInt32BE(0) === PROBE_MAGIC ? payload.readUInt32BE(4) : null;
}

/** A DNS query (RFC 1035 4.1) for one name, recursion desired. */
export function dnsQuery(id: number, name: string, type = 1): Buffer {
  const labels = name.replace(/\.$/, '').split('.');
  if (labels.some((l) => l.length === 0 || l.length > 63)) throw new Error(`dnsQuery: ${JSON.stringify(name)} is not a domain name`);
  const qname = encodeName(labels);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  const question = Buffer.alloc(4);
  question.writeUInt16BE(type, 0);
  question.writeUInt16BE(1, 2);
  return Buffer.concat([header, qname, question]);
}

export interface DnsAnswer {
  id: number;
  rcode: number;
  /** The A records of the answer section, dotted. */
  addresses: string[];
}

function skipName(message: Buffer, offset: number): number {
  for (let hops = 0; hops < 128; hops++) {
    if (offset >= message.length) throw new Error('name runs past the message');
    const length = message[offset];
    if (length === 0) return offset + 1;
    if ((length & 0xc0) === 0xc0) return offset + 2;
    if ((length & 0xc0) !== 0) throw new Error(`label type 0x${length.toString(16)}`);
    offset += 1 + length;
  }
  throw new Error('name with too many labels');
}

/** A DNS response: its ID, RCODE and A records; null when it is not a well-formed response. */
export function parseDnsResponse(message: Buffer): DnsAnswer | null {
  try {
    if (message.length < 12 || (message[2] & 0x80) === 0) return null;
    const questions = message.readUInt16BE(4);
    const answers = message.readUInt16BE(6);
    let offset = 12;
    for (let i = 0; i < questions; i++) offset = skipName(message, offset) + 4;
    const addresses: string[] = [];
    for (let i = 0; i < answers; i++) {
      offset = skipName(message, offset);
      if (offset + 10 > message.length) return null;
      const type = message.readUInt16BE(offset);
      const length = message.readUInt16BE(offset + 8);
      offset += 10;
      if (offset + length > message.length) return null;
      if (type === 1 && length === 4) addresses.push([...message.subarray(offset, offset + 4)].join('.'));
      offset += length;
    }
    return { id: message.readUInt16BE(0), rcode: message[3] & 0x0f, addresses };
  } catch {
    return null;
  }
}
