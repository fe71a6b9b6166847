/**
 * Pure parts of `npm run bench:scale`: its options, how devices are spread over workers and loopback
 * sources, the statistics, and the one table it prints.
 */

import { DISCOVERY_REQUESTS, type DiscoveryRequest } from '@mnedc/protocol';

export interface ScaleOptions {
  devices: number;
  /** What every device asks for in HELLO.discovery; "auto" (a client's default) lets the relay decide by size. */
  discovery: DiscoveryRequest;
  workers: number;
  probes: number;
  secondsIdle: number;
  /** Relays of one cluster (on one etcd) the devices are spread over; 1: a single relay with its files. */
  relays: number;
}

/** Devices per worker process: each holds one socket per device, under the 20,000 descriptors a process may have. */
export const DEVICES_PER_WORKER = 2500;
/** Loopback source addresses the devices connect from (127.1.0.1 …), as a fleet behind many NATs would. */
export const SOURCES = 250;
/** The largest fleet a /16 holds (the relay takes one address, network and broadcast are not leased). */
export const MAX_DEVICES = 65_533;

function integer(argv: string[], name: string, fallback: number, min: number, max: number): number {
  const index = argv.indexOf(name);
  if (index < 0) return fallback;
  const text = argv[index + 1];
  const value = Number(text);
  if (text === undefined || !Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} wants an integer from ${min} to ${max}, not ${text === undefined ? 'nothing' : JSON.stringify(text)}`);
  }
  return value;
}

const KNOWN = new Set(['--devices', '--workers', '--probes', '--seconds-idle', '--discovery', '--relays']);

function discovery(argv: string[]): DiscoveryRequest {
  const index = argv.indexOf('--discovery');
  if (index < 0) return 'auto';
  const text = argv[index + 1];
  if (!(DISCOVERY_REQUESTS as readonly (string | undefined)[]).includes(text)) {
    throw new Error(`--discovery wants one of ${DISCOVERY_REQUESTS.join(', ')}, not ${text === undefined ? 'nothing' : JSON.stringify(text)}`);
  }
  return text as DiscoveryRequest;
}

export function parseScaleArgs(argv: string[]): ScaleOptions {
  for (let i = 0; i < argv.length; i += 2) {
    if (!KNOWN.has(argv[i])) throw new Error(`unknown option ${JSON.stringify(argv[i])}; options: --devices N, --workers N, --probes N, --seconds-idle N, --discovery ${DISCOVERY_REQUESTS.join('|')}, --relays N`);
  }
  const devices = integer(argv, '--devices', 1000, 2, MAX_DEVICES);
  return {
    devices,
    discovery: discovery(argv),
    workers: integer(argv, '--workers', Math.ceil(devices / DEVICES_PER_WORKER), 1, 64),
    probes: integer(argv, '--probes', 2000, 1, 1_000_000),
    secondsIdle: integer(argv, '--seconds-idle', 30, 1, 3600),
    relays: integer(argv, '--relays', 1, 1, 8),
  };
}

/** Device indices [first, first + count) for each of `workers` processes, as even as can be. */
export function splitDevices(devices: number, workers: number): Array<{ first: number; count: number }> {
  const shares: Array<{ first: number; count: number }> = [];
  let first = 0;
  for (let w = 0; w < workers; w++) {
    const count = Math.floor(devices / workers) + (w < devices % workers ? 1 : 0);
    shares.push({ first, count });
    first += count;
  }
  return shares;
}

/** Devices of the observer worker (run.ts): a few, and none for a fleet too small to spare them. */
export function observerDevices(devices: number): number {
  return Math.min(8, Math.floor(devices / 8));
}

export function sourceAddress(index: number): string {
  return `127.1.0.${(index % SOURCES) + 1}`;
}

export function deviceId(index: number): string {
  return `dev-${index}`;
}

/** The index in a bench device ID, or -1 for any other ID. */
export function deviceIndex(id: string): number {
  if (!id.startsWith('dev-')) return -1;
  const n = Number(id.slice(4));
  return Number.isInteger(n) && n >= 0 ? n : -1;
}

/** The p-th percentile (0..100) of ascending `sorted`, nearest rank; null when empty. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** `count` ordered pairs of distinct entries of `from`, drawn with `random` (0 ≤ random() < 1). */
export function randomPairs<T>(from: readonly T[], count: number, random: () => number): Array<[T, T]> {
  if (from.length < 2) return [];
  const pairs: Array<[T, T]> = [];
  for (let i = 0; i < count; i++) {
    const a = Math.floor(random() * from.length);
    let b = Math.floor(random() * (from.length - 1));
    if (b >= a) b++;
    pairs.push([from[a], from[b]]);
  }
  return pairs;
}

/** A seeded generator (mulberry32), so a run's pairs can be drawn again. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ScaleResult {
  devices: number;
  /** Relays of the cluster the devices were spread over (1: a single relay). */
  relays?: number;
  workers: number;
  commit: string;
  cores: number;
  /** os.loadavg() before the relay started and at the end: the machine is shared. */
  loadavg: { start: number[]; end: number[] };
  join: { seconds: number | null; joined: number };
  relay: {
    /** After the join phase; per device that had joined. */
    rssKib: number | null; kibPerDevice: number | null;
    /** Relay CPU time from the first connection until all had joined, per device joined. */
    joinCpuMs: number | null;
    /** That CPU time as a share of the join's wall-clock time, in % of one core. */
    joinCpuShare: number | null;
    /** Seconds the relay was runnable but waited for a core during the join (/proc/PID/schedstat). */
    joinRunQueueSeconds: number | null;
    idleCpuPercent: number | null; idleSeconds: number };
  discovery: { totalBytes: number; meanBytes: number };
  /**
   * Devices granted the pushed peer list (full), how many of them knew every other device within the
   * deadline, and when the last of them did. The rest (names, off) look peers up by DNS.
   */
  peers: { full: number; complete: number; seconds: number | null };
  discoveryRequested: DiscoveryRequest;
  dns: { asked: number; answered: number; correct: number; p50Ms: number | null; p99Ms: number | null };
  /** Lookups of devices the moment they were welcomed in the storm (ms from WELCOME to the answer). */
  dnsOnJoin?: { asked: number; answered: number; correct: number; p50Ms: number | null; p99Ms: number | null };
  probes: { sent: number; delivered: number };
  /** Of those, the ones between devices on different relays (over the mesh); absent for one relay. */
  crossRelay?: { sent: number; delivered: number };
  stormProbes: { sent: number; delivered: number; connectedWhenSent: number };
  /**
   * After kill -9 and restart: seconds from the new relay listening until all were back; of the devices
   * that had an address before (hadIp), how many are back with the same one.
   */
  storm: { seconds: number | null; back: number; sameIp: number; hadIp: number;
    /** Relay CPU from the restart until all were back, per device back; as a share of one core; seconds it waited for one. */
    cpuMsPerDevice?: number; cpuShare?: number; runQueueSeconds?: number };
  /** Phases that ran out of time, and other things a reader should know. */
  notes: string[];
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

function seconds(value: number | null): string {
  return value === null ? 'timeout' : `${value.toFixed(1)} s`;
}

function ms(value: number | null): string {
  return value === null ? '-' : value < 10 ? value.toFixed(2) : value.toFixed(0);
}

export const TABLE_HEADER = ['devices', 'relays', 'join all', 'relay CPU per join', 'relay RSS (per device)', 'relay CPU idle', 'discovery bytes per device (all)',
  'full-list devices that see every peer', 'DNS p50/p99 ms', 'DNS right after joining, p50/p99 ms', 'probes delivered', 'of which across relays', 'probes during storm', 'storm after kill -9', 'same IPs', 'load avg'];

export function tableRow(r: ScaleResult): string[] {
  const n = r.devices.toLocaleString('en');
  return [
    n,
    String(r.relays ?? 1),
    r.join.joined === r.devices ? seconds(r.join.seconds) : `${r.join.joined}/${r.devices} (timeout)`,
    r.relay.joinCpuMs === null ? '-' : `${r.relay.joinCpuMs.toFixed(1)} ms`,
    r.relay.rssKib === null ? '-' : `${formatBytes(r.relay.rssKib * 1024)} (${r.relay.kibPerDevice!.toFixed(0)} KiB)`,
    r.relay.idleCpuPercent === null ? '-' : `${r.relay.idleCpuPercent.toFixed(1)}%`,
    `${formatBytes(r.discovery.meanBytes)} (${formatBytes(r.discovery.totalBytes)})`,
    peersCell(r),
    dnsCell(r.dns),
    r.dnsOnJoin ? dnsCell(r.dnsOnJoin) : '-',
    `${r.probes.delivered}/${r.probes.sent}`,
    r.crossRelay ? `${r.crossRelay.delivered}/${r.crossRelay.sent}` : '-',
    `${r.stormProbes.delivered}/${r.stormProbes.sent} (${r.stormProbes.connectedWhenSent} back)`,
    r.storm.back === r.devices ? seconds(r.storm.seconds) : `${r.storm.back}/${r.devices} (timeout)`,
    r.storm.sameIp === r.devices ? 'all' : `${r.storm.sameIp} of ${r.storm.hadIp}`,
    `${r.loadavg.start[0].toFixed(2)} → ${r.loadavg.end[0].toFixed(2)}`,
  ];
}

function dnsCell(d: ScaleResult['dns']): string {
  return d.answered === 0 ? '-' : `${ms(d.p50Ms)}/${ms(d.p99Ms)} (${d.correct}/${d.asked} right)`;
}

function peersCell(r: ScaleResult): string {
  const others = r.devices - r.peers.full;
  const rest = others === 0 ? '' : `; ${others.toLocaleString('en')} by DNS`;
  if (r.peers.full === 0) return `none pushed${rest}`;
  const all = r.peers.complete >= r.peers.full ? `all ${r.peers.full.toLocaleString('en')} (${seconds(r.peers.seconds)})` : `${r.peers.complete} of ${r.peers.full}`;
  return all + rest;
}

/** A Markdown table (so rows of several runs paste into the README), one row per result. */
export function formatTable(results: readonly ScaleResult[]): string {
  const rows = [TABLE_HEADER, ...results.map(tableRow)];
  const widths = TABLE_HEADER.map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]): string => `| ${row.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}
