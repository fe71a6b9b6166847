/*
 * The daemons' control API as mnedcctl reads it. The daemons own these shapes; field names are a
 * contract (--json output passes them through unchanged), so they are only ever added to.
 */

export type DaemonKind = 'server' | 'client';

/** Drops by reason; a newer relay may count more reasons than these. */
export interface Drops {
  noRoute: number;
  spoofed: number;
  malformed: number;
  queueFull: number;
  [reason: string]: number;
}

export interface Counters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: Drops;
}

export interface ServerStatus {
  daemon: 'server';
  version: string;
  pid: number;
  uptimeSec: number;
  startedAt: number;
  listen: string;
  subnet: string;
  serverIp: string;
  interface: string;
  clients: number;
  leases: { used: number; free: number; capacity: number };
  /** The relay's certificate fingerprint, as in the join string. */
  fingerprint?: string;
  boundDevices?: number;
}

export interface ClientStatus {
  daemon: 'client';
  version: string;
  pid: number;
  uptimeSec: number;
  state: 'connecting' | 'connected' | 'waiting' | 'stopped';
  server: string;
  deviceId: string;
  ip: string;
  prefix: number;
  interface: string;
  since: number;
  /** Sessions established again after an earlier one ended. */
  reconnects: number;
  /** Connection attempts that ended without a session. */
  failedAttempts?: number;
  lastError: string;
  /** Segmentation offload in use with the relay. */
  offload?: boolean;
}

export type Status = ServerStatus | ClientStatus;

export interface Lease {
  deviceId: string;
  ip: string;
  hostname: string;
  connected: boolean;
  lastSeen: number;
  createdAt: number;
  underlay: string[];
  remote: string | null;
}

export interface ServerPeer {
  deviceId: string;
  ip: string;
  hostname: string;
  remote: string;
  since: number;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  rxPps: number;
  txPps: number;
  rxBps: number;
  txBps: number;
  queueBytes: number;
  rttMs: number;
  drops: Drops;
  missed: number;
}

export interface ClientPeer {
  deviceId: string;
  ip: string;
  hostname: string;
  since: number;
  underlay: string[];
}

export interface ServerStats {
  /** Connections turned away, by reason. */
  refused?: Record<string, number>;
  /** Sessions the relay ended itself, by reason. */
  cut?: Record<string, number>;
  totals: Counters;
  local: Counters;
  clients: Array<Counters & { deviceId: string; ip: string; missed: number }>;
}

export interface ClientStats {
  tunnel: { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; [counter: string]: number };
  session: { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; [counter: string]: number };
  rttMs: number;
}

export interface KickResult { kicked: true; deviceId: string }
export interface ReleaseResult { released: true; deviceId: string; ip: string }
export interface ForgetResult { forgotten: true; deviceId: string; ip: string | null; binding: boolean }
export interface JoinResult { join: string; fingerprint: string }

export interface PeerEvent {
  event: 'up' | 'down';
  deviceId: string;
  ip: string;
  hostname: string;
  at: number;
}
