/**
 * IPv6 inside the overlay without a second allocator: each network has a unique local /64 (RFC 4193,
 * fd00::/8, its 40-bit global ID derived from the network's identity so every relay of a cluster derives
 * the same one), and a device's IPv6 address is that prefix with its IPv4 lease in the low 32 bits, as
 * Tailscale maps IPv4 into its ULA. Its link-local address has the same interface ID (fe80::<ipv4>), so a
 * relay can tell a device's link-local source (mDNS over IPv6 uses one) from a forged one.
 *
 *   prefix:      fd gg gg gg gg gg 00 00 | 00 00 00 00 <ipv4>
 *   link-local:  fe 80 00 00 00 00 00 00 | 00 00 00 00 <ipv4>
 *
 * Pure: addresses are 16-byte buffers here, text only where a person or the kernel reads them.
 */
import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { MDNS, NOT_CARRIED, NOT_GROUP, SSDP } from './multicast';

export const IPV6_HEADER_BYTES = 40;
/** The overlay's IPv6 prefix length: one /64 per network. */
export const OVERLAY_PREFIX6 = 64;

/** The network's /64 as 8 bytes, from its identity (the network certificate's fingerprint). */
export function ulaPrefix(identity: Uint8Array): Buffer {
  const digest = createHash('sha256').update('mnedc ULA v1\0').update(identity).digest();
  const prefix = Buffer.alloc(8);
  prefix[0] = 0xfd;
  digest.copy(prefix, 1, 0, 5);
  return prefix;
}

/** The 16-byte address with `prefix` (8 bytes) and `ipv4` as its interface ID. */
export function mappedAddress(prefix: Uint8Array, ipv4: number): Buffer {
  const address = Buffer.alloc(16);
  address.set(prefix.subarray(0, 8), 0);
  address.writeUInt32BE(ipv4 >>> 0, 12);
  return address;
}

const LINK_LOCAL_PREFIX = Buffer.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0]);

export function linkLocalAddress(ipv4: number): Buffer {
  return mappedAddress(LINK_LOCAL_PREFIX, ipv4);
}

/**
 * The IPv4 address mapped into the 16 bytes at buf[at]: when they are `prefix` (8 bytes), then four zero
 * bytes, then the IPv4 address; else null.
 */
export function mappedIpv4(buf: Uint8Array, at: number, prefix: Uint8Array): number | null {
  for (let i = 0; i < 8; i++) if (buf[at + i] !== prefix[i]) return null;
  if ((buf[at + 8]! | buf[at + 9]! | buf[at + 10]! | buf[at + 11]!) !== 0) return null;
  return ((buf[at + 12]! << 24) | (buf[at + 13]! << 16) | (buf[at + 14]! << 8) | buf[at + 15]!) >>> 0;
}

/** The link-local address's IPv4, or null when buf[at] holds another address. */
export function linkLocalIpv4(buf: Uint8Array, at: number): number | null {
  return mappedIpv4(buf, at, LINK_LOCAL_PREFIX);
}

/** RFC 5952 text: lowercase, leading zeros dropped, the longest run of two or more zero groups as "::". */
export function formatIpv6(buf: Uint8Array, at = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((buf[at + 2 * i]! << 8) | buf[at + 2 * i + 1]!);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** The 16 bytes of an IPv6 address in text (no zone, no embedded IPv4 dotted quad); null when it is not one. */
export function parseIpv6(text: string): Buffer | null {
  if (!isIPv6(text) || text.includes('%') || text.includes('.')) return null;
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, null];
  const left = head === '' ? [] : head.split(':');
  const right = tail === null || tail === '' ? [] : tail.split(':');
  const groups = tail === null ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8) return null;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

/** mDNS over IPv6 (RFC 6762), ff02::fb, and SSDP's link-local group, ff02::c. */
const MDNS_IPV6 = parseIpv6('ff02::fb')!;
const SSDP_IPV6 = parseIpv6('ff02::c')!;
const IPPROTO_UDP = 17;

/**
 * The carried group of the IPv6 packet at packet[ip], as groupOf (multicast.ts) gives it for IPv4: MDNS or
 * SSDP; NOT_CARRIED for any other multicast (MLD, router solicitations) or a group's packet that is not
 * plain UDP (extension headers included); NOT_GROUP for unicast.
 */
export function groupOf6(packet: Uint8Array, ip: number): number {
  if (packet[ip + 24] !== 0xff) return NOT_GROUP;
  if (packet[ip + 6] !== IPPROTO_UDP) return NOT_CARRIED;
  if (equal16(packet, ip + 24, MDNS_IPV6)) return MDNS;
  if (equal16(packet, ip + 24, SSDP_IPV6)) return SSDP;
  return NOT_CARRIED;
}

function equal16(buf: Uint8Array, at: number, address: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (buf[at + i] !== address[i]) return false;
  return true;
}
