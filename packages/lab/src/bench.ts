/**
 * `sudo npm run bench`: one run, in the lab, on this machine, three paths between the same endpoints:
 *   - underlay: c (two NATs deep) → the server host srv, no tunnel: the limit of what the lab carries;
 *   - mnedc:    c → d behind the sibling NAT, every packet relayed by mnedcd-server on srv;
 *   - OpenVPN:  c → d the same way, OpenVPN 2.6 over TCP with client-to-client, server on srv.
 * Each path: ping RTT idle, iperf3 with one and with four streams in both directions (c sending, c
 * receiving), ping RTT during each four-stream run, ping RTT idle again after the transfers, and the CPU
 * time the tunnel's server and client processes used per GB moved. The tunnels run one at a time, so neither pays for the other's idle work.
 * Prints a table with the ratios mnedc/OpenVPN and mnedc/underlay and writes JSON to bench-results/
 * (a dated file and latest.json).
 *   options: --seconds N (per iperf3 run, default 10)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { Lab, REPO_ROOT, runCommand, UNDERLAY, type LabNodeName } from './lab';
import { cpuSeconds, iperfWhile, pingStats, type IperfResult, type PingResult } from './measure';
import { OpenVpn, OPENVPN_MTU, stopDaemons } from './openvpn';
import { Overlay, type Daemon } from './overlay';

type PathName = 'underlay' | 'mnedc' | 'openvpn';

/** The processes a tunnel costs: its relay and its two endpoints. */
interface TunnelProcesses {
  server: Daemon;
  clients: Daemon[];
}

interface Run {
  /** "1 stream, c sends", …: the direction is always seen from c, the endpoint that opens every connection. */
  label: string;
  iperf: IperfResult;
  /** Pings from c while this run's streams were busy (four-stream runs only). */
  loadedRtt?: PingResult;
  /** CPU seconds used during this run, absent for the underlay. */
  cpu?: { server: number; clients: number };
}

interface PathResult {
  path: PathName;
  from: string;
  to: string;
  idleRtt: PingResult;
  /** Idle again after the transfers, when V8 has optimised mnedc's packet path (and the machine is warm). */
  idleRttAfter: PingResult;
  runs: Run[];
  /** CPU seconds per GB received, over all runs of this path. */
  cpuPerGB?: { server: number; clients: number };
}

function argument(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  if (!Number.isFinite(value) || value < 2) throw new Error(`${name} wants a number of seconds ≥ 2`);
  return value;
}

async function cpuOf(processes: TunnelProcesses | undefined): Promise<{ server: number; clients: number } | undefined> {
  if (!processes) return undefined;
  const clients = await Promise.all(processes.clients.map((c) => cpuSeconds(c.pid())));
  return { server: await cpuSeconds(processes.server.pid()), clients: clients.reduce((a, b) => a + b, 0) };
}

const RUNS: ReadonlyArray<{ label: string; streams: number; reverse: boolean }> = [
  { label: '1 stream, c sends', streams: 1, reverse: false },
  { label: '1 stream, c receives', streams: 1, reverse: true },
  { label: '4 streams, c sends', streams: 4, reverse: false },
  { label: '4 streams, c receives', streams: 4, reverse: true },
];

async function measurePath(lab: Lab, name: PathName, to: LabNodeName, toIp: string, seconds: number, port: number,
  processes?: TunnelProcesses): Promise<PathResult> {
  process.stderr.write(`bench: ${name}: c → ${to} ${toIp}\n`);
  const idleRtt = await pingStats(lab, 'c', toIp, 100);
  const runs: Run[] = [];
  for (const [index, spec] of RUNS.entries()) {
    const before = await cpuOf(processes);
    // Loaded RTT only with four streams: enough to fill the path, and the pings keep to the last ~2 s of
    // slack so they end before the transfer does.
    const pingCount = Math.max(10, (seconds - 2) * 50);
    const { result, during } = await iperfWhile(lab, 'c', to, toIp, { seconds, port: port + index, streams: spec.streams, reverse: spec.reverse },
      () => (spec.streams > 1 ? pingStats(lab, 'c', toIp, pingCount) : Promise.resolve(undefined)));
    const after = await cpuOf(processes);
    const run: Run = { label: spec.label, iperf: result };
    if (during) run.loadedRtt = during;
    if (before && after) run.cpu = { server: after.server - before.server, clients: after.clients - before.clients };
    process.stderr.write(`bench: ${name}: ${spec.label}: ${(result.bitsPerSecond / 1e6).toFixed(0)} Mbit/s\n`);
    runs.push(run);
  }
  const idleRttAfter = await pingStats(lab, 'c', toIp, 100);
  const result: PathResult = { path: name, from: `c ${UNDERLAY.c}`, to: `${to} ${toIp}`, idleRtt, idleRttAfter, runs };
  if (processes) {
    const gb = runs.reduce((sum, r) => sum + r.iperf.bytes, 0) / 1e9;
    const sum = (key: 'server' | 'clients') => runs.reduce((total, r) => total + (r.cpu?.[key] ?? 0), 0);
    result.cpuPerGB = { server: sum('server') / gb, clients: sum('clients') / gb };
  }
  return result;
}

async function startMnedc(lab: Lab): Promise<Overlay> {
  // Only the endpoints OpenVPN gets too: the server and the two measured devices.
  const overlay = new Overlay(lab);
  await overlay.startServer();
  await Promise.all((['c', 'd'] as const).map((d) => overlay.startClient(d)));
  return overlay;
}

const fixed = (digits: number) => (value: number | undefined): string =>
  (value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits));

/** One row per metric, one column per path, then the two ratios. */
function table(results: Record<PathName, PathResult>): string[][] {
  const metric = (label: string, get: (r: PathResult) => number | undefined, digits: number, ratioDigits = 2): string[] => {
    const [u, m, o] = (['underlay', 'mnedc', 'openvpn'] as const).map((p) => get(results[p]));
    const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a / b);
    return [label, fixed(digits)(u), fixed(digits)(m), fixed(digits)(o), fixed(ratioDigits)(ratio(m, o)), fixed(ratioDigits)(ratio(m, u))];
  };
  const rtt = (p: PingResult | undefined) => (p && p.received > 0 ? p.avgMs : undefined);
  return [
    ['metric', 'underlay', 'mnedc', 'OpenVPN', 'mnedc/OpenVPN', 'mnedc/underlay'],
    ...RUNS.map((spec, i) => metric(`${spec.label}, Mbit/s`, (r) => r.runs[i]!.iperf.bitsPerSecond / 1e6, 0, 3)),
    metric('idle RTT, ms', (r) => rtt(r.idleRtt), 3),
    metric('idle RTT after the transfers, ms', (r) => rtt(r.idleRttAfter), 3),
    ...RUNS.flatMap((spec, i) => (spec.streams > 1 ? [metric(`RTT under ${spec.label}, ms`, (r) => rtt(r.runs[i]!.loadedRtt), 3)] : [])),
    // A tunnel that drops under load (its queues overflow) shows up here before it shows in the averages.
    metric('pings lost under load, %', (r) => {
      const loaded = r.runs.flatMap((run) => (run.loadedRtt ? [run.loadedRtt] : []));
      const sent = loaded.reduce((sum, p) => sum + p.sent, 0);
      return sent > 0 ? (100 * (sent - loaded.reduce((sum, p) => sum + p.received, 0))) / sent : undefined;
    }, 1),
    metric('TCP retransmits, all runs', (r) => r.runs.reduce((sum, run) => sum + run.iperf.retransmits, 0), 0),
    metric('server CPU s per GB', (r) => r.cpuPerGB?.server, 2),
    metric('clients CPU s per GB', (r) => r.cpuPerGB?.clients, 2),
  ];
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root for network namespaces (sudo npm run bench)\n');
    process.exit(2);
  }
  const seconds = argument('--seconds', 10);
  // process.exit runs the 'exit' handlers: the lab's (kills its processes, removes its namespaces) and
  // those removing the temporary directories; a signal's default action would skip them all.
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(signal, () => {
      process.stderr.write(`bench: ${signal}, tearing down\n`);
      process.exit(code);
    });
  }
  const revision = (await runCommand('git', ['-C', REPO_ROOT, 'describe', '--always', '--dirty'], 10_000)).stdout.trim() || 'unknown';
  const loadAtStart = loadavg();
  const lab = await Lab.create();
  let overlay: Overlay | undefined;
  let openvpn: OpenVpn | undefined;
  const disposeOverlay = (): void => overlay?.dispose();
  process.on('exit', disposeOverlay);
  try {
    const underlay = await measurePath(lab, 'underlay', 'srv', UNDERLAY.srv, seconds, 5301);

    overlay = await startMnedc(lab);
    const mnedcD = await overlay.overlayIp('d');
    const mnedc = await measurePath(lab, 'mnedc', 'd', mnedcD, seconds, 5311,
      { server: overlay.server, clients: [overlay.client('c'), overlay.client('d')] });
    await stopDaemons([overlay.client('c'), overlay.client('d'), overlay.server]);

    openvpn = await OpenVpn.start(lab, ['c', 'd']);
    const openvpnD = await openvpn.ip('d');
    const openvpnResult = await measurePath(lab, 'openvpn', 'd', openvpnD, seconds, 5321,
      { server: openvpn.server!, clients: [openvpn.clients.get('c')!, openvpn.clients.get('d')!] });
    const openvpnVersion = openvpn.version();
    const openvpnConfigs = openvpn.configs;
    await openvpn.stop();

    const results = { underlay, mnedc, openvpn: openvpnResult };
    const rows = table(results);
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    const text = rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
    const when = new Date().toISOString();
    const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
    const load = `load average ${loadAtStart[0]!.toFixed(2)} at start, ${loadavg()[0]!.toFixed(2)} at end`;
    process.stdout.write(
      `\nmnedc bench ${when}, mnedc ${revision}, ${openvpnVersion.split(' ').slice(0, 2).join(' ')}\n` +
      `${machine}; ${load}\n` +
      `${seconds} s per iperf3 run, TCP; both tunnels TLS 1.3 + AES-256-GCM, MTU ${OPENVPN_MTU}, relayed by srv;\n` +
      `underlay = c → srv ${UNDERLAY.srv} without a tunnel (d cannot be reached without a relay);\n` +
      `CPU = user + system time of the tunnel's server process and of its two client processes\n\n${text}\n`);
    const dir = path.join(REPO_ROOT, 'bench-results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `bench-${when.replace(/[:.]/g, '-')}.json`);
    const json = JSON.stringify({
      when, machine, revision, seconds, loadAverage: { start: loadAtStart, end: loadavg() },
      openvpn: { version: openvpnVersion, configs: openvpnConfigs },
      table: rows, results: [underlay, mnedc, openvpnResult],
    }, null, 2);
    writeFileSync(file, json);
    writeFileSync(path.join(dir, 'latest.json'), json);
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await openvpn?.stop();
    await lab.destroy();
    overlay?.dispose();
    process.removeListener('exit', disposeOverlay);
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
