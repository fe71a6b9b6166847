/**
 * Whether an overlay subnet would collide with the host's own networks. Pure: the daemons read the host
 * (os.networkInterfaces(), /proc/self/net/route) and hand the data in, so every case is unit-tested.
 */
import { inSubnet, intToIpv4, ipv4ToInt, isIpv4, parseSubnet, prefixMask, type Subnet } from './ipv4';

export interface HostAddress {
  interface: string;
  address: string;
  prefix: number;
}

export interface HostRoute {
  interface: string;
  destination: string;
  prefix: number;
  /** Next hop; '' for a directly connected (link) route. */
  gateway: string;
}

export interface HostNetworks {
  addresses: HostAddress[];
  routes: HostRoute[];
}

/** The part of os.networkInterfaces()'s entries used here (Node 18.0–18.3 gave `family` as a number). */
export interface InterfaceAddressInfo {
  address: string;
  family: string | number;
  internal: boolean;
  cidr: string | null;
}

/** The host's IPv4 addresses, loopback left out (an overlay can never collide with what never leaves the host). */
export function hostAddresses(interfaces: Record<string, readonly InterfaceAddressInfo[] | undefined>): HostAddress[] {
  const found: HostAddress[] = [];
  for (const [name, entries] of Object.entries(interfaces)) {
    for (const entry of entries ?? []) {
      if (entry.internal || (entry.family !== 'IPv4' && entry.family !== 4) || !isIpv4(entry.address)) continue;
      const prefix = Number(entry.cidr?.split('/')[1] ?? '32');
      if (Number.isInteger(prefix) && prefix >= 0 && prefix <= 32) found.push({ interface: name, address: entry.address, prefix });
    }
  }
  return found;
}

/** readHostState()'s result (@mnedc/common host-state.ts) as addresses and routes. */
export function hostNetworks(state: {
  interfaces: Record<string, readonly InterfaceAddressInfo[] | undefined>;
  routes: string | null;
  endianness: 'LE' | 'BE';
}): HostNetworks {
  return { addresses: hostAddresses(state.interfaces), routes: state.routes === null ? [] : parseProcRoute(state.routes, state.endianness) };
}

const RTF_UP = 0x0001;
const RTF_GATEWAY = 0x0002;
/** unreachable/prohibit/blackhole: nothing is reached through them, so shadowing one cuts nothing off. */
const RTF_REJECT = 0x0200;

/**
 * /proc/net/route (the main table): addresses and masks are the kernel's u32 printed with %08X, so on a
 * little-endian host "0100A8C0" is 192.168.0.1. Lines that do not parse are skipped, not fatal: the file
 * is the kernel's, and a check that dies on an odd line would stop the daemon for nothing.
 */
export function parseProcRoute(text: string, endianness: 'LE' | 'BE' = 'LE'): HostRoute[] {
  const routes: HostRoute[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, gateway, flagText, , , , maskText] = f as [string, string, string, string, string, string, string, string];
    const destination = hexAddress(dest, endianness);
    const gw = hexAddress(gateway, endianness);
    const mask = hexAddress(maskText, endianness);
    const flags = Number.parseInt(flagText, 16);
    if (destination === null || gw === null || mask === null || Number.isNaN(flags)) continue;
    if (!(flags & RTF_UP) || flags & RTF_REJECT) continue;
    const prefix = maskPrefix(mask);
    if (prefix === null) continue;
    routes.push({ interface: iface, destination: intToIpv4(destination), prefix, gateway: flags & RTF_GATEWAY && gw !== 0 ? intToIpv4(gw) : '' });
  }
  return routes;
}

function hexAddress(text: string, endianness: 'LE' | 'BE'): number | null {
  if (!/^[0-9A-Fa-f]{8}$/.test(text)) return null;
  const value = Number.parseInt(text, 16);
  if (endianness === 'BE') return value >>> 0;
  return (((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24)) >>> 0;
}

function maskPrefix(mask: number): number | null {
  let prefix = 0;
  while (prefix < 32 && (mask & (0x80000000 >>> prefix)) !== 0) prefix++;
  return prefixMask(prefix) === mask ? prefix : null;
}

/** RFC 1918 and the shared (CGNAT) space of RFC 6598: where an overlay belongs. */
const PRIVATE_SPACE = [[0x0a000000, 8], [0xac100000, 12], [0xc0a80000, 16], [0x64400000, 10]].map(([network, prefix]) => ({ network: network!, prefix: prefix! }));

export interface OverlapOptions {
  /** The overlay's own TUN: a restarted daemon finds its previous address and routes still on it. */
  ownInterface: string;
  /** Host networks the operator accepts the overlay overlapping ([server]/[client] allow_overlap). */
  allowed: readonly Subnet[];
  /** Client: the relay it is talking to and the local address of that connection. */
  relay?: { address: string; source: string };
}

export interface OverlapReport {
  /** One sentence per collision, naming both sides. */
  refused: string[];
  /** Collisions inside allow_overlap: worth a log line, not a refusal. */
  allowed: string[];
}

/** Every way `subnet` collides with the host's addresses and routes. */
export function findOverlaps(subnet: Pick<Subnet, 'network' | 'prefix'>, host: HostNetworks, options: OverlapOptions): OverlapReport {
  const report: OverlapReport = { refused: [], allowed: [] };
  const name = `subnet ${intToIpv4(subnet.network)}/${subnet.prefix}`;
  const note = (hostNetwork: number, hostPrefix: number, message: string) => {
    const allowed = options.allowed.some((a) => contains(a, hostNetwork, hostPrefix));
    (allowed ? report.allowed : report.refused).push(message);
  };
  const inside = (ip: number) => inSubnet(ip, subnet.network, subnet.prefix);
  const overlaps = (network: number, prefix: number) => {
    const common = prefixMask(Math.min(prefix, subnet.prefix));
    return ((network & common) >>> 0) === ((subnet.network & common) >>> 0);
  };
  const addresses = host.addresses.filter((a) => a.interface !== options.ownInterface);
  const routes = host.routes.filter((r) => r.interface !== options.ownInterface && r.interface !== 'lo');

  for (const a of addresses) {
    const ip = ipv4ToInt(a.address);
    const network = (ip & prefixMask(a.prefix)) >>> 0;
    if (overlaps(network, a.prefix)) note(network, a.prefix, `${name} overlaps ${a.interface}'s address ${a.address}/${a.prefix}`);
  }
  const relayRoute = options.relay && isIpv4(options.relay.address) ? routeTo(ipv4ToInt(options.relay.address), routes) : null;
  for (const r of routes) {
    const destination = ipv4ToInt(r.destination);
    const route = `the route ${r.prefix === 0 ? 'default' : `${r.destination}/${r.prefix}`}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.interface}`;
    // The kernel's connected route of an address says the same as the address did.
    const connected = !r.gateway && addresses.some((a) => a.interface === r.interface && a.prefix === r.prefix &&
      inSubnet(ipv4ToInt(a.address), destination, a.prefix));
    // A default route overlaps every subnet by definition; it only breaks when its next hop is captured.
    if (r.prefix > 0 && !connected && overlaps(destination, r.prefix)) note(destination, r.prefix, `${name} overlaps ${route}`);
    if (r.gateway && inside(ipv4ToInt(r.gateway))) {
      const what = r === relayRoute ? `the next hop to the relay ${options.relay!.address} (${route})`
        : r.prefix === 0 ? `the gateway of ${route}: the host would lose its default route` : `the gateway of ${route}`;
      note(ipv4ToInt(r.gateway), 32, `${name} contains ${r.gateway}, ${what}`);
    }
  }
  // Outside private space the subnet takes over real Internet addresses (a relay leasing 8.8.0.0/16 would
  // draw this host's DNS queries into the tunnel), which no address or specific route shows.
  const defaultRoute = routes.find((r) => r.prefix === 0);
  if (defaultRoute && !PRIVATE_SPACE.some((p) => contains(p, subnet.network, subnet.prefix))) {
    note(subnet.network, subnet.prefix, `${name} is not private address space (10/8, 172.16/12, 192.168/16, 100.64/10): this host reaches ` +
      `those addresses through the default route${defaultRoute.gateway ? ` via ${defaultRoute.gateway}` : ''} dev ${defaultRoute.interface}, ` +
      'and their traffic would go into the tunnel');
  }
  const source = options.relay?.source ?? '';
  if (isIpv4(source) && inside(ipv4ToInt(source)) && !addresses.some((a) => a.address === source)) {
    note(ipv4ToInt(source), 32, `${name} contains ${source}, the address this device reaches the relay from`);
  }
  return report;
}

/** Whether `outer` holds all of network/prefix. */
function contains(outer: Pick<Subnet, 'network' | 'prefix'>, network: number, prefix: number): boolean {
  return outer.prefix <= prefix && inSubnet(network, outer.network, outer.prefix);
}

/** The main-table route the kernel would pick for `ip` (longest prefix; metrics aside). */
function routeTo(ip: number, routes: readonly HostRoute[]): HostRoute | null {
  let best: HostRoute | null = null;
  for (const r of routes) {
    if (inSubnet(ip, ipv4ToInt(r.destination), r.prefix) && (!best || r.prefix > best.prefix)) best = r;
  }
  return best;
}

/** allow_overlap's value: CIDRs separated by commas or white space; empty = none. */
export function parseSubnetList(text: string): Subnet[] {
  return text.split(/[\s,]+/).filter((t) => t !== '').map(parseSubnet);
}
