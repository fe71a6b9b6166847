/**
 * UDP over IPv4 (RFC 768), just enough for the relay to answer a datagram addressed to itself (DNS on
 * its overlay address) without the round trip through its TUN and kernel. Anything this does not read
 * as a plain, whole, correctly summed datagram is left to the kernel, which has the final say as before.
 */
import { onesSum } from './gso';
import { internetChecksum } from './ipv4';

export const IPPROTO_UDP = 17;
const UDP_HEADER_BYTES = 8;
const IPV4_HEADER_BYTES = 20;

/** A datagram inside a buffer: ports, and where its payload lies. */
export interface UdpDatagram {
  sourcePort: number;
  destinationPort: number;
  payloadStart: number;
  payloadEnd: number;
}

/** The ones'-complement sum, not complemented, of the pseudo-header (RFC 768) and `length` bytes of UDP at `udp`. */
function udpSum(buffer: Buffer, ip: number, udp: number, length: number): number {
  return onesSum(buffer, udp, udp + length, onesSum(buffer, ip + 12, ip + 20, IPPROTO_UDP + length));
}

/**
 * The UDP datagram of the IPv4 packet at `ip` in `buffer` (its version and lengths already checked), or
 * null when it is not one to answer directly: another protocol, IP options (the kernel checks them; we
 * leave them to it), a fragment, a header checksum or UDP lengths that do not add up, another
 * `destinationPort` when one is given, or a UDP checksum that does not add up (0, "none", is allowed in
 * IPv4). `verify` false: the UDP checksum is not checked (an offloaded packet carries only a partial one).
 * The port is compared before any checksum is summed, so packets for other ports cost nothing more.
 */
export function readUdp(buffer: Buffer, ip: number, options: { verify?: boolean; destinationPort?: number } = {}): UdpDatagram | null {
  if (buffer[ip + 9] !== IPPROTO_UDP || buffer[ip] !== 0x45) return null;
  // More-fragments set or an offset: the kernel reassembles, we do not.
  if ((buffer.readUInt16BE(ip + 6) & 0x3fff) !== 0) return null;
  const totalLength = buffer.readUInt16BE(ip + 2);
  const udp = ip + IPV4_HEADER_BYTES;
  if (totalLength < IPV4_HEADER_BYTES + UDP_HEADER_BYTES || ip + totalLength > buffer.length) return null;
  const destinationPort = buffer.readUInt16BE(udp + 2);
  if (options.destinationPort !== undefined && destinationPort !== options.destinationPort) return null;
  const length = buffer.readUInt16BE(udp + 4);
  if (length < UDP_HEADER_BYTES || IPV4_HEADER_BYTES + length > totalLength) return null;
  if (internetChecksum(buffer, ip, udp) !== 0) return null;
  if (options.verify !== false && buffer.readUInt16BE(udp + 6) !== 0 && udpSum(buffer, ip, udp, length) !== 0xffff) return null;
  return { sourcePort: buffer.readUInt16BE(udp), destinationPort, payloadStart: udp + UDP_HEADER_BYTES, payloadEnd: udp + length };
}

/**
 * The IPv4/UDP answer to `query` (the datagram at `ip` in `buffer`, as read by readUdp): addresses and
 * ports swapped, `payload` inside, both checksums set, TTL 64. Not don't-fragment: an EDNS answer may be
 * larger than a small overlay MTU, and the socket path would have let it be fragmented too.
 */
export function udpReply(buffer: Buffer, ip: number, query: UdpDatagram, payload: Buffer): Buffer {
  const length = UDP_HEADER_BYTES + payload.length;
  const packet = Buffer.alloc(20 + length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = IPPROTO_UDP;
  buffer.copy(packet, 12, ip + 16, ip + 20);
  buffer.copy(packet, 16, ip + 12, ip + 16);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  packet.writeUInt16BE(query.destinationPort, 20);
  packet.writeUInt16BE(query.sourcePort, 22);
  packet.writeUInt16BE(length, 24);
  payload.copy(packet, 28);
  // A computed 0 is sent as 0xffff: 0 means "no checksum" (RFC 768).
  packet.writeUInt16BE((~udpSum(packet, 0, 20, length) & 0xffff) || 0xffff, 26);
  return packet;
}
