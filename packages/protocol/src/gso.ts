/**
 * Offloaded packets: the 10-byte virtio_net_hdr a TUN device with IFF_VNET_HDR puts in front of each
 * packet, its validation, and the software fallback for receivers without offloads — segmentation of
 * TCP/UDP super-packets into MTU-sized IPv4 or IPv6 packets and completion of partial checksums.
 *
 * Layout (struct virtio_net_hdr, every u16 little-endian as in virtio 1.0):
 *   0 flags        u8   NEEDS_CSUM (1): the L4 checksum field holds only the pseudo-header sum;
 *                       DATA_VALID (2): the checksum was verified. Other bits: invalid.
 *   1 gso_type     u8   NONE 0, TCPV4 1, TCPV6 4, UDP_L4 5 (+ ECN 0x80 with TCP), each only with its
 *                       own IP version. UFO (3) is refused: it makes fragments.
 *   2 hdr_len      u16  a hint (IP + L4 header length); never trusted, only bounded
 *   4 gso_size     u16  payload bytes per segment
 *   6 csum_start   u16  where checksumming starts, from the start of the IP header
 *   8 csum_offset  u16  where the checksum goes, from csum_start
 *
 * Pure functions over (buffer, offset) so a relay can check and convert frames in place.
 */
import { FrameType, GSO_HEADER_BYTES, HEADER_BYTES } from './wire';

/** The header as the TUN device reads and writes it, carried unchanged in DATA_GSO; the addon's size must agree (tun.test.ts). */
export const VNET_HDR_BYTES = GSO_HEADER_BYTES;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

/**
 * Smallest gso_size accepted: 536, the MSS every IPv4 host must accept (RFC 1122, 576-byte datagrams).
 * Linux would segment at an MSS as low as 48 (tcp_min_snd_mss), but only a peer advertising an absurd MSS
 * gets there, and a hostile sender would use it to make the relay cut 64 KB into ~1,400 packets of its
 * own headers: five times the work of the bytes it sent. At 536 a segmentation makes at most 122 packets
 * and adds under 9% of headers.
 */
export const MIN_GSO_SIZE = 536;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_CSUM_OFFSET = 16;
const UDP_CSUM_OFFSET = 6;
const UDP_HEADER = 8;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

export interface VnetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function writeVnetHeader(buf: Uint8Array, at: number, h: VnetHeader): void {
  buf[at] = h.flags;
  buf[at + 1] = h.gsoType;
  for (const [i, v] of [[2, h.hdrLen], [4, h.gsoSize], [6, h.csumStart], [8, h.csumOffset]] as const) {
    buf[at + i] = v & 0xff;
    buf[at + i + 1] = (v >>> 8) & 0xff;
  }
}

function fold(sum: number): number {
  // Doubles past 2^32 cannot go through `&`: reduce arithmetically first.
  while (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * The ones'-complement sum (RFC 1071) of data[start, end) as big-endian 16-bit words plus `initial`,
 * folded to 16 bits and not complemented. Long runs are summed as aligned 32-bit little-endian words
 * (several times faster in V8 than byte pairs); byte order and alignment are put right afterwards,
 * which the ones'-complement sum allows (RFC 1071 §2(B)).
 */
export function onesSum(data: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  if (end - start >= 64) {
    // Bytes up to a 4-byte aligned address, then whole words, then the tail.
    while ((data.byteOffset + i) & 3) {
      sum += (i - start) & 1 ? data[i]! : data[i]! << 8;
      i++;
    }
    const words = (end - i) >>> 2;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    let wide = 0;
    for (let w = 0; w < words; w++) wide += view[w]!;
    let middle = fold(wide);
    // Little-endian words give each byte pair swapped when the run starts on an even offset from start.
    if (((i - start) & 1) === 0) middle = ((middle & 0xff) << 8) | (middle >>> 8);
    sum += middle;
    i += words * 4;
  }
  for (; i < end; i++) sum += (i - start) & 1 ? data[i]! : data[i]! << 8;
  return fold(sum);
}

/** The final checksum field value for a sum: complemented, and 0 sent as 0xffff as the kernel does. */
function finish(sum: number): number {
  const c = ~sum & 0xffff;
  return c === 0 ? 0xffff : c;
}

/** Sum of the IPv4 pseudo-header (RFC 793/768) for an L4 segment of `length` bytes. */
function pseudoSum(packet: Uint8Array, ip: number, protocol: number, length: number): number {
  return onesSum(packet, ip + 12, ip + 20, protocol + length);
}

/** The same for IPv6 (RFC 8200 8.1): both addresses, the upper-layer length and the next header. */
function pseudoSum6(packet: Uint8Array, ip: number, nextHeader: number, length: number): number {
  return onesSum(packet, ip + 8, ip + 40, nextHeader + length);
}

const IPV6_HEADER = 40;

/**
 * What is wrong with the packet at buf[at, end) — a virtio_net_hdr followed by an IPv4 or IPv6 packet —
 * or null when a receiver with offloads may be given it and a receiver without can be served by
 * toDataFrames. Checks everything segmentation and checksum completion rely on, so a lying header
 * costs its sender the packet and nothing else.
 */
export function checkOffloadPacket(buf: Uint8Array, at: number, end: number): string | null {
  const ip = at + VNET_HDR_BYTES;
  const length = end - ip;
  if (length < 20) return `packet of ${length} bytes after the virtio header`;
  const flags = buf[at]!;
  const gsoType = buf[at + 1]!;
  const hdrLen = buf[at + 2]! | (buf[at + 3]! << 8);
  const gsoSize = buf[at + 4]! | (buf[at + 5]! << 8);
  const csumStart = buf[at + 6]! | (buf[at + 7]! << 8);
  const csumOffset = buf[at + 8]! | (buf[at + 9]! << 8);
  if (flags & ~(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) return `unknown virtio flags 0x${flags.toString(16)}`;
  const version = buf[ip]! >> 4;
  if (version !== 4 && version !== 6) return `IP version ${version}`;
  const v6 = version === 6;
  // IPv6: the fixed header only; a packet with extension headers is not segmented (csum_start shows it).
  const ihl = v6 ? IPV6_HEADER : (buf[ip]! & 0x0f) * 4;
  const totalLength = v6 ? (length < IPV6_HEADER ? 0 : IPV6_HEADER + ((buf[ip + 4]! << 8) | buf[ip + 5]!)) : (buf[ip + 2]! << 8) | buf[ip + 3]!;
  if (ihl < 20 || totalLength < ihl || totalLength > length) return `IPv${version} lengths (header ${ihl}, total ${totalLength}) do not fit ${length} bytes`;
  if (hdrLen > length) return `hdr_len ${hdrLen} beyond the ${length}-byte packet`;
  const fragment = v6 ? 0 : ((buf[ip + 6]! & 0x3f) << 8) | buf[ip + 7]!; // MF and the offset
  const protocol = buf[ip + (v6 ? 6 : 9)]!;
  const tcpType = v6 ? GSO_TCPV6 : GSO_TCPV4;
  if (flags & VNET_F_NEEDS_CSUM) {
    if (fragment !== 0) return 'partial checksum on a fragment';
    if (csumStart < ihl || csumStart + csumOffset + 2 > totalLength) {
      return `checksum at ${csumStart}+${csumOffset} outside the ${totalLength}-byte packet`;
    }
  }
  const type = gsoType & ~GSO_ECN;
  if (type === GSO_NONE) return gsoType === GSO_NONE ? null : 'ECN flag without TCP segmentation';
  if (type !== tcpType && type !== GSO_UDP_L4) return `gso_type ${gsoType} (only ${v6 ? 'TCPV6' : 'TCPV4'} and UDP_L4 are relayed for IPv${version})`;
  if ((gsoType & GSO_ECN) && type !== tcpType) return 'ECN flag without TCP segmentation';
  if (totalLength !== length) return `segmentable packet of ${length} bytes with IPv${version} total length ${totalLength}`;
  if (fragment !== 0) return 'segmentable fragment';
  if (!(flags & VNET_F_NEEDS_CSUM)) return 'segmentable packet without NEEDS_CSUM';
  if (csumStart !== ihl) return `csum_start ${csumStart} is not the IPv${version} header length ${ihl}`;
  let l4Header: number;
  if (type === tcpType) {
    if (protocol !== IPPROTO_TCP) return `TCP segmentation of IP protocol ${protocol}`;
    if (csumOffset !== TCP_CSUM_OFFSET) return `csum_offset ${csumOffset} for TCP`;
    if (length < ihl + 20) return 'TCP header cut short';
    l4Header = (buf[ip + ihl + 12]! >> 4) * 4;
    if (l4Header < 20 || ihl + l4Header > length) return `TCP header of ${l4Header} bytes does not fit`;
  } else {
    if (protocol !== IPPROTO_UDP) return `UDP segmentation of IP protocol ${protocol}`;
    if (csumOffset !== UDP_CSUM_OFFSET) return `csum_offset ${csumOffset} for UDP`;
    l4Header = UDP_HEADER;
    if (ihl + l4Header > length) return 'UDP header cut short';
  }
  if (gsoSize < MIN_GSO_SIZE) return `gso_size ${gsoSize} (minimum ${MIN_GSO_SIZE})`;
  return null;
}

/** The IP header's length of a checked packet: IPv6's fixed 40 bytes, or IPv4's IHL. */
function headerLength(buf: Uint8Array, ip: number): number {
  return buf[ip]! >> 4 === 6 ? IPV6_HEADER : (buf[ip]! & 0x0f) * 4;
}

/** How many DATA frames toDataFrames makes of a checked packet. */
export function segmentCount(buf: Uint8Array, at: number, end: number): number {
  const type = buf[at + 1]! & ~GSO_ECN;
  if (type === GSO_NONE) return 1;
  const ip = at + VNET_HDR_BYTES;
  const ihl = headerLength(buf, ip);
  const l4Header = type === GSO_TCPV4 || type === GSO_TCPV6 ? (buf[ip + ihl + 12]! >> 4) * 4 : UDP_HEADER;
  const gsoSize = buf[at + 4]! | (buf[at + 5]! << 8);
  return Math.max(1, Math.ceil((end - ip - ihl - l4Header) / gsoSize));
}

/**
 * Turns a packet that passed checkOffloadPacket into what a receiver without offloads takes:
 * concatenated DATA frames ([u32 header][IPv4 packet] ...) with every checksum complete.
 *
 * A packet that needs no segmentation is converted in place — its checksum completed and the frame
 * header written over the last 4 bytes of the virtio header — and returned as a view of `buf`, so the
 * common case copies nothing. A super-packet becomes a new buffer of segments.
 */
export function toDataFrames(buf: Buffer, at: number, end: number): Buffer {
  const type = buf[at + 1]! & ~GSO_ECN;
  const ip = at + VNET_HDR_BYTES;
  if (type === GSO_NONE) {
    const totalLength = buf[ip]! >> 4 === 6 ? IPV6_HEADER + ((buf[ip + 4]! << 8) | buf[ip + 5]!) : (buf[ip + 2]! << 8) | buf[ip + 3]!;
    if (buf[at]! & VNET_F_NEEDS_CSUM) {
      const csumStart = buf[at + 6]! | (buf[at + 7]! << 8);
      const csumOffset = buf[at + 8]! | (buf[at + 9]! << 8);
      // The field holds the pseudo-header sum, so summing over it gives the complete sum.
      const field = ip + csumStart + csumOffset;
      buf.writeUInt16BE(finish(onesSum(buf, ip + csumStart, ip + totalLength)), field);
    }
    buf.writeUInt32BE(((FrameType.Data << 24) | totalLength) >>> 0, ip - HEADER_BYTES);
    return buf.subarray(ip - HEADER_BYTES, ip + totalLength);
  }
  return segment(buf, at, end, type);
}

/**
 * Segmentation as the kernel's tcp_gso_segment / __udp_gso_segment do it: headers copied to every
 * segment, IPv4 ID incremented per segment, TCP sequence numbers advanced, FIN/PSH only on the last
 * TCP segment and CWR only on the first, UDP lengths per segment, all checksums computed afresh.
 */
function segment(buf: Buffer, at: number, end: number, type: number): Buffer {
  const ip = at + VNET_HDR_BYTES;
  const v6 = buf[ip]! >> 4 === 6;
  const ihl = headerLength(buf, ip);
  const tcp = type === GSO_TCPV4 || type === GSO_TCPV6;
  const l4 = ip + ihl;
  const l4Header = tcp ? (buf[l4 + 12]! >> 4) * 4 : UDP_HEADER;
  const headers = ihl + l4Header;
  const gsoSize = buf[at + 4]! | (buf[at + 5]! << 8);
  const payloadStart = ip + headers;
  const payload = end - payloadStart;
  const count = Math.max(1, Math.ceil(payload / gsoSize));
  const out = Buffer.allocUnsafe(count * (HEADER_BYTES + headers) + payload);
  const id = v6 ? 0 : buf.readUInt16BE(ip + 4);
  const seq = tcp ? buf.readUInt32BE(l4 + 4) : 0;
  const protocol = buf[ip + (v6 ? 6 : 9)]!;
  const pseudo = v6 ? pseudoSum6 : pseudoSum;
  let o = 0;
  for (let i = 0; i < count; i++) {
    const from = payloadStart + i * gsoSize;
    const size = Math.min(gsoSize, end - from);
    const segmentLength = headers + size;
    out.writeUInt32BE(((FrameType.Data << 24) | segmentLength) >>> 0, o);
    const sip = o + HEADER_BYTES;
    const sl4 = sip + ihl;
    buf.copy(out, sip, ip, payloadStart);
    buf.copy(out, sip + headers, from, from + size);
    if (v6) {
      // No identification and no header checksum in IPv6: only the payload length changes.
      out.writeUInt16BE(segmentLength - IPV6_HEADER, sip + 4);
    } else {
      out.writeUInt16BE(segmentLength, sip + 2);
      out.writeUInt16BE((id + i) & 0xffff, sip + 4);
      out.writeUInt16BE(0, sip + 10);
      out.writeUInt16BE(~onesSum(out, sip, sip + ihl) & 0xffff, sip + 10);
    }
    if (tcp) {
      out.writeUInt32BE((seq + i * gsoSize) >>> 0, sl4 + 4);
      let tcpFlags = out[sl4 + 13]!;
      if (i < count - 1) tcpFlags &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) tcpFlags &= ~TCP_CWR;
      out[sl4 + 13] = tcpFlags;
      out.writeUInt16BE(0, sl4 + TCP_CSUM_OFFSET);
      const sum = onesSum(out, sl4, sip + segmentLength, pseudo(out, sip, protocol, segmentLength - ihl));
      out.writeUInt16BE(finish(sum), sl4 + TCP_CSUM_OFFSET);
    } else {
      out.writeUInt16BE(segmentLength - ihl, sl4 + 4);
      out.writeUInt16BE(0, sl4 + UDP_CSUM_OFFSET);
      const sum = onesSum(out, sl4, sip + segmentLength, pseudo(out, sip, protocol, segmentLength - ihl));
      out.writeUInt16BE(finish(sum), sl4 + UDP_CSUM_OFFSET);
    }
    o += HEADER_BYTES + segmentLength;
  }
  return out;
}
