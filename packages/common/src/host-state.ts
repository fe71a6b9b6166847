import { readFileSync } from 'node:fs';
import { endianness, networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/**
 * The raw host network state the overlap check needs (@mnedc/protocol overlap.ts turns it into
 * addresses and routes). No external commands: os.networkInterfaces() and the kernel's route file.
 *
 * /proc/self/net/route rather than /proc/net/route: the packaged units run with ProcSubset=pid, which
 * mounts /proc with subset=pid, hiding every top-level entry but the PID directories, self and
 * thread-self; /proc/net (a symlink to self/net) is among the hidden, /proc/self/net is not.
 */
export interface HostState {
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>;
  /** The route file's text, or null when it could not be read (routesProblem says why). */
  routes: string | null;
  routesProblem: string;
  endianness: 'LE' | 'BE';
}

export const ROUTE_FILE = '/proc/self/net/route';

export function readHostState(routeFile = ROUTE_FILE): HostState {
  let routes: string | null = null;
  let routesProblem = '';
  try {
    routes = readFileSync(routeFile, 'utf8');
  } catch (err) {
    routesProblem = `cannot read ${routeFile}: ${(err as Error).message}`;
  }
  return { interfaces: networkInterfaces(), routes, routesProblem, endianness: endianness() };
}
