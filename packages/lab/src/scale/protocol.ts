/** Requests the scale bench's main process sends its workers over IPC, and what they answer. */
import type { RelayTarget } from './device';

export type Request =
  | { cmd: 'start'; first: number; count: number; devices: number; target: RelayTarget }
  | { cmd: 'status' }
  /** Answer: [index, leased IP or 0 when not connected, which relay of the target's] for each device. */
  | { cmd: 'ips' }
  | { cmd: 'mark' }
  /** Answer: how many could be sent (the sender was connected). */
  | { cmd: 'probe'; sends: Array<[from: number, toIp: number, id: number]>; spreadMs: number }
  /** Answer: probe IDs received since the last 'received'. */
  | { cmd: 'received' }
  /** Answer: DnsResult[] in the order asked. */
  | { cmd: 'dns'; queries: Array<[from: number, name: string, expectIp: number]> }
  /** Arms: the next `count` devices welcomed are reported to the parent (WelcomedEvent). Answer: null. */
  | { cmd: 'dnsOnJoin'; count: number }
  /**
   * The observer: looks `name` up at once from one of its connected devices. Answer: a DnsResult, its
   * time counted from `since` (the WELCOME), null unless answered within 1 s of it.
   */
  | { cmd: 'lookup'; name: string; expectIp: number; since: number }
  | { cmd: 'stop' };

export interface WorkerStatus {
  welcomed: number;
  /** Connected devices whose WELCOME granted discovery "full" (pushed the peer list). */
  full: number;
  /** Devices that knew every other device at some point. */
  complete: number;
  lastComplete: number;
  lastWelcome: number;
  peerBytes: number;
  unreadable: number;
  /** Connected devices whose address equals the one at 'mark'. */
  sameIp: number;
  /** Devices that had an address at 'mark'. */
  hadIp: number;
}

export interface DnsResult {
  /** Milliseconds to the answer; null when none came within 1 s. */
  ms: number | null;
  correct: boolean;
}
