import { IPV6_HEADER_BYTES, linkLocalIpv4, mappedIpv4 } from '@mnedc/protocol';

/**
 * The data plane's reading of an IPv6 packet (protocol ipv6.ts): every address it acts on maps to an IPv4
 * lease, so IPv6 is routed and checked by the same table and rules as IPv4. Pure, like router.ts.
 */

/** Whether the fixed header is there and the payload length fits the frame. */
export function wellFormed6(frame: Uint8Array, ip: number): boolean {
  const length = frame.length - ip;
  return length >= IPV6_HEADER_BYTES && IPV6_HEADER_BYTES + ((frame[ip + 4]! << 8) | frame[ip + 5]!) <= length;
}

/**
 * The IPv4 lease a packet's source stands for: the overlay address prefix::<ipv4>, or, for link-scope
 * traffic (`linkScope`: to a carried group, or to a link-local address), fe80::<ipv4>; null for any other
 * source, which no device may use. Link-scope traffic is what discovery over IPv6 needs: mDNS is sent from
 * the link-local address, and SSDP's answers go back to it, unicast.
 */
export function source6(frame: Uint8Array, ip: number, prefix: Uint8Array, linkScope: boolean): number | null {
  const mapped = mappedIpv4(frame, ip + 8, prefix);
  if (mapped !== null) return mapped;
  return linkScope ? linkLocalIpv4(frame, ip + 8) : null;
}

/** The lease a unicast destination stands for (prefix::<ipv4>); null for any other address. */
export function destination6(frame: Uint8Array, ip: number, prefix: Uint8Array): number | null {
  return mappedIpv4(frame, ip + 24, prefix);
}

/** The lease a link-local destination stands for (fe80::<ipv4>), or null. */
export function linkLocalDestination6(frame: Uint8Array, ip: number): number | null {
  return linkLocalIpv4(frame, ip + 24);
}

export const end6 = (frame: Uint8Array, ip: number): number => ip + IPV6_HEADER_BYTES + ((frame[ip + 4]! << 8) | frame[ip + 5]!);

