/**
 * Argument checks for Tun's configuration calls, run before anything changes so a bad field never leaves
 * a half-applied configuration, and the per-interface IPv6 sysctls. Errors name the interface.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

import type { TunConfig } from './device';

/** net.isIPv6 also takes a zone ("fe80::1%eth0"), which the addon's inet_pton refuses. */
function isIpv6(s: unknown): s is string {
  return typeof s === 'string' && net.isIPv6(s) && !s.includes('%');
}

function isLinkLocal6(s: string): boolean {
  const first = s.startsWith('::') ? 0 : parseInt(s.slice(0, s.indexOf(':')), 16);
  return (first & 0xffc0) === 0xfe80;
}

function checkPrefix(where: string, field: string, prefix: unknown, max: number): void {
  if (!(Number.isInteger(prefix) && (prefix as number) >= 0 && (prefix as number) <= max)) {
    throw new RangeError(`${where}: ${field} must be an integer in 0..${max}, got ${String(prefix)}`);
  }
}

export function checkConfig(name: string, cfg: TunConfig): void {
  const where = `Tun.configure ${name}`;
  const { mtu, address, prefix, address6, prefix6, linkLocal6, up } = cfg;
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535)) {
    throw new RangeError(`${where}: mtu must be an integer in 68..65535, got ${String(mtu)}`);
  }
  if (address !== undefined && !(typeof address === 'string' && net.isIPv4(address))) {
    throw new TypeError(`${where}: invalid IPv4 address ${JSON.stringify(address)}`);
  }
  if (prefix !== undefined) checkPrefix(where, 'prefix', prefix, 32);
  if (prefix !== undefined && address === undefined) {
    throw new TypeError(`${where}: prefix given without address`);
  }
  if (address6 !== undefined && !isIpv6(address6)) {
    throw new TypeError(`${where}: invalid IPv6 address ${JSON.stringify(address6)}`);
  }
  if (prefix6 !== undefined) checkPrefix(where, 'prefix6', prefix6, 128);
  if (prefix6 !== undefined && address6 === undefined) {
    throw new TypeError(`${where}: prefix6 given without address6`);
  }
  if (linkLocal6 !== undefined && !(isIpv6(linkLocal6) && isLinkLocal6(linkLocal6))) {
    throw new TypeError(`${where}: linkLocal6 must be an IPv6 link-local (fe80::/10) address, got ${JSON.stringify(linkLocal6)}`);
  }
  if (up !== undefined && typeof up !== 'boolean') {
    throw new TypeError(`${where}: up must be a boolean`);
  }
}

export function checkAddress6(name: string, address: unknown, prefix: unknown): void {
  const where = `Tun.addAddress6 ${name}`;
  if (!isIpv6(address)) throw new TypeError(`${where}: invalid IPv6 address ${JSON.stringify(address)}`);
  checkPrefix(where, 'prefix', prefix, 128);
}

export function checkRoute(name: string, destination: unknown, prefix: unknown): void {
  const where = `Tun.addRoute ${name}`;
  if (!(typeof destination === 'string' && net.isIPv4(destination))) {
    throw new TypeError(`${where}: invalid IPv4 destination ${JSON.stringify(destination)}`);
  }
  checkPrefix(where, 'prefix', prefix, 32);
  const addr = destination.split('.').reduce((a, b) => a * 256 + Number(b), 0);
  const hostBits = (prefix as number) === 32 ? 0 : addr % 2 ** (32 - (prefix as number));
  if (hostBits !== 0) throw new RangeError(`${where}: ${destination}/${String(prefix)} has host bits set`);
}

/** /proc/net/if_inet6 exists whenever the kernel has IPv6, also where /proc/sys is hidden. */
export function kernelHasIpv6(): boolean {
  return fs.existsSync('/proc/net/if_inet6');
}

export const NO_IPV6 = 'the kernel has no IPv6 (not built in, or booted with ipv6.disable=1)';

export interface SysctlFailure {
  file: string;
  error: NodeJS.ErrnoException;
}

/** Writes /proc/sys/net/ipv6/conf/<name>/<key> for each setting in order, stopping at the first that fails. */
export function writeIpv6Conf(name: string, settings: readonly (readonly [string, string])[]): SysctlFailure | null {
  for (const [key, value] of settings) {
    const file = `/proc/sys/net/ipv6/conf/${name}/${key}`;
    try {
      fs.writeFileSync(file, value);
    } catch (error) {
      return { file, error: error as NodeJS.ErrnoException };
    }
  }
  return null;
}

/**
 * Whether IPv6 is off on the interface (disable_ipv6), so that adding an address would fail with EACCES;
 * false where that cannot be read, leaving the addon's errno to tell.
 */
export function ipv6Disabled(name: string): boolean {
  try {
    return fs.readFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

export const IPV6_DISABLED_HINT = 'IPv6 is disabled on this interface; call enableIpv6() first';
