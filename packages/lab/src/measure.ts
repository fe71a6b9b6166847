import { Daemon } from './overlay';
import type { Lab, LabNodeName } from './lab';

export interface IperfResult {
  bitsPerSecond: number;
  retransmits: number;
  seconds: number;
  streams: number;
}

/** iperf3 between two lab nodes, server started first and awaited by its own "listening" line. */
export async function iperf(lab: Lab, from: LabNodeName, to: LabNodeName, toIp: string,
  options: { seconds?: number; port?: number; streams?: number; reverse?: boolean } = {}): Promise<IperfResult> {
  const seconds = options.seconds ?? 5;
  const port = String(options.port ?? 5201);
  const streams = options.streams ?? 1;
  const server = new Daemon(`iperf3 -s on ${to}`, lab.spawn(to, ['iperf3', '-s', '-1', '--forceflush', '-p', port], { pipe: true }));
  try {
    await server.waitForRaw(/Server listening on/);
    const argv = ['iperf3', '-c', toIp, '-p', port, '-t', String(seconds), '-P', String(streams), '-J', '--connect-timeout', '3000'];
    if (options.reverse) argv.push('-R');
    const result = await lab.exec(from, argv, { timeoutMs: (seconds + 20) * 1000 });
    if (result.code !== 0) throw new Error(`iperf3 ${from}→${to} failed (${result.code}): ${result.stdout.slice(-400)}${result.stderr}`);
    const report = JSON.parse(result.stdout) as { end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } } };
    return { bitsPerSecond: report.end.sum_received.bits_per_second, retransmits: report.end.sum_sent.retransmits ?? 0, seconds, streams };
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
}

/** `count` pings at a 20 ms interval; RTT statistics as ping reports them. */
export async function pingStats(lab: Lab, from: LabNodeName, to: string, count = 50, size?: number): Promise<PingResult> {
  const argv = ['ping', '-q', '-n', '-c', String(count), '-i', '0.02', '-W', '2'];
  if (size !== undefined) argv.push('-s', String(size));
  const result = await lab.exec(from, [...argv, to], { timeoutMs: count * 100 + 10_000 });
  const packets = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\//.exec(result.stdout);
  return {
    sent: Number(packets?.[1] ?? count),
    received: Number(packets?.[2] ?? 0),
    minMs: Number(rtt?.[1] ?? NaN),
    avgMs: Number(rtt?.[2] ?? NaN),
    maxMs: Number(rtt?.[3] ?? NaN),
  };
}
