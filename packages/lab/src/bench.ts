/**
 * `sudo npm run bench`: one run, in the lab, on this machine. Measures iperf3 and ping RTT between the two
 * deepest devices through the overlay (c, two NATs deep, to d behind the sibling NAT: every packet is
 * relayed by the server) and over the direct underlay path (c → server host), prints a table with the
 * ratio and writes JSON to bench-results/.
 *   options: --seconds N (per iperf3 run, default 10)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { Lab, REPO_ROOT, UNDERLAY } from './lab';
import { iperf, pingStats, type IperfResult, type PingResult } from './measure';
import { Overlay } from './overlay';

interface PathResult {
  path: string;
  from: string;
  to: string;
  oneStream: IperfResult;
  fourStreams: IperfResult;
  idleRtt: PingResult;
  loadedRtt: PingResult;
}

function argument(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

async function measure(lab: Lab, name: string, to: 'd' | 'srv', toIp: string, seconds: number, port: number): Promise<PathResult> {
  const idleRtt = await pingStats(lab, 'c', toIp, 100);
  const oneStream = await iperf(lab, 'c', to, toIp, { seconds, port });
  // RTT under load: pings while a second iperf3 run saturates the path.
  const loading = iperf(lab, 'c', to, toIp, { seconds, port: port + 1, streams: 4 });
  const loadedRtt = await pingStats(lab, 'c', toIp, Math.max(10, Math.floor(seconds * 1000 / 20) - 50));
  const fourStreams = await loading;
  return { path: name, from: `c ${name === 'overlay' ? '(virtual)' : UNDERLAY.c}`, to: `${to} ${toIp}`, oneStream, fourStreams, idleRtt, loadedRtt };
}

const mbit = (r: IperfResult) => (r.bitsPerSecond / 1e6).toFixed(0);
const ms = (p: PingResult) => (p.received > 0 ? p.avgMs.toFixed(3) : 'lost');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root for network namespaces (sudo npm run bench)\n');
    process.exit(2);
  }
  const seconds = argument('--seconds', 10);
  const lab = await Lab.create();
  let overlay: Overlay | undefined;
  try {
    overlay = await Overlay.start(lab);
    const ips = await overlay.overlayIps();
    const underlay = await measure(lab, 'underlay', 'srv', UNDERLAY.srv, seconds, 5301);
    const relayed = await measure(lab, 'overlay', 'd', ips.d, seconds, 5311);
    const rows = [
      ['path', 'from → to', '1 stream Mbit/s', '4 streams Mbit/s', 'idle RTT ms', 'loaded RTT ms'],
      ...[underlay, relayed].map((r) => [r.path, `${r.from} → ${r.to}`, mbit(r.oneStream), mbit(r.fourStreams), ms(r.idleRtt), ms(r.loadedRtt)]),
      ['overlay/underlay', '', (relayed.oneStream.bitsPerSecond / underlay.oneStream.bitsPerSecond).toFixed(3),
        (relayed.fourStreams.bitsPerSecond / underlay.fourStreams.bitsPerSecond).toFixed(3),
        (relayed.idleRtt.avgMs / underlay.idleRtt.avgMs).toFixed(2), (relayed.loadedRtt.avgMs / underlay.loadedRtt.avgMs).toFixed(2)],
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    const text = rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
    const when = new Date().toISOString();
    const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
    process.stdout.write(`\nmnedc bench ${when} (${machine}, ${seconds} s per iperf3 run, TCP, MTU 1400 overlay)\n${text}\n`);
    const dir = path.join(REPO_ROOT, 'bench-results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `bench-${when.replace(/[:.]/g, '-')}.json`);
    const json = JSON.stringify({ when, machine, seconds, results: [underlay, relayed] }, null, 2);
    writeFileSync(file, json);
    writeFileSync(path.join(dir, 'latest.json'), json);
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await lab.destroy();
    overlay?.dispose();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
