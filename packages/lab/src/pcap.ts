/**
 * A small reader for classic pcap captures (what `tcpdump -w` writes), for tests that check what crossed
 * the wire: IPv4 TCP segments out of the capture, one direction's byte stream reassembled in sequence
 * order (tls-records.ts walks the TLS records in such a stream).
 *
 * Pure functions (Buffer in, data out); readPcap() is the only one that touches the file system.
 *
 * Not handled, on purpose: pcapng (tcpdump writes pcap unless told otherwise; parsePcap says so), IPv6,
 * IPv4 fragments (skipped: the lab's TCP never fragments), link types other than Ethernet (1), LINUX_SLL
 * (113), LINUX_SLL2 (276) and raw IPv4 (101, 228, and the DLT_RAW aliases 12 and 14).
 */
import { readFileSync } from 'node:fs';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_LINUX_SLL2 = 276;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export interface TcpSegment {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  /** The TCP payload, a view into the capture buffer (not a copy). */
  payload: Buffer;
  /** TCP flags (TCP_SYN, TCP_FIN, ...); parsePcap always sets them. A SYN's data starts at seq + 1. */
  flags?: number;
  /** Capture time in seconds since the epoch (microsecond or nanosecond precision, as the file has it). */
  time?: number;
}

export interface PcapCapture {
  linkType: number;
  segments: TcpSegment[];
  /** Records in the file, TCP or not. */
  packets: number;
  /** True when the last record was cut short (e.g. tcpdump killed mid-write); that record is ignored. */
  truncated: boolean;
  /** Segments whose IPv4 packet was longer than what was captured (snap length): their payload is partial. */
  snapped: number;
}

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const PCAPNG_MAGIC = 0x0a0d0d0a;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;
/** tcpdump's own maximum snap length; a larger record length means a corrupt file. */
const MAX_RECORD = 262_144;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_VLAN = [0x8100, 0x88a8, 0x9100];
const IPPROTO_TCP = 6;

/** Reads a capture file (see parsePcap). */
export function readPcap(path: string): PcapCapture {
  return parsePcap(readFileSync(path));
}

/**
 * Parses a classic pcap file in either byte order, with microsecond or nanosecond timestamps, and returns
 * its IPv4 TCP segments in capture order. Throws an Error naming the problem for anything that is not a
 * pcap file (including pcapng) or uses an unsupported link type; other packets (ARP, IPv6, UDP, fragments)
 * are skipped.
 */
export function parsePcap(file: Buffer): PcapCapture {
  if (file.length < 4) throw new Error(`not a pcap file: ${file.length} bytes, shorter than the pcap header`);
  const magicLE = file.readUInt32LE(0);
  const magicBE = file.readUInt32BE(0);
  let little: boolean;
  let nano: boolean;
  if (magicLE === MAGIC_MICRO || magicLE === MAGIC_NANO) {
    little = true;
    nano = magicLE === MAGIC_NANO;
  } else if (magicBE === MAGIC_MICRO || magicBE === MAGIC_NANO) {
    little = false;
    nano = magicBE === MAGIC_NANO;
  } else if (magicBE === PCAPNG_MAGIC) {
    throw new Error('not a pcap file: this is pcapng; capture with `tcpdump -w` (pcap) or convert with `editcap -F pcap`');
  } else {
    throw new Error(`not a pcap file: magic 0x${magicBE.toString(16).padStart(8, '0')} is neither a1b2c3d4 nor a1b23c4d in either byte order`);
  }
  if (file.length < GLOBAL_HEADER) throw new Error(`not a pcap file: ${file.length} bytes, shorter than the 24-byte pcap header`);
  const u16 = (at: number): number => (little ? file.readUInt16LE(at) : file.readUInt16BE(at));
  const u32 = (at: number): number => (little ? file.readUInt32LE(at) : file.readUInt32BE(at));
  const major = u16(4);
  if (major !== 2) throw new Error(`unsupported pcap version ${major}.${u16(6)} (expected 2.4)`);
  // The low 16 bits are the link type; the high bits may carry FCS information.
  const linkType = u32(20) & 0xffff;
  const linkOffset = linkLayerDecoder(linkType);

  const capture: PcapCapture = { linkType, segments: [], packets: 0, truncated: false, snapped: 0 };
  let at = GLOBAL_HEADER;
  while (at < file.length) {
    if (file.length - at < RECORD_HEADER) {
      capture.truncated = true;
      break;
    }
    const seconds = u32(at);
    const fraction = u32(at + 4);
    const captured = u32(at + 8);
    if (captured > MAX_RECORD) throw new Error(`corrupt pcap: record at byte ${at} claims ${captured} bytes`);
    const start = at + RECORD_HEADER;
    if (start + captured > file.length) {
      capture.truncated = true;
      break;
    }
    capture.packets++;
    const frame = file.subarray(start, start + captured);
    at = start + captured;
    const ipAt = linkOffset(frame);
    if (ipAt < 0) continue;
    const decoded = decodeIpv4Tcp(frame.subarray(ipAt));
    if (!decoded) continue;
    if (decoded.snapped) capture.snapped++;
    decoded.segment.time = seconds + fraction / (nano ? 1e9 : 1e6);
    capture.segments.push(decoded.segment);
  }
  return capture;
}

/** Returns a function giving the offset of the IPv4 header in a frame, or -1 when it is not IPv4. */
function linkLayerDecoder(linkType: number): (frame: Buffer) => number {
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      return (frame) => {
        let at = 12;
        if (frame.length < at + 2) return -1;
        let type = frame.readUInt16BE(at);
        // 802.1Q / 802.1ad tags, possibly stacked.
        while (ETHERTYPE_VLAN.includes(type) && frame.length >= at + 6) {
          at += 4;
          type = frame.readUInt16BE(at);
        }
        return type === ETHERTYPE_IPV4 ? at + 2 : -1;
      };
    case LINKTYPE_LINUX_SLL:
      // packet type, ARPHRD type, address length, 8 address bytes, protocol.
      return (frame) => (frame.length >= 16 && frame.readUInt16BE(14) === ETHERTYPE_IPV4 ? 16 : -1);
    case LINKTYPE_LINUX_SLL2:
      // protocol, reserved, interface index, ARPHRD type, packet type, address length, 8 address bytes.
      return (frame) => (frame.length >= 20 && frame.readUInt16BE(0) === ETHERTYPE_IPV4 ? 20 : -1);
    case LINKTYPE_RAW:
    case LINKTYPE_IPV4:
    case 12: // DLT_RAW as written by some systems
    case 14:
      return (frame) => (frame.length > 0 && frame[0]! >> 4 === 4 ? 0 : -1);
    default:
      throw new Error(`unsupported pcap link type ${linkType} (supported: Ethernet 1, LINUX_SLL 113, LINUX_SLL2 276, raw IPv4 101/228)`);
  }
}

function ipv4Text(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function decodeIpv4Tcp(ip: Buffer): { segment: TcpSegment; snapped: boolean } | null {
  if (ip.length < 20 || ip[0]! >> 4 !== 4) return null;
  const ihl = (ip[0]! & 0x0f) * 4;
  const total = ip.readUInt16BE(2);
  if (ihl < 20 || total < ihl || ip.length < ihl) return null;
  if (ip[9] !== IPPROTO_TCP) return null;
  const fragment = ip.readUInt16BE(6);
  if ((fragment & 0x2000) !== 0 || (fragment & 0x1fff) !== 0) return null; // MF or offset: a fragment
  // The IPv4 total length, not the frame, says where the packet ends: Ethernet pads short frames to 60 bytes.
  // (A total length of 0 is what TSO packets larger than 64 KiB show; take the captured length then.)
  const end = total === 0 ? ip.length : Math.min(total, ip.length);
  const snapped = total !== 0 && total > ip.length;
  const tcp = ip.subarray(ihl, end);
  if (tcp.length < 20) return null;
  const dataOffset = (tcp[12]! >> 4) * 4;
  if (dataOffset < 20 || dataOffset > tcp.length) return null;
  const segment: TcpSegment = {
    src: ipv4Text(ip, 12),
    dst: ipv4Text(ip, 16),
    srcPort: tcp.readUInt16BE(0),
    dstPort: tcp.readUInt16BE(2),
    seq: tcp.readUInt32BE(4),
    payload: tcp.subarray(dataOffset),
    flags: tcp[13]!,
  };
  return { segment, snapped };
}

// ------------------------------------------------------------------------------------------ TCP streams --

export interface TcpStream {
  src: string;
  srcPort: number;
  dst: string;
  dstPort: number;
  /** The payload bytes in sequence order, retransmissions removed. */
  data: Buffer;
  /**
   * Ranges of the stream (offsets from its first byte) that no captured segment covered: bytes the capture
   * lost. `data` joins the bytes on either side of a gap directly; nothing is filled in.
   */
  gaps: Array<{ offset: number; length: number }>;
  /** Whether the SYN was captured, i.e. `data` starts at the first byte of the stream. */
  sawSyn: boolean;
  sawFin: boolean;
}

function signed32(x: number): number {
  return x | 0;
}

/**
 * Splits segments into one stream per TCP connection and direction, in order of their first segment, each
 * reassembled in sequence order: exact and partial retransmissions are dropped (the first copy of a byte
 * wins), out-of-order segments are put in place, sequence numbers may wrap. A new SYN with another initial
 * sequence number on the same address/port pair starts a new stream. Bytes the capture missed are listed
 * in `gaps` and left out of `data`.
 */
export function tcpStreams(segments: readonly TcpSegment[]): TcpStream[] {
  interface Pending {
    stream: Omit<TcpStream, 'data' | 'gaps'>;
    isn: number | null;
    parts: Array<{ seq: number; payload: Buffer }>;
  }
  const all: Pending[] = [];
  const current = new Map<string, Pending>();
  for (const s of segments) {
    const key = `${s.src}:${s.srcPort}>${s.dst}:${s.dstPort}`;
    const flags = s.flags ?? 0;
    const syn = (flags & TCP_SYN) !== 0;
    let p = current.get(key);
    if (!p || (syn && p.isn !== null && p.isn !== s.seq) || (syn && p.isn === null && p.parts.length > 0)) {
      p = {
        stream: { src: s.src, srcPort: s.srcPort, dst: s.dst, dstPort: s.dstPort, sawSyn: false, sawFin: false },
        isn: null,
        parts: [],
      };
      current.set(key, p);
      all.push(p);
    }
    if (syn) {
      p.isn = s.seq;
      p.stream.sawSyn = true;
    }
    if ((flags & TCP_FIN) !== 0) p.stream.sawFin = true;
    // A SYN's payload (TCP Fast Open) starts one past its sequence number.
    if (s.payload.length > 0) p.parts.push({ seq: syn ? (s.seq + 1) >>> 0 : s.seq, payload: s.payload });
  }
  return all.map(({ stream, isn, parts }) => {
    let base: number;
    if (isn !== null) base = (isn + 1) >>> 0;
    else if (parts.length > 0) {
      // No SYN captured: the stream starts at the lowest sequence number seen (modulo 2^32).
      const first = parts[0]!.seq;
      base = first;
      for (const part of parts) if (signed32(part.seq - first) < signed32(base - first)) base = part.seq;
    } else base = 0;
    // In capture order, keep only the bytes no earlier segment carried: the first copy of a byte wins.
    const covered = new Coverage();
    const pieces: Array<{ rel: number; bytes: Buffer }> = [];
    for (const { seq, payload } of parts) {
      const rel = signed32(seq - base);
      for (const [start, end] of covered.add(rel, rel + payload.length)) {
        pieces.push({ rel: start, bytes: payload.subarray(start - rel, end - rel) });
      }
    }
    pieces.sort((a, b) => a.rel - b.rel);
    const gaps: TcpStream['gaps'] = [];
    let next = 0;
    for (const { rel, bytes } of pieces) {
      if (rel > next) gaps.push({ offset: next, length: rel - next });
      next = rel + bytes.length;
    }
    return { ...stream, data: Buffer.concat(pieces.map((p) => p.bytes)), gaps };
  });
}

/** Disjoint, sorted, merged [start, end) ranges of the sequence space seen so far. */
class Coverage {
  private readonly ranges: Array<[number, number]> = [];

  /** Marks [start, end) as seen and returns the parts of it that were not seen before. */
  add(start: number, end: number): Array<[number, number]> {
    const ranges = this.ranges;
    const fresh: Array<[number, number]> = [];
    if (end <= start) return fresh;
    // First range that ends at or after start (touching ranges merge).
    let lo = 0;
    let hi = ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ranges[mid]![1] < start) lo = mid + 1;
      else hi = mid;
    }
    let pos = start;
    let i = lo;
    let mergedStart = start;
    let mergedEnd = end;
    while (i < ranges.length && ranges[i]![0] <= end) {
      const [s, e] = ranges[i]!;
      if (s > pos) fresh.push([pos, Math.min(s, end)]);
      pos = Math.max(pos, e);
      mergedStart = Math.min(mergedStart, s);
      mergedEnd = Math.max(mergedEnd, e);
      i++;
    }
    if (pos < end) fresh.push([pos, end]);
    ranges.splice(lo, i - lo, [mergedStart, mergedEnd]);
    return fresh;
  }
}

export interface ReassembleOptions {
  /** Join the bytes around a gap directly instead of throwing (default: throw). */
  allowGaps?: boolean;
}

/**
 * The payload sent from `from` (its port, and its address when given), reassembled in sequence order with
 * retransmitted duplicates dropped. Several connections from the same endpoint are concatenated in the order
 * they started. Throws when the capture missed bytes in the middle of a stream (a gap), because the result
 * would silently not be what was sent; pass { allowGaps: true } to get the captured bytes joined anyway.
 */
export function reassemble(segments: readonly TcpSegment[], from: { addr?: string; port: number }, options: ReassembleOptions = {}): Buffer {
  const streams = tcpStreams(segments).filter((s) => s.srcPort === from.port && (from.addr === undefined || s.src === from.addr));
  for (const s of streams) {
    if (s.gaps.length > 0 && !options.allowGaps) {
      const g = s.gaps[0]!;
      throw new Error(`${s.src}:${s.srcPort} → ${s.dst}:${s.dstPort}: the capture misses ${s.gaps.length} range(s) of the stream ` +
        `(first: ${g.length} bytes at offset ${g.offset}); packets were dropped or the capture started late`);
    }
  }
  return Buffer.concat(streams.map((s) => s.data));
}

/** Whether `needle` occurs in `haystack` (an empty needle always does). */
export function containsBytes(haystack: Buffer, needle: Buffer): boolean {
  return haystack.indexOf(needle) !== -1;
}
