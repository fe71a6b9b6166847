import type { WriteBatch } from '@mnedc/link';
import type { DropReason } from './router';

export interface TrafficCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: Record<DropReason, number>;
}

export function newCounters(): TrafficCounters {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0, multicast: 0, broadcast: 0, ipv6: 0, relayDown: 0 } };
}

/**
 * Anything the data plane routes to and from: a device's session, the relay's own TUN, later a peer
 * relay. A target owns an address (its route) and a way to send; it counts what it sent and what was
 * dropped of what it sent us.
 */
export interface Target {
  /** The relay's own interface: logged as "the server", not as a device. */
  readonly local: boolean;
  readonly deviceId: string;
  /** The address it may send from. */
  readonly ip: number;
  /** It takes DATA_GSO as it is; the others get super-packets segmented into DATA. */
  readonly gso: boolean;
  readonly counters: TrafficCounters;
  /** Room for `bytes` more DATA now (from `from`, for a target shared by many senders); a false is the sender's queueFull drop. */
  accepts(bytes: number, from?: Target): boolean;
  /** Queues DATA_GSO (when gso) or one or more DATA frames back to back, joining `batch`. */
  deliver(frames: Buffer, batch: WriteBatch): void;
}

/** Something the relay answers itself over UDP on its overlay address (DNS), given a query's payload. */
export interface LocalUdpService {
  readonly port: number;
  /** The reply's payload, or null for none (rate-limited, unreadable); `sourceIp` is the sender's checked address. */
  answer(sourceIp: number, payload: Buffer): Buffer | null;
}
