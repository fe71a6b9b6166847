import { FrameType, GSO_HEADER_BYTES, HEADER_BYTES } from '@mnedc/protocol';

/**
 * The forwarding decision, kept apart from sockets so it can be tested as a table of cases. It reads
 * the packet inside a DATA frame in place: the frame is forwarded as it came, so nothing is sliced.
 * IPv4 here; IPv6 maps onto the same IPv4 leases (ipv6-route.ts).
 */
export enum Verdict {
  Deliver,
  /** The source is not the sender's leased address: forged, or leaked from another interface. */
  Spoofed,
  /** Not an IPv4 packet, or a header whose lengths do not fit the frame. */
  Malformed,
}

/**
 * Why a packet was not delivered. multicast and broadcast: groups the relay does not carry ([server]
 * multicast), dropped silently, never answered with ICMP; ipv6: IPv6 on a relay with [server] ipv6 = no.
 * relayDown: for a device on another relay of the cluster that this one has no mesh link to now.
 */
export type DropReason = 'noRoute' | 'spoofed' | 'malformed' | 'queueFull' | 'multicast' | 'broadcast' | 'ipv6' | 'relayDown';

/** Where the IPv4 header of a DATA or DATA_GSO frame starts. */
export function packetOffset(frame: Buffer): number {
  return frame[0] === FrameType.DataGso ? HEADER_BYTES + GSO_HEADER_BYTES : HEADER_BYTES;
}

/** Checks what a sender may not lie about; the destination is looked up by the caller. */
export function checkFrame(frame: Buffer, senderIp: number, ip = packetOffset(frame)): Verdict {
  const first = frame[ip]!;
  const headerLength = (first & 0x0f) * 4;
  if (first >> 4 !== 4 || headerLength < 20) return Verdict.Malformed;
  const totalLength = frame.readUInt16BE(ip + 2);
  if (totalLength > frame.length - ip || totalLength < headerLength) return Verdict.Malformed;
  if (frame.readUInt32BE(ip + 12) !== senderIp) return Verdict.Spoofed;
  return Verdict.Deliver;
}

export function frameDestination(frame: Buffer, ip = packetOffset(frame)): number {
  return frame.readUInt32BE(ip + 16);
}

/** Virtual IP → whatever delivers to it (a session, or the server's own TUN). */
export class RoutingTable<Target> {
  private readonly routes = new Map<number, Target>();

  get size(): number {
    return this.routes.size;
  }

  set(ip: number, target: Target): void {
    this.routes.set(ip, target);
  }

  /** Removes the route only while it still points at `target`, so a replaced session cannot unroute its successor. */
  delete(ip: number, target: Target): boolean {
    if (this.routes.get(ip) !== target) return false;
    return this.routes.delete(ip);
  }

  get(ip: number): Target | undefined {
    return this.routes.get(ip);
  }

  values(): IterableIterator<Target> {
    return this.routes.values();
  }
}
