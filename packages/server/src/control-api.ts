import {
  exactly, formatHostPort, listQueryParam, RPC_ERRORS, selectRows, RpcError, stringParam, type ClusterInfo, type Counters, type ForgetResult, type JoinResult, type KickResult,
  type Lease, type PeerEvent as PeerEventResult, type ReleaseResult, type RpcMethodsOf, type ServerPeer,
  type ServerResults, type ServerStats, type ServerStatus, type WatchResult,
} from '@mnedc/common';
import { intToIpv4, isValidDeviceId, showFingerprint } from '@mnedc/protocol';
import type { ServerConfig } from './config';
import type { PeerEvent, RelayServer } from './server';
import type { Session } from './session';
import type { TrafficCounters } from './dataplane/target';

/** A device ID operand, checked like the relay checks HELLO's: anything else names no device. */
function deviceIdParam(params: unknown): string {
  const deviceId = stringParam(params, 'deviceId');
  if (!isValidDeviceId(deviceId)) {
    throw new RpcError(RPC_ERRORS.invalidParams, `deviceId ${JSON.stringify(deviceId.slice(0, 64))} is not a device ID (1..128 of A-Z a-z 0-9 . _ : @ -)`);
  }
  return deviceId;
}

/**
 * mnedcctl's view of the relay. Field names are the contract with mnedcctl --json and scripts: add
 * fields freely, never rename one. Documented in the README.
 */
export function serverMethods(server: RelayServer, config: () => ServerConfig, version: string): RpcMethodsOf<ServerResults> {
  const counterView = (c: TrafficCounters): Counters => ({
    rxPackets: c.rxPackets, rxBytes: c.rxBytes, txPackets: c.txPackets, txBytes: c.txBytes, drops: { ...c.drops },
  });
  const peerView = (s: Session): ServerPeer => exactly<ServerPeer>()({
    deviceId: s.deviceId,
    ip: intToIpv4(s.ip),
    hostname: s.hello?.hostname ?? '',
    remote: s.remote,
    since: s.establishedAt,
    rxPackets: s.counters.rxPackets,
    rxBytes: s.counters.rxBytes,
    txPackets: s.counters.txPackets,
    txBytes: s.counters.txBytes,
    ...s.rates,
    queueBytes: s.socket.writableLength,
    /** What the device's send budget is charged with now: queued bytes plus what they keep alive. */
    queueChargedBytes: s.link.queued,
    queueBudgetBytes: s.link.budget.limit,
    rttMs: s.rttMs,
    drops: { ...s.counters.drops },
    missed: s.missed,
  });

  const methods: RpcMethodsOf<ServerResults> = {
    status: (): ServerStatus => {
      const { server: settings } = config();
      const listen = server.listenAddress;
      return {
        daemon: 'server',
        version,
        pid: process.pid,
        uptimeSec: Math.round((Date.now() - server.startedAt) / 1000),
        startedAt: server.startedAt,
        listen: listen ? formatHostPort({ host: listen.address, port: listen.port }) : formatHostPort(settings.listen),
        subnet: `${intToIpv4(settings.subnet.network)}/${settings.subnet.prefix}`,
        serverIp: intToIpv4(server.serverIp),
        interface: server.deviceName,
        clients: server.connected().length,
        leases: { used: server.pool.size, free: server.pool.capacity - server.pool.size, capacity: server.pool.capacity },
        fingerprint: showFingerprint(server.identity.fingerprint),
        boundDevices: server.bindingCount,
      };
    },

    leases: (params) => selectRows(server.pool.leases(), (l) => [l.deviceId, l.hostname, intToIpv4(l.ip)], listQueryParam(params)).map((lease): Lease => {
      const session = server.session(lease.deviceId);
      return {
        deviceId: lease.deviceId,
        ip: intToIpv4(lease.ip),
        hostname: lease.hostname,
        connected: session !== undefined,
        lastSeen: session ? Date.now() : lease.lastSeen,
        createdAt: lease.createdAt,
        underlay: lease.underlay,
        remote: session?.remote ?? null,
      };
    }),

    peers: (params) => selectRows(server.connected(), (s) => [s.deviceId, s.hello?.hostname ?? '', intToIpv4(s.ip)], listQueryParam(params)).map(peerView),

    stats: (): ServerStats => ({
      refused: { ...server.refused },
      cut: { ...server.cut },
      dns: { ...server.dnsCounters },
      discovery: { framesSent: server.directory.framesSent, resyncs: server.directory.resyncs },
      totals: counterView(server.totals),
      local: counterView(server.local),
      clients: server.connected().map((s) => exactly<ServerStats['clients'][number]>()({
        deviceId: s.deviceId, ip: intToIpv4(s.ip), ...counterView(s.counters), missed: s.missed,
      })),
      mesh: server.mesh?.stats() ?? [],
      multicast: server.multicastStats(),
    }),

    kick: (params): KickResult => {
      const deviceId = deviceIdParam(params);
      if (!server.kick(deviceId)) throw new RpcError(RPC_ERRORS.notFound, `device ${deviceId} is not connected`);
      return { kicked: true, deviceId };
    },

    release: (params): ReleaseResult => {
      const deviceId = deviceIdParam(params);
      const lease = server.release(deviceId);
      if (!lease) throw new RpcError(RPC_ERRORS.notFound, `device ${deviceId} has no lease`);
      return { released: true, deviceId, ip: intToIpv4(lease.ip) };
    },

    forget: async (params): Promise<ForgetResult> => {
      const deviceId = deviceIdParam(params);
      const { lease, binding } = await server.forget(deviceId);
      if (!lease && !binding) throw new RpcError(RPC_ERRORS.notFound, `device ${deviceId} is not known`);
      return { forgotten: true, deviceId, ip: lease ? intToIpv4(lease.ip) : null, binding };
    },

    /** The join string carries the secret: the socket's 0660 root:mnedc mode is what guards it. */
    join: (): JoinResult => ({ join: server.joinString, fingerprint: showFingerprint(server.identity.fingerprint) }),

    rotateJoin: async (): Promise<JoinResult> => ({ join: await server.rotateJoin(), fingerprint: showFingerprint(server.identity.fingerprint) }),

    cluster: (): Promise<ClusterInfo> => clusterView(server),

    watch: (_params, context): WatchResult => {
      const forward = (event: PeerEvent) => context.notify('peer', exactly<PeerEventResult>()(event));
      server.on('peer', forward);
      context.onClose(() => server.off('peer', forward));
      return { watching: true };
    },
  };
  return methods;
}

/** How long `cluster` waits for etcd's answer: an operator asking is told "unreachable", not kept waiting. */
const ETCD_STATUS_TIMEOUT_MS = 2_000;

async function clusterView(server: RelayServer): Promise<ClusterInfo> {
  const { cluster } = server;
  const listen = server.listenAddress;
  const self = { id: server.relayId, advertise: listen ? formatHostPort({ host: listen.address, port: listen.port }) : '', since: server.startedAt };
  const alone = { link: 'self' as const, problem: '', rttMs: -1, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 };
  if (!cluster) {
    return { network: null, relay: self.id, etcd: null, stateReadable: true, relays: [{ ...self, devices: server.connected().length, self: true, ...alone }] };
  }
  let timer: NodeJS.Timeout | undefined;
  const etcd = await Promise.race([
    cluster.client.status().then((st) => ({ endpoint: st.endpoint, reachable: true, version: st.version, leader: st.leader, revision: st.revision, error: '' })),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ETCD_STATUS_TIMEOUT_MS} ms`)), ETCD_STATUS_TIMEOUT_MS); }),
  ]).catch((err: Error) => ({ endpoint: cluster.client.endpoint, reachable: false, version: '', leader: '0', revision: 0, error: err.message }))
    .finally(() => clearTimeout(timer));
  const registry = cluster.registry;
  const counts = registry?.deviceCounts() ?? new Map<string, number>();
  const links = new Map((server.mesh?.view() ?? []).map((l) => [l.id, l]));
  // This relay first (the registry lists it so), then the others by ID: the same order on every call.
  const [first, ...others] = registry?.relays() ?? [self];
  const listed = [first!, ...others.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0))];
  const relays = listed.map((r) => {
    const mine = r.id === self.id;
    const l = links.get(r.id);
    const link = mine ? alone : l ? { link: l.link, problem: l.problem, rttMs: l.rttMs, txPackets: l.txPackets, txBytes: l.txBytes, rxPackets: l.rxPackets, rxBytes: l.rxBytes }
      : { ...alone, link: 'down' as const, problem: 'not linked' };
    return { id: r.id, advertise: r.advertise, since: r.since, devices: counts.get(r.id) ?? 0, self: mine, ...link };
  });
  return { network: cluster.keys.network, relay: self.id, etcd, stateReadable: cluster.available, relays };
}
