/** The bench's pure parts (see main.ts): options, the packets and their marks, the arithmetic of a point's summary, the table. */
import { internetChecksum, MDNS_IPV4 } from '@mnedc/protocol';
import { formatBytes, splitDevices } from '../scale/stats';
import { ipPacket } from '../wire-client';

// ---------------------------------------------------------------------------------------------------
// Pure parts: options, packets, the sending schedule, the summary's arithmetic.

export interface MulticastBenchOptions {
  devices: number;
  senders: number;
  /** Packets per second each sender sends, one entry per point (one for --pps, several for --sweep). */
  pps: number[];
  /** Length of each sending window. */
  seconds: number;
  /** Worker processes (at nice 10) for the devices the senders' worker does not hold (workerShares). */
  workers: number;
  /** Bytes of each IP packet. */
  bytes: number;
}

/** Copies per second offered at each point of the default sweep. */
export const DEFAULT_SWEEP = [20_000, 50_000, 100_000, 200_000, 400_000, 800_000];
/** Receiving devices per worker process: one socket each, well under the 20,000 descriptors a process may have. */
export const DEVICES_PER_WORKER = 2000;
/** What the relay is configured with: its copies budget and each device's rate (the largest the config takes). */
export const COPIES_BUDGET = 100_000_000;
export const PER_DEVICE_RATE = 100_000;
/** IPv4 (20) + UDP (8) + the mark (24): the smallest packet. The overlay's default MTU the largest. */
export const MIN_BYTES = 52;
export const MAX_BYTES = 1400;

const USAGE = 'options: --devices N (2-15000, default 201), --senders S (default 10), --pps P (per sender) or --sweep C1,C2,… ' +
  `(copies/s offered; default ${DEFAULT_SWEEP.join(',')}), --seconds T (1-120, default 10), --workers W, --bytes B (${MIN_BYTES}-${MAX_BYTES}, default 100)`;

function optionValue(argv: readonly string[], name: string): string | undefined {
  const index = argv.indexOf(name);
  if (index < 0) return undefined;
  const text = argv[index + 1];
  if (text === undefined) throw new Error(`${name} wants a value`);
  return text;
}

function integerOption(argv: readonly string[], name: string, fallback: number, min: number, max: number): number {
  const text = optionValue(argv, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} wants an integer from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return value;
}

/** Packets per second each of `senders` sends so that the relay is offered `copies` per second among `devices`. */
export function ppsFor(copies: number, senders: number, devices: number): number {
  return copies / (senders * (devices - 1));
}

/** Copies per second offered: each packet is copied to every device but its sender. */
export function offeredCopies(senders: number, pps: number, devices: number): number {
  return senders * pps * (devices - 1);
}

/**
 * The most packets per second a device may have fanned out among `devices` (multicast.ts fairShare): the
 * per-device rate, or its equal share of the copies budget when that is less.
 */
export function fairShareRate(devices: number, budget = COPIES_BUDGET, perDevice = PER_DEVICE_RATE): number {
  return Math.min(perDevice, budget / (devices * devices));
}

export function parseMulticastArgs(argv: readonly string[]): MulticastBenchOptions {
  const known = new Set(['--devices', '--senders', '--pps', '--sweep', '--seconds', '--workers', '--bytes']);
  for (let i = 0; i < argv.length; i += 2) {
    if (!known.has(argv[i]!)) throw new Error(`unknown option ${JSON.stringify(argv[i])}; ${USAGE}`);
  }
  const devices = integerOption(argv, '--devices', 201, 2, 15_000);
  const senders = integerOption(argv, '--senders', Math.min(10, devices - 1), 1, Math.min(1000, devices - 1));
  const seconds = integerOption(argv, '--seconds', 10, 1, 120);
  const workers = integerOption(argv, '--workers', Math.max(1, Math.ceil((devices - Math.min(senders, SENDER_WORKER_DEVICES)) / DEVICES_PER_WORKER)), 1, 16);
  const bytes = integerOption(argv, '--bytes', 100, MIN_BYTES, MAX_BYTES);
  const ppsText = optionValue(argv, '--pps');
  const sweepText = optionValue(argv, '--sweep');
  if (ppsText !== undefined && sweepText !== undefined) throw new Error('--pps and --sweep are one or the other');
  let pps: number[];
  if (ppsText !== undefined) {
    pps = [Number(ppsText)];
  } else {
    const copies = sweepText === undefined ? DEFAULT_SWEEP : sweepText.split(',').map(Number);
    if (copies.some((c) => !Number.isFinite(c) || c <= 0)) throw new Error(`--sweep wants copies per second, comma-separated, not ${JSON.stringify(sweepText)}`);
    pps = copies.map((c) => ppsFor(c, senders, devices));
  }
  const limit = fairShareRate(devices);
  for (const p of pps) {
    if (!Number.isFinite(p) || p <= 0 || p > limit) {
      throw new Error(`${p} packets/s per sender is not in (0, ${Math.floor(limit)}]: among ${devices} devices the relay lets each send ` +
        `at most ${Math.floor(limit)}/s (its copies budget ${COPIES_BUDGET} / ${devices}², or the per-device rate ${PER_DEVICE_RATE})`);
    }
  }
  return { devices, senders, pps, seconds, workers, bytes };
}

/** What makes each packet of the bench unique and tells its receiver where and when it came from. */
export interface Mark {
  /** The point of the run it belongs to: a packet of an earlier point arriving late is told apart. */
  round: number;
  /** The sender's number, 0 … S − 1 (also its device index). */
  sender: number;
  /** Its place in the sender's sequence, from 0. */
  seq: number;
  /** Wall clock when sent, ms since the epoch, sub-millisecond (performance.timeOrigin + now()). */
  sentAt: number;
}

const MARK_MAGIC = 0x6d6e4d43; // "mnMC"
const MARK_BYTES = 24;
const IP_UDP_BYTES = 28;

/** An mDNS datagram of `bytes` as a host sends it: UDP 5353 → 224.0.0.251:5353, TTL 255, valid header checksum, `mark` first in its payload. */
export function mdnsPacket(source: number, mark: Mark, bytes: number): Buffer {
  const udp = Buffer.alloc(bytes - 20);
  udp.writeUInt16BE(5353, 0);
  udp.writeUInt16BE(5353, 2);
  udp.writeUInt16BE(udp.length, 4);
  udp.writeUInt32BE(MARK_MAGIC, 8);
  udp.writeUInt32BE(mark.round, 12);
  udp.writeUInt32BE(mark.sender, 16);
  udp.writeUInt32BE(mark.seq, 20);
  udp.writeDoubleBE(mark.sentAt, 24);
  const packet = ipPacket(source >>> 0, MDNS_IPV4, udp);
  packet[8] = 255;
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  return packet;
}

/** The mark of a bench packet (an IPv4 UDP packet to 224.0.0.251 with one), else null. */
export function readMark(packet: Buffer): Mark | null {
  if (packet.length < IP_UDP_BYTES + MARK_BYTES || packet[0] !== 0x45 || packet[9] !== 17) return null;
  if (packet.readUInt32BE(16) !== MDNS_IPV4 || packet.readUInt32BE(28) !== MARK_MAGIC) return null;
  return { round: packet.readUInt32BE(32), sender: packet.readUInt32BE(36), seq: packet.readUInt32BE(40), sentAt: packet.readDoubleBE(44) };
}

/** Packets a sender has sent `elapsedMs` into its window: its k-th (from 0) goes at offsetMs + k × 1000/pps, `total` at most. */
export function packetsDue(elapsedMs: number, pps: number, offsetMs: number, total: number): number {
  if (elapsedMs < offsetMs) return 0;
  return Math.min(total, Math.floor(((elapsedMs - offsetMs) * pps) / 1000) + 1);
}

/** Packets a sender sends in a window. */
export function packetsPerSender(pps: number, seconds: number): number {
  return Math.max(1, Math.round(pps * seconds));
}

/** Latency histogram: 0.1 ms buckets up to 10 s (the last holds everything later). */
export const LATENCY_BUCKET_MS = 0.1;
export const LATENCY_BUCKETS = 100_000;

export function latencyBucket(ms: number): number {
  return Math.min(LATENCY_BUCKETS - 1, Math.max(0, Math.floor(ms / LATENCY_BUCKET_MS)));
}

/** The p-th percentile (nearest rank) of a histogram given as [bucket, count] pairs, in ms (the bucket's upper edge); null when empty. */
export function histogramPercentile(entries: ReadonlyArray<readonly [number, number]>, p: number): number | null {
  const sorted = [...entries].filter(([, c]) => c > 0).sort((a, b) => a[0] - b[0]);
  const total = sorted.reduce((sum, [, c]) => sum + c, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (const [bucket, count] of sorted) {
    seen += count;
    if (seen >= rank) return (bucket + 1) * LATENCY_BUCKET_MS;
  }
  return (sorted[sorted.length - 1]![0] + 1) * LATENCY_BUCKET_MS;
}

/** What one point measured; summarize() turns it into the table's figures. */
export interface PointMeasurement {
  devices: number;
  senders: number;
  pps: number;
  /** The sending window, s. */
  seconds: number;
  /** Packets the senders sent, and when the last left (s after the window opened: above `seconds`, the senders fell behind). */
  sent: number;
  sendSeconds: number;
  /** Copies the devices counted within the window, and by the end of the point. */
  deviceCopiesWindow: number;
  deviceCopies: number;
  /** The relay's mDNS `delivered` counter over the window (read `statsSeconds` after it opened) and over the point. */
  statsCopiesWindow: number;
  statsSeconds: number;
  statsCopies: number;
  /** Relay CPU s (user + system) over the window and over the point, and of it in the kernel over the window. */
  cpuWindow: number;
  cpuPoint: number;
  sysWindow: number;
  /** Seconds the relay waited runnable for a core over the window (schedstat): the machine's other load shows here. */
  runQueueWindow: number;
  /** The relay's write syscalls over the point (/proc/<pid>/io syscw): a copy each unless copies were batched. */
  writesPoint: number;
  /** CPU s of the load generator (every worker) over the window. */
  workersCpuWindow: number;
  /** The relay's largest RSS sampled during the window, KiB. */
  rssKib: number;
  drops: { queueFull: number; rateLimited: number; duplicate: number };
  check: { missing: number; extra: number; disorder: number; completeDevices: number; stale: number };
  latencyMs: { p50: number | null; p99: number | null; max: number | null };
}

export interface PointSummary {
  offeredPerSecond: number;
  deliveredPerSecond: number;
  statsPerSecond: number;
  /** Relay CPU over the window as a share of one core, %; the kernel's part of it, %. */
  cpuPercent: number;
  sysPercent: number;
  /** Copies per write syscall: 1 when each copy went out on its own, more when a read held several packets of a sender. */
  copiesPerWrite: number | null;
  /** Relay CPU s per 100,000 copies (null when none was delivered), and the copies/s one core would make at that cost. */
  cpuPer100k: number | null;
  copiesPerCore: number | null;
  loadGeneratorPercent: number;
  /** Every device got every packet of every other sender exactly once, in order, and none of its own. */
  allDelivered: boolean;
  /** The stats counter and the devices' counts agree on the point's copies. */
  countsAgree: boolean;
  /** Why this point is past what the relay can carry; empty: it kept up. */
  saturated: string[];
}

/** Above this share of a core the relay is taken to be saturated; below this share of what was offered, deliveries fell behind. */
export const SATURATED_CPU_PERCENT = 90;
export const DELIVERED_SHARE = 0.97;

export function summarize(m: PointMeasurement): PointSummary {
  const expected = m.sent * (m.devices - 1);
  const offeredPerSecond = offeredCopies(m.senders, m.pps, m.devices);
  const deliveredPerSecond = m.deviceCopiesWindow / m.seconds;
  const cpuPercent = (m.cpuWindow / m.seconds) * 100;
  const sysPercent = m.cpuWindow > 0 ? (m.sysWindow / m.cpuWindow) * 100 : 0;
  const cpuPer100k = m.statsCopies > 0 ? (m.cpuPoint / m.statsCopies) * 100_000 : null;
  const allDelivered = m.deviceCopies === expected && m.check.missing === 0 && m.check.extra === 0 && m.check.disorder === 0 &&
    m.check.completeDevices === m.devices;
  const saturated: string[] = [];
  if (cpuPercent >= SATURATED_CPU_PERCENT) saturated.push(`relay at ${cpuPercent.toFixed(0)}% of a core`);
  if (deliveredPerSecond < DELIVERED_SHARE * offeredPerSecond) saturated.push(`delivered ${(100 * deliveredPerSecond / offeredPerSecond).toFixed(0)}% of the offered rate in the window`);
  if (m.drops.queueFull > 0) saturated.push(`${m.drops.queueFull} copies dropped (queueFull)`);
  // A packet admission refused (a digest collision taken for an echo, a rate) is a copy missing at every other device, but no sign of saturation.
  const refusedCopies = (m.drops.duplicate + m.drops.rateLimited) * (m.devices - 1);
  if (m.check.missing > refusedCopies || m.check.extra > 0 || m.check.disorder > 0) saturated.push('copies lost or out of order');
  if (m.sendSeconds > m.seconds + 0.5) saturated.push(`the senders fell behind (last packet at ${m.sendSeconds.toFixed(1)} s)`);
  return {
    offeredPerSecond, deliveredPerSecond, statsPerSecond: m.statsSeconds > 0 ? m.statsCopiesWindow / m.statsSeconds : 0, cpuPercent, sysPercent,
    copiesPerWrite: m.writesPoint > 0 ? m.statsCopies / m.writesPoint : null,
    cpuPer100k, copiesPerCore: cpuPer100k === null || cpuPer100k === 0 ? null : 100_000 / cpuPer100k,
    loadGeneratorPercent: (m.workersCpuWindow / m.seconds) * 100, allDelivered, countsAgree: m.deviceCopies === m.statsCopies, saturated,
  };
}

export function thousands(value: number): string {
  return Math.round(value).toLocaleString('en');
}

function msCell(value: number | null): string {
  return value === null ? '-' : value < 10 ? value.toFixed(1) : value.toFixed(0);
}

export const TABLE_HEADER = ['copies/s offered', 'S × pps', 'delivered/s (devices)', 'delivered/s (stats)', 'relay CPU, % of a core (kernel)',
  'relay CPU s per 100k copies', 'copies/s per core at that cost', 'copies per write()', 'relay RSS', 'queueFull', 'every device got every packet',
  'latency p50/p99/max ms', 'load generator CPU %', 'relay waited for a core'];

export function tableRow(m: PointMeasurement, s: PointSummary): string[] {
  return [
    thousands(s.offeredPerSecond),
    `${m.senders} × ${Number(m.pps.toFixed(2))}`,
    thousands(s.deliveredPerSecond),
    thousands(s.statsPerSecond),
    `${s.cpuPercent.toFixed(0)}% (${s.sysPercent.toFixed(0)}%)`,
    s.cpuPer100k === null ? '-' : s.cpuPer100k.toFixed(3),
    s.copiesPerCore === null ? '-' : thousands(s.copiesPerCore),
    s.copiesPerWrite === null ? '-' : s.copiesPerWrite.toFixed(2),
    formatBytes(m.rssKib * 1024),
    String(m.drops.queueFull),
    s.allDelivered ? 'yes' : `no (${m.check.missing} missing, ${m.check.extra} extra, ${m.check.disorder} out of order` +
      (m.drops.duplicate + m.drops.rateLimited > 0 ? `; admission refused ${m.drops.duplicate} as duplicate, ${m.drops.rateLimited} over rate)` : ')'),
    `${msCell(m.latencyMs.p50)}/${msCell(m.latencyMs.p99)}/${msCell(m.latencyMs.max)}`,
    `${s.loadGeneratorPercent.toFixed(0)}%`,
    `${m.runQueueWindow.toFixed(2)} s`,
  ];
}

/** A Markdown table, one row per point. */
export function formatTable(rows: readonly string[][]): string {
  const all = [TABLE_HEADER, ...rows];
  const widths = TABLE_HEADER.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const line = (row: readonly string[]): string => `| ${row.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
  return [line(TABLE_HEADER), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** Senders held by the first worker, which runs at normal priority so that they send on time. */
export const SENDER_WORKER_DEVICES = 50;

/**
 * Device indices [first, first + count) per worker, and its nice: the first holds the first senders (up to
 * SENDER_WORKER_DEVICES) at nice 0, the others the rest of the devices, evenly, at nice 10. Senders are
 * devices 0 … S − 1, so with more than SENDER_WORKER_DEVICES of them the rest send from the other workers.
 */
export function workerShares(devices: number, senders: number, receiverWorkers: number): Array<{ first: number; count: number; nice: number }> {
  const inFirst = Math.min(senders, SENDER_WORKER_DEVICES);
  return [
    { first: 0, count: inFirst, nice: 0 },
    ...splitDevices(devices - inFirst, receiverWorkers).filter((share) => share.count > 0).map((share) => ({ first: inFirst + share.first, count: share.count, nice: 10 })),
  ];
}

/** The relay's configuration: fan-out held back by nothing but the relay, joins by nothing at all. */
export function relayIni(devices: number): string {
  return [
    '[server]', 'subnet = 10.77.0.0/16',
    '[limits]', `multicast_copies_per_second = ${COPIES_BUDGET}`, `multicast_per_device_per_second = ${PER_DEVICE_RATE}`, 'multicast_burst = 100000',
    'max_handshakes = 4096', 'max_handshakes_per_source = 4096', 'connections_per_source_per_second = 1000000', 'connection_burst_per_source = 1000000',
    'new_devices_per_minute = 1000000', 'new_device_burst = 1000000', `max_clients = ${devices + 16}`, `max_devices = ${devices * 2 + 16}`, '',
  ].join('\n');
}

