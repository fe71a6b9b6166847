import type { Logger } from '@mnedc/common';
import type { MulticastGroup } from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';

/**
 * The groups an application that picks no interface reaches through the kernel's route to the group: a
 * /32 into the TUN makes the overlay that interface. Applications that choose their interfaces (avahi,
 * systemd-resolved, gssdp, minidlna) use every interface anyway, the LAN included. Broadcast needs no route:
 * the subnet's broadcast address is the TUN's own (set with its address).
 */
const GROUP_ROUTES: Partial<Record<MulticastGroup, string>> = { mdns: '224.0.0.251', ssdp: '239.255.255.250' };

/**
 * Routes the groups the relay carries into the TUN. Called after every WELCOME: a route already there is
 * no error, and one the kernel took away (the interface went down, an operator deleted it) comes back.
 */
export function routeGroups(device: TunDevice, groups: readonly MulticastGroup[], log: Logger): void {
  if (!device.addRoute) return;
  for (const group of groups) {
    const destination = GROUP_ROUTES[group];
    if (destination === undefined) continue;
    try {
      device.addRoute(destination, 32);
    } catch (err) {
      log.warn({ err, group, interface: device.name }, `Cannot route ${group} (${destination}) into ${device.name}: ${(err as Error).message}; ` +
        'applications that pick no interface send it to the LAN only');
    }
  }
}

/**
 * Why avahi-daemon, configured by `conf` (the text of avahi-daemon.conf), would leave the overlay out, or
 * null when it would not. avahi skips point-to-point interfaces, which a TUN is, unless told otherwise;
 * the overlay's mDNS then never reaches the applications that ask avahi.
 */
export function avahiProblem(conf: string, interfaceName: string): string | null {
  let section = '';
  const settings = new Map<string, string>();
  for (const raw of conf.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const header = /^\[(.+)\]$/.exec(line);
    if (header) section = header[1]!.trim().toLowerCase();
    else if (section === 'server' && line.includes('=')) {
      const at = line.indexOf('=');
      settings.set(line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim());
    }
  }
  if (settings.get('allow-point-to-point')?.toLowerCase() !== 'yes') {
    return `avahi-daemon leaves point-to-point interfaces such as ${interfaceName} out: set allow-point-to-point=yes under [server] ` +
      'in /etc/avahi/avahi-daemon.conf and restart it, so that services on the overlay are seen and published';
  }
  const allowed = settings.get('allow-interfaces');
  if (allowed !== undefined && allowed !== '' && !allowed.split(',').map((name) => name.trim()).includes(interfaceName)) {
    return `avahi-daemon is limited to ${allowed} (allow-interfaces in /etc/avahi/avahi-daemon.conf): add ${interfaceName} for the overlay`;
  }
  const denied = settings.get('deny-interfaces');
  if (denied !== undefined && denied.split(',').map((name) => name.trim()).includes(interfaceName)) {
    return `avahi-daemon is told to leave ${interfaceName} out (deny-interfaces in /etc/avahi/avahi-daemon.conf)`;
  }
  return null;
}
