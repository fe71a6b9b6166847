import { checkKind, kind, type Kind, type TypeOf } from './rpc-schema';
import type { CallContext } from './control';
import { listParams } from './list-query';

/*
 * The daemons' control API results, declared once: both daemons type their methods' results with these
 * and mnedcctl reads them. Field names are a contract (mnedcctl --json passes them through unchanged),
 * so fields are only ever added, as optional ones: an older daemon does not send them. Counter records
 * (drops, refused, cut, dns, tunnel, session) stay open: a newer daemon may count more, and mnedcctl shows
 * counters it does not know by their key.
 */

const n = 'number';
const s = 'string';
const b = 'boolean';

const drops = kind.open({ noRoute: n, spoofed: n, malformed: n, queueFull: n });
const counters = kind.object({ rxPackets: n, rxBytes: n, txPackets: n, txBytes: n, drops });

const serverStatus = kind.object({
  daemon: kind.oneOf('server'), version: s, pid: n, uptimeSec: n, startedAt: n, listen: s, subnet: s, serverIp: s,
  interface: s, clients: n, leases: kind.object({ used: n, free: n, capacity: n }),
  /** The relay's certificate fingerprint, as in the join string. */
  fingerprint: kind.optional(s),
  boundDevices: kind.optional(n),
});

const clientStatus = kind.object({
  daemon: kind.oneOf('client'), version: s, pid: n, uptimeSec: n,
  state: kind.oneOf('connecting', 'connected', 'waiting', 'stopped'),
  server: s, deviceId: s, ip: s, prefix: n, interface: s, since: n,
  /** Every relay the device may use, in the order it tries them (configured, then learned); absent from older clients. */
  relays: kind.optional(kind.array(s)),
  /** Sessions established again after an earlier one ended. */
  reconnects: n,
  /** Connection attempts that ended without a session. */
  failedAttempts: kind.optional(n),
  lastError: s,
  /** Segmentation offload in use with the relay. */
  offload: kind.optional(b),
  /** The peer push the relay granted: full (the peer list), names or off (no list). */
  discovery: kind.optional(kind.oneOf('full', 'names', 'off')),
  /** The multicast groups the relay fans out for this device (mdns, ssdp, broadcast); absent before a lease. */
  multicast: kind.optional(kind.array(s)),
  /** The device's IPv6 address in the overlay's /64; absent without one. */
  ip6: kind.optional(s),
});

const lease = kind.object({
  deviceId: s, ip: s, hostname: s, connected: b, lastSeen: n, createdAt: n, underlay: kind.array(s), remote: kind.nullable(s),
});

const serverPeer = kind.object({
  deviceId: s, ip: s, hostname: s, remote: s, since: n, rxPackets: n, rxBytes: n, txPackets: n, txBytes: n,
  rxPps: n, txPps: n, rxBps: n, txBps: n, queueBytes: n,
  /** What the device's send budget is charged with now: queued bytes plus what they keep alive. */
  queueChargedBytes: kind.optional(n),
  queueBudgetBytes: kind.optional(n),
  rttMs: n, drops, missed: n,
});

const clientPeer = kind.object({ deviceId: s, ip: s, hostname: s, since: n, underlay: kind.array(s) });

const serverStats = kind.object({
  /** Connections turned away, by reason. */
  refused: kind.optional(kind.open({})),
  /** Sessions the relay ended itself, by reason. */
  cut: kind.optional(kind.open({})),
  /** The overlay's DNS responder (a relay with an interface and [dns] enabled; zeros otherwise). */
  dns: kind.optional(kind.open({})),
  /** The pushed peer list (discovery "full"). */
  discovery: kind.optional(kind.open({})),
  totals: counters,
  local: counters,
  clients: kind.array(kind.object({ deviceId: s, ip: s, rxPackets: n, rxBytes: n, txPackets: n, txBytes: n, drops, missed: n })),
  /** The links to the cluster's other relays (a relay without [cluster]: none): `up` 1 or 0, drops of what came over it. */
  mesh: kind.optional(kind.array(kind.object({ relay: s, up: n, rxPackets: n, rxBytes: n, txPackets: n, txBytes: n, drops }))),
  /** Multicast and broadcast fanned out, one entry per group the relay carries ([server] multicast). */
  multicast: kind.optional(kind.array(kind.object({ group: s, received: n, delivered: n, rateLimited: n, duplicate: n, queueFull: n }))),
});

const clientStats = kind.object({
  tunnel: kind.open({ rxPackets: n, rxBytes: n, txPackets: n, txBytes: n }),
  session: kind.open({ txPackets: n, txBytes: n, rxPackets: n, rxBytes: n }),
  rttMs: n,
});

/**
 * A relay of the cluster as the registry in etcd shows it; `devices`: how many are attached to it. `link`:
 * this relay's mesh link to it ('self' for this relay); `problem` says why it is not up ('' when it is);
 * the counters are the packets and bytes that crossed that link each way.
 */
const clusterRelay = kind.object({
  id: s, advertise: s, since: n, devices: n, self: b,
  link: kind.oneOf('self', 'up', 'connecting', 'down'), problem: s, rttMs: n, txPackets: n, txBytes: n, rxPackets: n, rxBytes: n,
});

const clusterInfo = kind.object({
  /** The network's name; null for a single relay with local files (no [cluster] etcd). */
  network: kind.nullable(s),
  /** This relay's ID in the cluster. */
  relay: s,
  /** The etcd member asked and what it answered; null without a cluster. `error` is '' when reachable. */
  etcd: kind.nullable(kind.object({ endpoint: s, reachable: b, version: s, leader: s, revision: n, error: s })),
  /** Whether this relay has read the shared leases and bindings (new devices are admitted). */
  stateReadable: b,
  relays: kind.array(clusterRelay),
});

const peerEvent = kind.object({ event: kind.oneOf('up', 'down'), deviceId: s, ip: s, hostname: s, at: n });

/**
 * Each daemon's methods with the kind of their result, the kind of each notification a `watch`
 * subscription sends, and the parameters of the methods that take optional ones (list-query.ts). The
 * agreement test calls every method listed here on the real daemon.
 */
export const RPC_SCHEMA = {
  server: {
    results: {
      status: serverStatus,
      peers: kind.array(serverPeer),
      leases: kind.array(lease),
      stats: serverStats,
      kick: kind.object({ kicked: 'true', deviceId: s }),
      release: kind.object({ released: 'true', deviceId: s, ip: s }),
      forget: kind.object({ forgotten: 'true', deviceId: s, ip: kind.nullable(s), binding: b }),
      join: kind.object({ join: s, fingerprint: s }),
      rotateJoin: kind.object({ join: s, fingerprint: s }),
      cluster: clusterInfo,
      watch: kind.object({ watching: 'true' }),
    },
    notifications: { peer: peerEvent },
    params: { peers: listParams, leases: listParams },
  },
  client: {
    results: {
      status: clientStatus,
      peers: kind.array(clientPeer),
      stats: clientStats,
      watch: kind.object({ watching: 'true' }),
    },
    notifications: { peer: peerEvent },
    params: { peers: listParams },
  },
} as const satisfies Record<string, { results: Record<string, Kind>; notifications: Record<string, Kind>; params: Record<string, Kind> }>;

export type DaemonKind = keyof typeof RPC_SCHEMA;
/** Drops by reason; a newer relay may count more reasons than these. */
export type Drops = TypeOf<typeof drops>;
export type Counters = TypeOf<typeof counters>;
export type ServerStatus = TypeOf<typeof serverStatus>;
export type ClientStatus = TypeOf<typeof clientStatus>;
export type Status = ServerStatus | ClientStatus;
export type Lease = TypeOf<typeof lease>;
export type ServerPeer = TypeOf<typeof serverPeer>;
export type ClientPeer = TypeOf<typeof clientPeer>;
export type ServerStats = TypeOf<typeof serverStats>;
export type ClientStats = TypeOf<typeof clientStats>;
export type PeerEvent = TypeOf<typeof peerEvent>;
export type ClusterInfo = TypeOf<typeof clusterInfo>;

export type KickResult = TypeOf<typeof RPC_SCHEMA.server.results.kick>;
export type ReleaseResult = TypeOf<typeof RPC_SCHEMA.server.results.release>;
export type ForgetResult = TypeOf<typeof RPC_SCHEMA.server.results.forget>;
export type JoinResult = TypeOf<typeof RPC_SCHEMA.server.results.join>;
export type WatchResult = TypeOf<typeof RPC_SCHEMA.server.results.watch>;

/** Result types by method, for a daemon's method table to be checked against. */
export interface ServerResults {
  status: ServerStatus; peers: ServerPeer[]; leases: Lease[]; stats: ServerStats; kick: KickResult; release: ReleaseResult;
  forget: ForgetResult; join: JoinResult; rotateJoin: JoinResult; cluster: ClusterInfo; watch: WatchResult;
}
export interface ClientResults { status: ClientStatus; peers: ClientPeer[]; stats: ClientStats; watch: WatchResult }

/**
 * Fails to compile when a result object literal has a field its type does not declare, spread ones
 * included (an object literal's excess property check misses those): `exactly<Lease>()({...})`.
 */
export function exactly<T>() {
  return <U extends T>(value: U & { [K in Exclude<keyof U, keyof T>]: never }): T => value;
}

/** A daemon's method table with each method's result type fixed: a missing or extra method fails to compile. */
export type RpcMethodsOf<R> = { [M in keyof R]: (params: unknown, context: CallContext) => R[M] | Promise<R[M]> };

/**
 * How a daemon's answer departs from its declaration (see checkKind); a method or notification the
 * schema does not list is a problem too. Current daemons are held to every field, optional ones included.
 */
export function rpcProblems(daemon: DaemonKind, what: { result: string } | { notification: string }, value: unknown): string[] {
  const table: Record<string, Kind> = 'result' in what ? RPC_SCHEMA[daemon].results : RPC_SCHEMA[daemon].notifications;
  const name = 'result' in what ? what.result : what.notification;
  const declared = Object.hasOwn(table, name) ? table[name] : undefined;
  if (!declared) return [`${daemon} ${name}: not declared in RPC_SCHEMA`];
  return checkKind(value, declared, `${daemon} ${name}`, { requireOptional: true });
}
