import type { Logger } from '@mnedc/common';
import { findOverlaps, ipv4ToInt, subnetOf, type HostNetworks, type Subnet, type Welcome } from '@mnedc/protocol';

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
