import { readFileSync } from 'node:fs';
import { Daemon } from './overlay';
import { runCommand, type Lab, type LabNodeName } from './lab';

export interface IperfResult {
  bitsPerSecond: number;
  /** Payload bytes the receiving end got. */
  bytes: number;
  retransmits: number;
  seconds: number;
  streams: number;
  /** true: the `to` node sent and `from` received (iperf3 -R). */
  reverse: boolean;
}

export interface IperfOptions {
  seconds?: number;
  port?: number;
  streams?: number;
  /** Data flows to → from (iperf3 -R): the connection is still opened by `from`, so it crosses NATs upwards. */
  reverse?: boolean;
}

/** A one-second interval report, e.g. "[SUM]   1.00-2.00   sec   107 MBytes   897 Mbits/sec". */
const INTERVAL_LINE = /\d+\.\d+-\d+\.\d+\s+sec\s/;

/** iperf3 between two lab nodes, server started first and awaited by its own "listening" line. */
export async function iperf(lab: Lab, from: LabNodeName, to: LabNodeName, toIp: string, options: IperfOptions = {}): Promise<IperfResult> {
  return (await iperfWhile(lab, from, to, toIp, options, async () => undefined)).result;
}

/**
 * iperf3 as above; `during` runs once the server has reported its first one-second interval (the streams
 * are connected and past slow start), so what it measures happens under load. Its result is returned with
 * the iperf3 result. If iperf3 ends without reporting an interval, `during` does not run and this throws.
 */
export async function iperfWhile<T>(lab: Lab, from: LabNodeName, to: LabNodeName, toIp: string, options: IperfOptions,
  during: () => Promise<T>): Promise<{ result: IperfResult; during: T }> {
  const seconds = options.seconds ?? 5;
  const port = String(options.port ?? 5201);
  const streams = options.streams ?? 1;
  const reverse = options.reverse ?? false;
  const server = new Daemon(`iperf3 -s on ${to}`, lab.spawn(to, ['iperf3', '-s', '-1', '--forceflush', '-p', port], { pipe: true }));
  try {
    await server.waitForRaw(/Server listening on/);
    const argv = ['iperf3', '-c', toIp, '-p', port, '-t', String(seconds), '-P', String(streams), '-J', '--connect-timeout', '3000'];
    if (reverse) argv.push('-R');
    const client = lab.exec(from, argv, { timeoutMs: (seconds + 20) * 1000 });
    const loaded = await Promise.race([
      server.waitForRaw(INTERVAL_LINE, (seconds + 20) * 1000).then(() => true, () => false),
      client.then(() => false, () => false),
    ]);
    const duringResult = loaded ? await during() : undefined;
    const result = await client;
    const direction = reverse ? `${to}→${from}` : `${from}→${to}`;
    if (result.code !== 0) throw new Error(`iperf3 ${direction} failed (${result.code}): ${result.stdout.slice(-400)}${result.stderr}`);
    if (!loaded) throw new Error(`iperf3 ${direction} ended without an interval report from its server:\n${server.tail()}`);
    const report = JSON.parse(result.stdout) as {
      end: { sum_received: { bits_per_second: number; bytes: number }; sum_sent: { retransmits?: number } };
    };
    return {
      result: {
        bitsPerSecond: report.end.sum_received.bits_per_second,
        bytes: report.end.sum_received.bytes,
        retransmits: report.end.sum_sent.retransmits ?? 0,
        seconds,
        streams,
        reverse,
      },
      during: duringResult as T,
    };
  } finally {
    await server.waitExit(5_000).catch(() => server.signal('SIGKILL'));
  }
}

export interface PingResult {
  sent: number;
  received: number;
  minMs: number;
  avgMs: number;
  maxMs: number;
  mdevMs: number;
}

/** `count` pings at a 20 ms interval; RTT statistics as ping reports them. */
export async function pingStats(lab: Lab, from: LabNodeName, to: string, count = 50, size?: number): Promise<PingResult> {
  const argv = ['ping', '-q', '-n', '-c', String(count), '-i', '0.02', '-W', '2'];
  if (size !== undefined) argv.push('-s', String(size));
  const result = await lab.exec(from, [...argv, to], { timeoutMs: count * 100 + 10_000 });
  const packets = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(result.stdout);
  return {
    sent: Number(packets?.[1] ?? count),
    received: Number(packets?.[2] ?? 0),
    minMs: Number(rtt?.[1] ?? NaN),
    avgMs: Number(rtt?.[2] ?? NaN),
    maxMs: Number(rtt?.[3] ?? NaN),
    mdevMs: Number(rtt?.[4] ?? NaN),
  };
}

/**
 * User + system CPU time of a process and all its threads, in clock ticks, from the text of
 * /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses, hence the last ")".
 */
export function parseProcStatTicks(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`unexpected /proc/<pid>/stat: ${stat.slice(0, 200)}`);
  return utime + stime;
}

let ticksPerSecond: number | undefined;

/** USER_HZ: the unit of /proc/<pid>/stat times (Node has no sysconf). */
export async function clockTicksPerSecond(): Promise<number> {
  if (ticksPerSecond === undefined) {
    const result = await runCommand('getconf', ['CLK_TCK'], 10_000);
    const value = Number(result.stdout.trim());
    ticksPerSecond = result.code === 0 && value > 0 ? value : 100;
  }
  return ticksPerSecond;
}

/**
 * CPU seconds (user + system, all threads) a process has used so far. Throws if it is gone, so a daemon
 * that died during a measurement is not silently counted as idle.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  const hz = await clockTicksPerSecond();
  return parseProcStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) / hz;
}
