import type { Logger } from '@mnedc/common';
import { formatIpv6, ipv4ToInt, linkLocalAddress, OVERLAY_PREFIX6, type Welcome } from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';

/**
 * IPv6 on the TUN as the relay gives it: on, with the device's address in the network's /64 and its
 * link-local twin (fe80::<ipv4>, the only link-local source the relay takes, for mDNS), or off when the
 * relay gives none. Returns the IPv6 address now on the TUN, or null.
 *
 * The TUN starts with IPv6 off (main.ts), so that the kernel never makes an address of its own or sends
 * router solicitations into the overlay before the relay said what it carries.
 */
export function applyIpv6(device: TunDevice, welcome: Welcome, current: string | null, log: Logger): string | null {
  const wanted = welcome.ip6 ?? null;
  if (wanted === current) return current;
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
