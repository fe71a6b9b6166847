import type { HandshakeLimits } from './handshake/handshake';
import type { ServerConfig } from './config';
import type { MulticastLimits } from './dataplane/multicast';

/** The relay's limits: what the handshake enforces, plus the keepalive. A SIGHUP may change them all. */
export interface ServerLimits extends HandshakeLimits {
  keepaliveMs: number;
  deadAfterMs: number;
  /** Devices asking discovery "auto" get the pushed list while the network has at most this many. */
  discoveryFullMax: number;
  multicast: MulticastLimits;
}

/** How long a fanned-out datagram is remembered to recognise a reflector's echo of it; loops turn in milliseconds. */
const ECHO_WINDOW_MS = 1_000;

export function limitsFromConfig(config: ServerConfig): ServerLimits {
  const { server, limits } = config;
  return {
    sendQueueKib: server.send_queue_kib,
    keepaliveMs: server.keepalive_ms,
    deadAfterMs: server.dead_after_ms,
    discoveryFullMax: server.discovery_full_max,
    handshakeTimeoutMs: limits.handshake_timeout_ms,
    maxClients: limits.max_clients,
    maxDevices: limits.max_devices,
    leaseLifetimeMs: server.lease_lifetime_days * 86_400_000,
    deviceJoins: { perSecond: limits.device_joins_per_minute / 60, burst: limits.device_join_burst },
    newDevices: { perSecond: limits.new_devices_per_minute / 60, burst: limits.new_device_burst },
    maxHandshakes: limits.max_handshakes,
    maxHandshakesPerSource: limits.max_handshakes_per_source,
    connectionsPerSecond: limits.connections_per_source_per_second,
    connectionBurst: limits.connection_burst_per_source,
    multicast: {
      perDeviceRate: limits.multicast_per_device_per_second, perDeviceBurst: limits.multicast_burst,
      copiesPerSecond: limits.multicast_copies_per_second, echoWindowMs: ECHO_WINDOW_MS,
    },
  };
}
