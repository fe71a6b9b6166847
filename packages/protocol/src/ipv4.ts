/** IPv4 addresses as unsigned 32-bit integers, and the few packet fields a relay needs. */

const DOTTED = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return DOTTED.test(text);
}

export function ipv4ToInt(text: string): number {
  if (!isIpv4(text)) throw new Error(`${JSON.stringify(text)} is not an IPv4 address`);
  const [a, b, c, d] = text.split('.').map(Number) as [number, number, number, number];
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

export function intToIpv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** Neither "this network" (0/8), loopback (127/8), multicast nor reserved (224/3 and up). */
export function isUnicast(ip: number): boolean {
  const first = ip >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

/**
 * Why a destination names no single host of the overlay, or null for one that may: multicast (224/4),
 * or broadcast — the limited broadcast 255.255.255.255, and the subnet's own broadcast and (old BSD
 * style) network addresses. RFC 1122 3.2.2 forbids ICMP errors for all of these.
 */
export function nonUnicastDestination(ip: number, subnet: Subnet): 'multicast' | 'broadcast' | null {
  if (ip >>> 28 === 0xe) return 'multicast';
  if (ip === 0xffffffff || ip === subnet.broadcast || ip === subnet.network) return 'broadcast';
  return null;
}

/** Whether `ip` lies in network/prefix. */
export function inSubnet(ip: number, network: number, prefix: number): boolean {
  return ((ip & prefixMask(prefix)) >>> 0) === network;
}

export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export interface Subnet {
  network: number;
  prefix: number;
  broadcast: number;
}

/** Parses "a.b.c.d/n"; host bits must be zero so a typo is not silently widened. */
export function parseSubnet(text: string): Subnet {
  const match = /^([^/]+)\/(\d{1,2})$/.exec(text.trim());
  if (!match) throw new Error(`${JSON.stringify(text)} is not an IPv4 prefix like 10.0.0.0/24`);
  const prefix = Number(match[2]);
  if (prefix > 32) throw new Error(`prefix length /${prefix} is larger than 32`);
  const address = ipv4ToInt(match[1]!);
  const subnet = subnetOf(address, prefix);
  if (subnet.network !== address) {
    throw new Error(`${text} has host bits set; the network is ${intToIpv4(subnet.network)}/${prefix}`);
  }
  return subnet;
}

/** The subnet an address with this prefix lies in (a lease's ip/prefix, say). */
export function subnetOf(address: number, prefix: number): Subnet {
  const mask = prefixMask(prefix);
  const network = (address & mask) >>> 0;
  return { network, prefix, broadcast: (network | ~mask) >>> 0 };
}

/** The source address of an IPv4 packet (RFC 791 offset 12). */
export function ipSource(packet: Buffer): number {
  return packet.readUInt32BE(12);
}

export const IPPROTO_ICMP = 1;

export function internetChecksum(data: Uint8Array, start = 0, end = data.length): number {
  let sum = 0;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (i < end) sum += data[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** ICMP errors must never answer ICMP errors (RFC 1122 3.2.2), or two relays could ping-pong forever. */
function isIcmpError(packet: Buffer, headerLength: number): boolean {
  if (packet[9] !== IPPROTO_ICMP || packet.length < headerLength + 1) return false;
  const type = packet[headerLength]!;
  return type !== 0 && type !== 8 && type !== 13 && type !== 14 && type !== 17 && type !== 18;
}

export const ICMP_HOST_UNREACHABLE = 1;

/**
 * Builds "destination unreachable" from `from` back to the sender of `original`, or null where RFC 1122
 * 3.2.2 forbids one: ICMP errors, fragments other than the first, and packets from or to an address that
 * is no single host (0/8, 127/8, multicast, 240/4 and broadcast; a subnet's broadcast is the caller's to
 * check, see nonUnicastDestination).
 */
export function buildIcmpUnreachable(original: Buffer, from: number, code: number): Buffer | null {
  const headerLength = (original[0]! & 0x0f) * 4;
  if (headerLength < 20 || original.length < headerLength) return null;
  const fragmentOffset = original.readUInt16BE(6) & 0x1fff;
  const source = ipSource(original);
  if (fragmentOffset !== 0 || isIcmpError(original, headerLength)) return null;
  if (!isUnicast(source) || !isUnicast(original.readUInt32BE(16))) return null;
  const quoted = original.subarray(0, Math.min(original.length, headerLength + 8));
  const packet = Buffer.alloc(20 + 8 + quoted.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64; // TTL
  packet[9] = IPPROTO_ICMP;
  packet.writeUInt32BE(from, 12);
  packet.writeUInt32BE(source, 16);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  packet[20] = 3; // destination unreachable
  packet[21] = code;
  quoted.copy(packet, 28);
  packet.writeUInt16BE(internetChecksum(packet, 20, packet.length), 22);
  return packet;
}
