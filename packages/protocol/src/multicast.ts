/**
 * Link-local multicast and broadcast on the overlay. NATs stop both, and with them the discovery that
 * unmodified applications rely on (mDNS, SSDP, subnet broadcasts). The overlay is layer 3, so the relay
 * carries these by fan-out: a packet a device sends to a carried group is delivered to every other device
 * of the network, unchanged (TTL included: mDNS needs 255), never back to its sender.
 *
 * Only UDP to the named groups is carried: IGMP reports and other multicast stay unanswered drops.
 * Pure: the relay's data plane classifies each packet with groupOf.
 */
import { nonUnicastDestination, type Subnet } from './ipv4';

/** The groups a relay may carry, as `multicast =` names them and WELCOME.multicast announces them. */
export const MULTICAST_GROUPS = ['mdns', 'ssdp', 'broadcast'] as const;
export type MulticastGroup = (typeof MULTICAST_GROUPS)[number];

/** mDNS (RFC 6762), 224.0.0.251. */
export const MDNS_IPV4 = 0xe00000fb;
/** SSDP (UPnP Device Architecture), 239.255.255.250. */
export const SSDP_IPV4 = 0xeffffffa;
const IPPROTO_UDP = 17;

/** Where the data plane looks first: one bit per MULTICAST_GROUPS entry. */
export type GroupMask = number;

export function groupMask(groups: readonly MulticastGroup[]): GroupMask {
  let mask = 0;
  for (const group of groups) mask |= 1 << MULTICAST_GROUPS.indexOf(group);
  return mask;
}

export function groupsOf(mask: GroupMask): MulticastGroup[] {
  return MULTICAST_GROUPS.filter((_, i) => (mask & (1 << i)) !== 0);
}

/** Index into MULTICAST_GROUPS of a group destination; NOT_GROUP for unicast; NOT_CARRIED for other multicast or broadcast. */
export const MDNS = MULTICAST_GROUPS.indexOf('mdns');
export const SSDP = MULTICAST_GROUPS.indexOf('ssdp');
const BROADCAST = MULTICAST_GROUPS.indexOf('broadcast');
export const NOT_GROUP = -1;
export const NOT_CARRIED = -2;

/**
 * The carried group of the IPv4 packet at packet[ip], which the caller has checked to be a whole IPv4
 * header. `subnet`: the overlay's, whose broadcast (and the limited broadcast) is the broadcast group.
 */
export function groupOf(packet: Uint8Array, ip: number, subnet: Subnet): number {
  const destination = ((packet[ip + 16]! << 24) | (packet[ip + 17]! << 16) | (packet[ip + 18]! << 8) | packet[ip + 19]!) >>> 0;
  const kind = nonUnicastDestination(destination, subnet);
  if (kind === null) return NOT_GROUP;
  // The subnet's network address counts as a broadcast for ICMP's sake, but nothing sends to it.
  if (packet[ip + 9] !== IPPROTO_UDP || destination === subnet.network) return NOT_CARRIED;
  if (kind === 'broadcast') return BROADCAST;
  if (destination === MDNS_IPV4) return MDNS;
  if (destination === SSDP_IPV4) return SSDP;
  return NOT_CARRIED;
}

/**
 * A 53-bit digest of what a reflector re-sends unchanged: the destination, the UDP ports and payload.
 * The source address, identification and checksum differ between a packet and its reflection, so they
 * are left out. Two 32-bit multiplicative hashes (FNV-1a and a second prime and seed) side by side: the
 * packets are rate-limited and small, and with 53 bits two datagrams a second apart practically never
 * share one (a 32-bit FNV-1a alone did, once in a benchmark: a datagram dropped as a false echo).
 * A fragment (no whole UDP header) hashes its whole IP payload. IPv6: only plain UDP is carried (groupOf6),
 * so the UDP header follows the fixed header.
 */
export function reflectionDigest(packet: Uint8Array, ip: number, end: number): number {
  const v6 = packet[ip]! >> 4 === 6;
  const headerLength = v6 ? 40 : (packet[ip]! & 0x0f) * 4;
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  const mix = (byte: number): void => {
    a = Math.imul(a ^ byte, 0x01000193);
    b = Math.imul(b ^ byte, 0x5bd1e995) ^ (b >>> 15);
  };
  for (let i = ip + (v6 ? 24 : 16); i < ip + (v6 ? 40 : 20); i++) mix(packet[i]!);
  const l4 = ip + headerLength;
  const fragment = !v6 && ((packet[ip + 6]! & 0x3f) | packet[ip + 7]!) !== 0;
  for (let i = l4; i < end; i++) {
    // Skip the UDP length and checksum (bytes 4..7): the checksum covers the source address.
    if (!fragment && i >= l4 + 4 && i < l4 + 8) continue;
    mix(packet[i]!);
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}
