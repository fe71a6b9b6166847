import type { Logger } from '@mnedc/common';
import { formatIpv6, ipv4ToInt, linkLocalAddress, OVERLAY_PREFIX6, parseIpv6, type Welcome } from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';

/**
 * IPv6 on the TUN as the relay gives it: on, with the device's address in the network's /64 and its
 * link-local twin (fe80::<ipv4>, the only link-local source the relay takes, for mDNS), or off when the
 * relay gives none. Returns the IPv6 address now on the TUN, or null.
 *
 * The TUN starts with IPv6 off (main.ts), so that the kernel never makes an address of its own or sends
 * router solicitations into the overlay before the relay said what it carries.
 */
export function applyIpv6(device: TunDevice, welcome: Welcome, current: string | null, log: Logger, host?: () => HostIpv6): string | null {
  const wanted = welcome.ip6 ?? null;
  if (wanted === current) return current;
  const overlap = wanted === null || host === undefined ? null : ipv6Overlap(wanted, device.name, host());
  if (overlap !== null) {
    // The relay's /64 would take a network of this host's over (a hostile relay, or a LAN's ULA that
    // happens to match): IPv6 stays off the overlay, IPv4 goes on.
    log.error({ interface: device.name, ip6: wanted }, `No IPv6 on the overlay for this device: ${overlap}`);
    return applyIpv6(device, { ...welcome, ip6: undefined }, current, log);
  }
  if (wanted === null) {
    // A relay that gives no IPv6 (ipv6 = no, an older version) after one that did: off again.
    const problem = device.disableIpv6?.() ?? null;
    if (problem) log.warn({ interface: device.name }, `IPv6 stays on for ${device.name} (${problem}); its IPv6 packets are dropped here`);
    else log.info({ interface: device.name }, `${device.name} has no IPv6 now: the relay gives none`);
    return null;
  }
  if (!device.enableIpv6 || !device.addAddress6) return null;
  // Another address (the network's identity changed): IPv6 off and on again takes the old one away.
  if (current !== null) device.disableIpv6?.();
  const problem = device.enableIpv6();
  if (problem) {
    log.warn({ interface: device.name, ip6: wanted }, `No IPv6 on the overlay for this device: ${problem}`);
    return null;
  }
  try {
    device.configure({ address6: wanted, prefix6: OVERLAY_PREFIX6, linkLocal6: formatIpv6(linkLocalAddress(ipv4ToInt(welcome.ip))) });
  } catch (err) {
    log.warn({ err, interface: device.name, ip6: wanted }, `Cannot put ${wanted} on ${device.name}: ${(err as Error).message}; no IPv6 on the overlay for this device`);
    return null;
  }
  if (current !== null) log.warn({ ip6: wanted }, `The relay gave a new IPv6 address ${wanted} (was ${current}); connections on the old one are lost`);
  else log.info({ interface: device.name, ip6: wanted }, `IPv6 on ${device.name}: ${wanted}/${OVERLAY_PREFIX6}`);
  return wanted;
}

/** This host's IPv6 addresses and routes, as /proc/net/if_inet6 and /proc/net/ipv6_route list them. */
export interface HostIpv6 {
  addresses: Array<{ interface: string; address: Buffer }>;
  routes: Array<{ interface: string; prefix: Buffer; length: number }>;
}

const HEX32 = /^[0-9a-f]{32}$/;

/** The host's IPv6 from the text of /proc/net/if_inet6 and /proc/net/ipv6_route; lines it cannot read are left out. */
export function parseHostIpv6(ifInet6: string, ipv6Route: string): HostIpv6 {
  const addresses: HostIpv6['addresses'] = [];
  for (const line of ifInet6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 6 && HEX32.test(f[0]!)) addresses.push({ interface: f[5]!, address: Buffer.from(f[0]!, 'hex') });
  }
  const routes: HostIpv6['routes'] = [];
  for (const line of ipv6Route.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && HEX32.test(f[0]!) && /^[0-9a-f]{2}$/.test(f[1]!)) {
      routes.push({ interface: f[9]!, prefix: Buffer.from(f[0]!, 'hex'), length: parseInt(f[1]!, 16) });
    }
  }
  return { addresses, routes };
}

/** Whether the first `bits` bits of a and b agree. */
function samePrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  for (let i = 0; i < bits; i++) if (((a[i >> 3]! >> (7 - (i & 7))) & 1) !== ((b[i >> 3]! >> (7 - (i & 7))) & 1)) return false;
  return true;
}

/**
 * What of this host the overlay's /64 (that of `ip6`) would take over, or null: an address of another
 * interface inside it, or a route of another interface that overlaps it (the default route excepted): a
 * longer route would lose traffic to the TUN, a shorter one (a site's ULA /48) would have a part cut out.
 */
export function ipv6Overlap(ip6: string, tunName: string, host: HostIpv6): string | null {
  const address = parseIpv6(ip6);
  if (address === null) return `${ip6} is no IPv6 address`;
  const prefix = `${formatIpv6(Buffer.concat([address.subarray(0, 8), Buffer.alloc(8)]))}/${OVERLAY_PREFIX6}`;
  for (const a of host.addresses) {
    if (a.interface !== tunName && samePrefix(a.address, address, OVERLAY_PREFIX6)) {
      return `the overlay's ${prefix} holds ${a.interface}'s address ${formatIpv6(a.address)}`;
    }
  }
  for (const r of host.routes) {
    if (r.interface === tunName || r.length === 0 || r.interface === 'lo') continue;
    if (samePrefix(r.prefix, address, Math.min(r.length, OVERLAY_PREFIX6))) {
      return `the overlay's ${prefix} overlaps the route ${formatIpv6(r.prefix)}/${r.length} of ${r.interface}`;
    }
  }
  return null;
}
