import type { Logger } from '@mnedc/common';
import {
  findOverlaps, inSubnet, ipv4ToInt, isIpv4, parseWelcome, ProtocolError, subnetOf, type HostNetworks, type Subnet, type Welcome,
} from '@mnedc/protocol';

/**
 * Why a leased subnet must not go on this device's TUN, or '' when it may: its connected route would
 * shadow the device's LAN, or the way to the relay itself. Overlaps inside [client] allow_overlap are
 * only logged.
 */
export function leaseOverlap(welcome: Welcome, host: HostNetworks, tunName: string, allowed: readonly Subnet[],
  relay: { address: string; source: string }, log: Logger): string {
  const subnet = subnetOf(ipv4ToInt(welcome.ip), welcome.prefix);
  const report = findOverlaps(subnet, host, { ownInterface: tunName, allowed, relay });
  for (const overlap of report.allowed) log.warn(`Taking the lease although the ${overlap} ([client] allow_overlap)`);
  if (report.refused.length === 0) return '';
  return `${report.refused.join('; ')}; accept that in [client] allow_overlap, or give the relay another [server] subnet`;
}

export interface LeaseContext {
  /** The relay's address and ours on the connection to it. */
  relay: { address: string; source: string };
  /** This host's addresses and routes, read when a lease comes; absent: no overlap check. */
  localNetworks?: () => HostNetworks;
  tunName: string;
  allowed: readonly Subnet[];
  log: Logger;
}

/**
 * The lease as the relay offers it, or a ProtocolError when acting on it would be unsafe: parseWelcome's
 * rules, a subnet that would route the relay itself into the tunnel, or one that overlaps this device's
 * own networks.
 */
export function checkWelcome(payload: Buffer, context: LeaseContext): Welcome {
  const welcome = parseWelcome(payload);
  const { relay } = context;
  const { network } = subnetOf(ipv4ToInt(welcome.ip), welcome.prefix);
  if (isIpv4(relay.address) && inSubnet(ipv4ToInt(relay.address), network, welcome.prefix)) {
    throw new ProtocolError('bad-message', `WELCOME: ${welcome.ip}/${welcome.prefix} covers the relay's own address ${relay.address}, ` +
      'so the route to the relay would lead into the tunnel');
  }
  const overlap = context.localNetworks ? leaseOverlap(welcome, context.localNetworks(), context.tunName, context.allowed, relay, context.log) : '';
  if (overlap) throw new ProtocolError('bad-message', `WELCOME: ${overlap}`);
  return welcome;
}
