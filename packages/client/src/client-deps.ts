import type { HostIpv6 } from './ipv6';
import type { Logger } from '@mnedc/common';
import type { HostNetworks, Welcome } from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';
import type { RetryPolicy } from './backoff';
import type { ClientConfig } from './config';
import type { FailbackOptions } from './relay-choice';
import type { Credentials, openTunnel } from './secure';

export type ClientState = 'connecting' | 'connected' | 'waiting' | 'stopped';

/** What a RelayClient is given: its configuration and identity, its TUN, and the seams tests use. */
export interface ClientDeps {
  config: ClientConfig;
  log: Logger;
  deviceId: string;
  hostname: string;
  /** Underlay addresses to report, read at each connect (they change with DHCP). */
  underlay: () => string[];
  device: TunDevice;
  credentials: Credentials;
  /** The virtual IP from the last session, to ask for again. */
  previousIp?: string;
  /** Called when the lease changes, to persist it. */
  onLease?: (welcome: Welcome) => void;
  /** When to try again after a failed attempt; default: short for outages, long for operator mistakes. */
  retry?: RetryPolicy;
  /** How the connection is made; default openTunnel (secure.ts). A seam for tests that play the relay without a network. */
  openTunnel?: typeof openTunnel;
  /** This host's addresses and routes, read at each WELCOME to refuse a subnet that overlaps them; absent: no check. */
  localNetworks?: () => HostNetworks;
  /** Its IPv6 addresses and routes, read before the overlay's /64 goes on the TUN; absent: no check. */
  hostIpv6?: () => HostIpv6;
  /** The relays earlier WELCOMEs listed (the state file), tried after the configured ones. */
  learnedRelays?: string[];
  /** A WELCOME listed another set of relays: to persist. */
  onRelays?: (relays: string[]) => void;
  /** When to go back to the preferred relay; default a probe every PROBE_EVERY_MS, back after RETURN_AFTER_MS of answers. */
  failback?: Partial<FailbackOptions>;
}

