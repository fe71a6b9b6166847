import { RpcError, RPC_ERRORS, stringParam, type CallContext, type RpcMethods } from '@mnedc/common';
import type {
  ClientPeer, ClientStats, ClientStatus, ClusterInfo, Lease, ServerPeer, ServerStats, ServerStatus,
} from '../src/api';

/** The fixed "now" every relative time in the tests is computed against. */
export const NOW = Date.UTC(2024, 0, 15, 12, 0, 0);

const drops = (noRoute = 0, spoofed = 0, malformed = 0, queueFull = 0) => ({ noRoute, spoofed, malformed, queueFull, multicast: 0, broadcast: 0, ipv6: 0, relayDown: 0 });

export const serverStatus: ServerStatus = {
  daemon: 'server', version: '0.1.0', pid: 4242, uptimeSec: 7500, startedAt: NOW - 7_500_000,
  listen: '0.0.0.0:3334', subnet: '10.0.0.0/24', serverIp: '10.0.0.1', interface: 'mnedc0', clients: 2,
  leases: { used: 3, free: 250, capacity: 253 }, fingerprint: 'sha256:9f2c1ab0', boundDevices: 5,
};

export const serverPeers: ServerPeer[] = [
  {
    deviceId: 'device-a', ip: '10.0.0.2', hostname: 'alpha', remote: '192.168.1.20:40112', since: NOW - 180_000,
    rxPackets: 1200, rxBytes: 1_572_864, txPackets: 800, txBytes: 512_000, rxPps: 850, txPps: 2.5,
    rxBps: 1_200_000, txBps: 9_600, queueBytes: 0, rttMs: 12.4, drops: drops(1, 0, 0, 2), missed: 0,
  },
  {
    deviceId: 'device-b', ip: '10.0.0.3', hostname: '', remote: '10.1.0.7:51000', since: NOW - 7_500_000,
    rxPackets: 0, rxBytes: 0, txPackets: 3, txBytes: 252, rxPps: 0, txPps: 0,
    rxBps: 0, txBps: 0, queueBytes: 2048, rttMs: -1, drops: drops(), missed: 3,
  },
];

export const leases: Lease[] = [
  {
    deviceId: 'device-a', ip: '10.0.0.2', hostname: 'alpha', connected: true, lastSeen: NOW, createdAt: NOW - 3 * 86_400_000,
    underlay: ['192.168.1.20', 'fd00::20'], remote: '192.168.1.20:40112',
  },
  {
    deviceId: 'device-c', ip: '10.0.0.4', hostname: 'gamma', connected: false, lastSeen: NOW - 3_900_000,
    createdAt: NOW - 86_400_000, underlay: [], remote: null,
  },
];

export const serverStats: ServerStats = {
  refused: {
    rateLimited: 101, tooManyHandshakes: 102, tooManyFromSource: 103, evicted: 104, handshakeTimeout: 105, tlsFailed: 106, badHello: 107,
    authFailed: 108, boundToOtherKey: 109, deviceJoinRate: 110, maxClients: 111, maxDevices: 112, newDeviceRate: 113, poolFull: 114, clusterUnavailable: 115,
  },
  cut: { overBudget: 115 },
  totals: { rxPackets: 1200, rxBytes: 1_572_864, txPackets: 803, txBytes: 512_252, drops: drops(1, 0, 0, 2) },
  local: { rxPackets: 10, rxBytes: 840, txPackets: 12, txBytes: 1008, drops: drops() },
  clients: [
    { deviceId: 'device-a', ip: '10.0.0.2', rxPackets: 1200, rxBytes: 1_572_864, txPackets: 800, txBytes: 512_000, drops: drops(1, 0, 0, 2), missed: 0 },
  ],
  multicast: [
    { group: 'mdns', received: 40, delivered: 1600, rateLimited: 3, duplicate: 2, queueFull: 1 },
    { group: 'ssdp', received: 4, delivered: 160, rateLimited: 0, duplicate: 0, queueFull: 0 },
  ],
};

export const clientStatus: ClientStatus = {
  daemon: 'client', version: '0.1.0', pid: 777, uptimeSec: 65, state: 'connected', server: 'relay.example:3334',
  deviceId: 'device-a', ip: '10.0.0.2', prefix: 24, interface: 'mnedc0', since: NOW - 42_000, reconnects: 1, failedAttempts: 7, lastError: '', offload: true,
  discovery: 'full',
  multicast: ['mdns', 'ssdp', 'broadcast'],
  ip6: 'fd12:3456:789a::a00:2',
};

export const clientPeers: ClientPeer[] = [
  { deviceId: 'device-b', ip: '10.0.0.3', hostname: 'beta', since: NOW - 600_000, underlay: ['10.1.0.7'] },
];

export const clientStats: ClientStats = {
  tunnel: { rxPackets: 500, rxBytes: 64_000, txPackets: 450, txBytes: 2_097_152, txDrops: 0, rxErrors: 0, rxBatches: 120 },
  session: { txPackets: 500, txBytes: 70_000, rxPackets: 450, rxBytes: 2_200_000, dropsOffline: 4, dropsMalformed: 5, dropsFromRelay: 6, dropsIpv6: 7, reconnects: 1, failedAttempts: 8 },
  rttMs: 3.25,
};

export interface Fake {
  methods: RpcMethods;
  /** kick and release calls with their params. */
  calls: Array<[string, unknown]>;
  /** Resolves with the context of the first `watch` call, so tests can push notifications. */
  watched: Promise<CallContext>;
}

function watchable(): { watch: RpcMethods[string]; watched: Promise<CallContext> } {
  let found!: (context: CallContext) => void;
  const watched = new Promise<CallContext>((resolve) => { found = resolve; });
  return {
    watch: (_params, context) => {
      found(context);
      return { watching: true };
    },
    watched,
  };
}

export const clusterInfo: ClusterInfo = {
  network: 'fleet-7', relay: 'server-aaaa', stateReadable: true,
  etcd: { endpoint: 'http://10.1.0.5:2379', reachable: true, version: '3.4.23', leader: '8e9e05c52164694d', revision: 1234, error: '' },
  relays: [
    { id: 'server-aaaa', advertise: '10.1.0.5:3334', since: NOW - 7_500_000, devices: 1204, self: true,
      link: 'self', problem: '', rttMs: -1, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 },
    { id: 'server-bbbb', advertise: '10.1.0.6:3334', since: NOW - 300_000, devices: 987, self: false,
      link: 'up', problem: '', rttMs: 0.84, txPackets: 9000, txBytes: 12_582_912, rxPackets: 7000, rxBytes: 9_437_184 },
    { id: 'server-cccc', advertise: '10.1.0.7:3334', since: NOW - 60_000, devices: 0, self: false,
      link: 'down', problem: 'connect ECONNREFUSED 10.1.0.7:3334', rttMs: -1, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 },
  ],
};

/** Method tables standing in for the daemons. */
export function fakeServer(): Fake {
  const calls: Array<[string, unknown]> = [];
  const { watch, watched } = watchable();
  const methods: RpcMethods = {
    status: () => serverStatus,
    peers: () => serverPeers,
    leases: () => leases,
    stats: () => serverStats,
    cluster: () => clusterInfo,
    kick: (params) => {
      const deviceId = stringParam(params, 'deviceId');
      calls.push(['kick', params]);
      if (deviceId !== 'device-a') throw new RpcError(RPC_ERRORS.notFound, `device ${deviceId} is not connected`);
      return { kicked: true, deviceId };
    },
    release: (params) => {
      const deviceId = stringParam(params, 'deviceId');
      calls.push(['release', params]);
      if (deviceId !== 'device-c') throw new RpcError(RPC_ERRORS.notFound, `device ${deviceId} has no lease`);
      return { released: true, deviceId, ip: '10.0.0.4' };
    },
    watch,
  };
  return { methods, calls, watched };
}

export function fakeClient(): Fake {
  const { watch, watched } = watchable();
  return {
    methods: { status: () => clientStatus, peers: () => clientPeers, stats: () => clientStats, watch },
    calls: [],
    watched,
  };
}

/** Collects what mnedcctl writes, and lets a test wait for a given text to appear. */
export class Capture {
  text = '';
  private waiters: Array<{ pattern: RegExp; resolve: () => void }> = [];

  write(chunk: string): void {
    this.text += chunk;
    this.waiters = this.waiters.filter((w) => (w.pattern.test(this.text) ? (w.resolve(), false) : true));
  }

  until(pattern: RegExp): Promise<void> {
    if (pattern.test(this.text)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ pattern, resolve }));
  }
}
