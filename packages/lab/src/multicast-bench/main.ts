/**
 * `npm run bench:multicast -- [--devices N] [--senders S] [--pps P | --sweep C1,C2,…] [--seconds T] [--workers W] [--bytes B]`:
 * what multicast fan-out costs the relay, so `[limits] multicast_copies_per_second` rests on a measurement.
 *
 * The real mnedcd-server on loopback without a TUN (relay-process.ts), its limits raised so that nothing
 * but its own capacity holds the copies back (a budget of 10^8 copies/s, 100,000 packets/s per device);
 * N devices speaking the wire protocol (real TLS 1.3 and HELLO proofs), joined from worker processes; S of
 * them send distinct mDNS packets (B bytes, TTL 255, UDP 5353 → 224.0.0.251:5353, a unique mark in each)
 * at P packets/s each for T seconds, spread evenly in time, and every device counts what it gets: each
 * packet is a copy to each of the N − 1 others. --pps P runs one point; --sweep runs one per rate of
 * copies/s offered (P = copies / (S × (N − 1))), on the same relay and devices, one after the other.
 *
 * Per point: copies delivered per second (the devices' counts, and the relay's own counter: the `mdns`
 * entry of `mnedcctl stats --json`, read through the same control-socket call), the relay's CPU (utime +
 * stime of /proc/<pid>/stat) as a share of a core over the sending window and in seconds per 100,000
 * copies over the whole point (until the last copy arrived), its RSS, the drops (queueFull, rateLimited,
 * duplicate), whether every device got every packet exactly once and in order, the delivery latency, and
 * the load generator's own CPU (on a small machine it competes with the relay for the cores).
 *
 * Workers (workerShares): the first holds the senders (up to 50; they also receive) at normal priority so
 * the packets leave on time; the other devices are spread over the rest at nice 10, as the scale bench's
 * (they are other machines in life). The relay batches: a copy for a device whose socket is still busy
 * with the last write goes out with the next, so "copies per write()" (from /proc/<pid>/io) tells whether
 * a point measured copies one write each (sparse mDNS in life) or coalesced (a relay that fell behind).
 * Traffic is on loopback only; everything started here is killed on exit, failure, SIGINT and SIGTERM,
 * and the whole run has a deadline. A table on stdout, JSON in bench-results/multicast-<time>.json.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../lab';
import { clockTicksPerSecond, cpuSeconds } from '../measure';
import { RelayProcess } from '../relay-process';
import { formatBytes } from '../scale/stats';
import {
  formatTable, histogramPercentile, offeredCopies, parseMulticastArgs, relayIni, summarize, tableRow, thousands, workerShares,
  type MulticastBenchOptions, type PointMeasurement, type PointSummary,
} from './plan';
import type { WorkerRequest, SendResult, CheckResult } from './worker';
import { IpcWorker } from '../ipc-worker';

// ---------------------------------------------------------------------------------------------------
// The main process: the relay, the workers, the points.

class BenchWorker extends IpcWorker<WorkerRequest> {
  /** `nice`: the receivers' workers run at nice 10, so the relay has first claim on a core. */
  static spawn(name: string, nice: number): BenchWorker {
    const argv = [process.execPath, '--max-old-space-size=2048', path.join(__dirname, 'worker.js')];
    const child = spawn(nice > 0 ? 'nice' : argv[0]!, nice > 0 ? ['-n', String(nice), ...argv] : argv.slice(1),
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new BenchWorker(child, name);
  }

  /** `exec nice node` keeps the PID: this is the worker's node. */
  pid(): number {
    return this.child.pid!;
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

interface GroupStats { group: string; received: number; delivered: number; rateLimited: number; duplicate: number; queueFull: number }
interface RelayStats { multicast?: GroupStats[]; totals: { drops: Record<string, number> } }

/**
 * One JSON-RPC call on the relay's control socket: what `mnedcctl stats --json` prints is the answer to
 * "stats". Called directly, so reading it mid-run costs no node start-up on the cores being measured.
 */
function controlCall<T>(socketPath: string, method: string, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let buffer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${method} on ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (error: Error | null, value?: T): void => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value as T);
    };
    socket.once('connect', () => socket.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, method })}\n`));
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const reply = JSON.parse(line) as { id?: unknown; result?: T; error?: { message: string } };
        if (reply.id !== 1) continue;
        finish(reply.error ? new Error(`${method}: ${reply.error.message}`) : null, reply.result);
        return;
      }
    });
    socket.once('error', (error) => finish(error));
  });
}

async function mdnsStats(relay: RelayProcess): Promise<{ at: number; group: GroupStats; drops: Record<string, number> }> {
  const stats = await controlCall<RelayStats>(relay.socket, 'stats');
  const group = stats.multicast?.find((g) => g.group === 'mdns');
  if (!group) throw new Error(`the relay carries no mDNS (stats: ${JSON.stringify(stats.multicast)})`);
  return { at: Date.now(), group, drops: stats.totals.drops };
}

/** What /proc says of the relay at one moment: CPU s in user space and in the kernel, s waited for a core, write syscalls. */
interface RelaySample { user: number; sys: number; waited: number; writes: number }

function sampleRelay(pid: number, hz: number): RelaySample {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const after = fields.slice(fields.lastIndexOf(')') + 2).split(' ');
  // after[0] is field 3 (state): utime (14) and stime (15) are after[11] and after[12].
  const io = /^syscw:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return {
    user: Number(after[11]) / hz, sys: Number(after[12]) / hz,
    waited: Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9,
    writes: io ? Number(io[1]) : 0,
  };
}

const cpuOf = (sample: RelaySample): number => sample.user + sample.sys;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

const SETTLE_MS = 20_000;
const WARMUP_SECONDS = 3;
const STALL_MS = 3_000;
const IDLE_SECONDS = 3;

type Say = (line: string) => void;

interface Run {
  relay: RelayProcess;
  workers: BenchWorker[];
  options: MulticastBenchOptions;
  /** USER_HZ, the unit of /proc/<pid>/stat. */
  hz: number;
}

async function countAll(workers: readonly BenchWorker[]): Promise<number> {
  return (await Promise.all(workers.map((w) => w.call<number>({ cmd: 'count' })))).reduce((a, b) => a + b, 0);
}

async function workersCpu(workers: readonly BenchWorker[]): Promise<number> {
  return (await Promise.all(workers.map((w) => cpuSeconds(w.pid())))).reduce((a, b) => a + b, 0);
}

/** One point: S senders at `pps` each for `seconds`, then until the last copy arrived (or deliveries stalled). */
async function runPoint(run: Run, pointRound: number, pps: number, seconds: number): Promise<{ measurement: PointMeasurement; notes: string[] }> {
  const { relay, workers, options, hz } = run;
  const { devices: n, senders, bytes } = options;
  const pid = relay.daemon.pid();
  const notes: string[] = [];
  const closed = (await Promise.all(workers.map((w) => w.call<number>({ cmd: 'reset', round: pointRound, senders })))).reduce((a, b) => a + b, 0);
  if (closed > 0) notes.push(`${closed} devices' connections had closed before this point`);

  const stats0 = await mdnsStats(relay);
  const startAt = Date.now() + 200;
  const relay0 = sampleRelay(pid, hz);
  const gen0 = await workersCpu(workers);
  // Each worker sends for the senders it holds.
  const sending = Promise.all(workers.map((w) => w.call<SendResult>({ cmd: 'send', round: pointRound, senders, pps, seconds, startAt, bytes }, (seconds + 60) * 1000)));
  let rssKib = relay.rssKib();
  const endAt = startAt + seconds * 1000;
  while (Date.now() < endAt) {
    await sleep(Math.min(500, endAt - Date.now()));
    rssKib = Math.max(rssKib, relay.rssKib());
    const dead = workers.find((w) => w.exited);
    if (dead) throw new Error(`${dead.name} exited during the point`);
  }
  // The window's end, each read as soon as the one before: CPU first (cheapest), the counts, the relay's counter.
  const relay1 = sampleRelay(pid, hz);
  const gen1 = await workersCpu(workers);
  const windowSeconds = (Date.now() - startAt) / 1000;
  const deviceCopiesWindow = await countAll(workers);
  const stats1 = await mdnsStats(relay);

  const sendResults = await sending;
  const sendResult: SendResult = {
    sent: Array.from({ length: senders }, (_, s) => sendResults.reduce((sum, r) => sum + r.sent[s]!, 0)),
    doneAt: Math.max(...sendResults.map((r) => r.doneAt)),
  };
  const sent = sendResult.sent.reduce((a, b) => a + b, 0);
  const expected = sent * (n - 1);
  // Until every copy is in, or no more came for STALL_MS, or SETTLE_MS passed.
  let deviceCopies = await countAll(workers);
  let lastChange = Date.now();
  const settleEnd = Date.now() + SETTLE_MS;
  while (deviceCopies < expected && Date.now() - lastChange < STALL_MS && Date.now() < settleEnd) {
    await sleep(200);
    const count = await countAll(workers);
    if (count !== deviceCopies) lastChange = Date.now();
    deviceCopies = count;
  }
  if (deviceCopies < expected) notes.push(`${expected - deviceCopies} of ${expected} copies had not arrived ${((Date.now() - endAt) / 1000).toFixed(1)} s after the window`);
  const stats2 = await mdnsStats(relay);
  const relay2 = sampleRelay(pid, hz);
  const checks = await Promise.all(workers.map((w) => w.call<CheckResult>({ cmd: 'check', sent: sendResult.sent })));

  const latencyEntries = checks.flatMap((c) => c.latency);
  const d = (field: keyof GroupStats, a: { group: GroupStats }, b: { group: GroupStats }): number => (b.group[field] as number) - (a.group[field] as number);
  if (d('received', stats0, stats2) !== sent) notes.push(`the relay took in ${d('received', stats0, stats2)} mDNS packets, the senders sent ${sent}`);
  for (const [reason, count] of Object.entries(stats2.drops)) {
    const before = stats0.drops[reason] ?? 0;
    if (count > before) notes.push(`relay drops (${reason}): ${count - before}`);
  }
  const stale = checks.reduce((a, c) => a + c.stale, 0);
  if (stale > 0) notes.push(`${stale} packets not of this point (late, or not the bench's)`);
  const measurement: PointMeasurement = {
    devices: n, senders, pps, seconds: windowSeconds,
    sent, sendSeconds: (sendResult.doneAt - startAt) / 1000,
    deviceCopiesWindow, deviceCopies,
    statsCopiesWindow: d('delivered', stats0, stats1), statsSeconds: (stats1.at - startAt) / 1000, statsCopies: d('delivered', stats0, stats2),
    cpuWindow: cpuOf(relay1) - cpuOf(relay0), cpuPoint: cpuOf(relay2) - cpuOf(relay0), sysWindow: relay1.sys - relay0.sys,
    runQueueWindow: relay1.waited - relay0.waited, writesPoint: relay2.writes - relay0.writes, workersCpuWindow: gen1 - gen0, rssKib,
    drops: { queueFull: d('queueFull', stats0, stats2), rateLimited: d('rateLimited', stats0, stats2), duplicate: d('duplicate', stats0, stats2) },
    check: {
      missing: checks.reduce((a, c) => a + c.missing, 0), extra: checks.reduce((a, c) => a + c.extra, 0),
      disorder: checks.reduce((a, c) => a + c.disorder, 0), completeDevices: checks.reduce((a, c) => a + c.completeDevices, 0), stale,
    },
    latencyMs: { p50: histogramPercentile(latencyEntries, 50), p99: histogramPercentile(latencyEntries, 99), max: checks.length ? Math.max(...checks.map((c) => c.maxLatencyMs)) : null },
  };
  if (measurement.drops.rateLimited > 0 || measurement.drops.duplicate > 0) {
    notes.push(`admission dropped ${measurement.drops.rateLimited} (rateLimited) and ${measurement.drops.duplicate} (duplicate): the bench's limits should have let all through`);
  }
  return { measurement, notes };
}

/** The whole run's deadline: joining, the idle measurement, and each point with its settling. */
function deadlineMs(options: MulticastBenchOptions): number {
  return 120_000 + options.devices * 50 + (options.pps.length + 1) * (options.seconds * 1000 + SETTLE_MS + 30_000);
}

async function main(): Promise<void> {
  let options: MulticastBenchOptions;
  try {
    options = parseMulticastArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench:multicast: ${(error as Error).message}\n`);
    process.exit(2);
  }
  const say: Say = (line) => process.stderr.write(`bench:multicast: ${line}\n`);
  const { devices: n, senders } = options;
  const load = loadavg();
  let relay: RelayProcess | null = null;
  const workers: BenchWorker[] = [];
  // On a signal or the deadline: everything started here dies at once (the relay also by relay-process.ts's exit hook).
  const killAll = (): void => {
    workers.forEach((w) => w.kill());
    if (relay) {
      relay.daemon.child.kill('SIGKILL');
      rmSync(relay.dir, { recursive: true, force: true });
    }
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      killAll();
      process.exit(130);
    });
  }
  const deadline = setTimeout(() => {
    say(`over the run's deadline (${deadlineMs(options) / 1000} s): stopping`);
    killAll();
    process.exit(1);
  }, deadlineMs(options));

  try {
    const started = await RelayProcess.start(relayIni(n));
    relay = started;
    const shares = workerShares(n, senders, options.workers);
    shares.forEach((share, i) => workers.push(BenchWorker.spawn(i === 0 ? 'sender worker' : `receiver worker ${i}`, share.nice)));
    say(`relay pid ${started.daemon.pid()} on 127.0.0.1:${started.port}; ${n} devices over ${shares.length} workers: ` +
      shares.map((share) => `${share.first}-${share.first + share.count - 1} at nice ${share.nice}`).join(', ') + ` (devices 0-${senders - 1} send)`);

    const t0 = Date.now();
    const joins = await Promise.all(shares.map((share, i) => workers[i]!.call<{ joined: number; failures: string[] }>(
      { cmd: 'join', first: share.first, count: share.count, port: started.port, join: started.join }, 120_000 + n * 50)));
    const joined = joins.reduce((a, j) => a + j.joined, 0);
    if (joined !== n) throw new Error(`only ${joined} of ${n} devices joined: ${joins.flatMap((j) => j.failures).slice(0, 5).join('; ')}`);
    say(`${n} devices joined in ${((Date.now() - t0) / 1000).toFixed(1)} s; relay RSS ${formatBytes(relay.rssKib() * 1024)}`);

    await sleep(1000);
    const hz = await clockTicksPerSecond();
    const idle0 = sampleRelay(started.daemon.pid(), hz);
    await sleep(IDLE_SECONDS * 1000);
    const idlePercent = (cpuOf(sampleRelay(started.daemon.pid(), hz)) - cpuOf(idle0)) / IDLE_SECONDS * 100;
    const idleRssKib = started.rssKib();
    say(`relay idle with ${n} devices: ${idlePercent.toFixed(1)}% of a core, RSS ${formatBytes(idleRssKib * 1024)}`);

    const run: Run = { relay: started, workers, options, hz };
    // Unreported: the relay's fan-out path and the workers' receiving path compiled by V8 before anything is measured.
    say(`warm-up: ${WARMUP_SECONDS} s at the first point's rate`);
    await runPoint(run, 1, options.pps[0]!, WARMUP_SECONDS);
    await sleep(1000);
    const points: Array<{ measurement: PointMeasurement; summary: PointSummary; notes: string[] }> = [];
    for (const [i, pps] of options.pps.entries()) {
      say(`point ${i + 1}/${options.pps.length}: ${senders} senders × ${Number(pps.toFixed(2))} packets/s → ${thousands(offeredCopies(senders, pps, n))} copies/s offered for ${options.seconds} s`);
      const { measurement, notes } = await runPoint(run, i + 2, pps, options.seconds);
      const summary = summarize(measurement);
      points.push({ measurement, summary, notes });
      say(`  delivered ${thousands(summary.deliveredPerSecond)}/s (stats ${thousands(summary.statsPerSecond)}/s), relay ${summary.cpuPercent.toFixed(0)}% of a core, ` +
        `${summary.cpuPer100k?.toFixed(3) ?? '-'} CPU s per 100k copies, every packet to every device: ${summary.allDelivered ? 'yes' : 'no'}` +
        (summary.saturated.length ? `; saturated: ${summary.saturated.join(', ')}` : ''));
      for (const note of notes) say(`  note: ${note}`);
      await sleep(1000);
    }

    process.stdout.write(`${formatTable(points.map((p) => tableRow(p.measurement, p.summary)))}\n`);
    const kept = points.filter((p) => p.summary.saturated.length === 0);
    const first = points.find((p) => p.summary.saturated.length > 0);
    const costs = points.map((p) => p.summary.cpuPer100k).filter((c): c is number => c !== null);
    process.stdout.write(`${n} devices (${n - 1} copies per packet), ${senders} senders, ${options.bytes}-byte packets, ${options.seconds} s windows; ` +
      `${cpus().length} cores, load average ${load.map((l) => l.toFixed(2)).join(' ')} at the start, ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end; ` +
      `relay idle ${idlePercent.toFixed(1)}% of a core, RSS ${formatBytes(idleRssKib * 1024)}\n`);
    process.stdout.write(`the relay kept up to ${kept.length ? thousands(Math.max(...kept.map((p) => p.summary.offeredPerSecond))) : 'none of the'} copies/s offered; ` +
      (first ? `saturated at ${thousands(first.summary.offeredPerSecond)}: ${first.summary.saturated.join(', ')}` : 'no point saturated it') + '\n');
    if (costs.length) {
      process.stdout.write(`relay CPU per 100,000 copies: ${Math.min(...costs).toFixed(3)}–${Math.max(...costs).toFixed(3)} s over all points\n`);
    }
    // The cost that matters for a budget: copies each in a write of its own, as sparse traffic makes them.
    const single = points.filter((p) => p.summary.copiesPerWrite !== null && p.summary.copiesPerWrite < 1.1 && p.summary.cpuPer100k !== null)
      .map((p) => p.summary.cpuPer100k!);
    if (single.length) {
      const low = Math.min(...single);
      const high = Math.max(...single);
      process.stdout.write(`one copy per write(): ${(low * 10).toFixed(1)}–${(high * 10).toFixed(1)} µs of relay CPU per copy, so 100,000 copies/s would take ` +
        `${(low * 100).toFixed(0)}–${(high * 100).toFixed(0)}% of a core, and one core makes ${thousands(100_000 / high)}–${thousands(100_000 / low)} copies/s\n`);
    }
    for (const [i, p] of points.entries()) for (const note of p.notes) process.stdout.write(`note (point ${i + 1}): ${note}\n`);

    const dir = path.join(REPO_ROOT, 'bench-results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `multicast-${n}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({
      options, cores: cpus().length, node: process.version, loadavg: { start: load, end: loadavg() }, idle: { cpuPercent: idlePercent, rssKib: idleRssKib }, points,
    }, null, 2)}\n`);
    process.stdout.write(`JSON: ${path.relative(process.cwd(), file)}\n`);
  } finally {
    clearTimeout(deadline);
    await Promise.allSettled(workers.map((w) => w.call({ cmd: 'stop' }, 3000)));
    workers.forEach((w) => w.kill());
    await relay?.dispose();
  }
}

if (require.main === module) {
  main().catch((error: Error) => {
    process.stderr.write(`bench:multicast: ${error.stack ?? error.message}\n`);
    process.exit(1);
  });
}

