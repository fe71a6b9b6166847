/**
 * Where an idle ping's round trip goes. c pings d slowly, through one tunnel at a time (mnedc, then
 * OpenVPN), while the kernel records the syscalls of the tunnel's three processes. Then it prints, per
 * process, how long each wake-up ran:
 *   - until it passed the packet on (wake → write);
 *   - until it slept again.
 * A round trip crosses six such wake-ups: c, srv and d going out, d, srv and c coming back.
 *   node tools/perf/dist/src/hop-trace.js [--interval S (0.2)] [--count N (20)] [--warm-up S (0)]
 * --warm-up runs iperf3 through the tunnel first, so that V8 has optimised mnedc's packet path.
 * Needs root and x86_64 (ftrace.ts knows x86_64's syscall numbers).
 *
 * Why tracefs rather than tcpdump on every hop: the trace goes to the kernel's ring buffer and wakes no
 * process per packet. Six tcpdumps wake on every packet and keep the CPUs warm, which hides the cost being
 * looked for: with them running both tunnels measure the same.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { iperf, Lab, OpenVpn, Overlay, runCommand, stopDaemons, type Daemon } from '@mnedc/lab';
import { median, parseSyscalls, wakes } from './ftrace';

const TRACEFS = '/sys/kernel/tracing';

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} wants a number ≥ 0`);
  return value;
}

/** Mounts tracefs if it is not there; returns whether this process mounted it (and so unmounts it). */
async function ensureTracefs(): Promise<boolean> {
  if (existsSync(`${TRACEFS}/trace`)) return false;
  const mounted = await runCommand('mount', ['-t', 'tracefs', 'nodev', TRACEFS]);
  if (mounted.code !== 0) throw new Error(`cannot mount tracefs on ${TRACEFS}: ${mounted.stderr.trim()}`);
  return true;
}

const tracefs = (file: string, value: string): void => writeFileSync(`${TRACEFS}/${file}`, `${value}\n`);

/** Tracing off, no events selected, the buffer emptied: also run at exit, should a signal end the trace. */
function resetTracing(): void {
  tracefs('tracing_on', '0');
  tracefs('set_event', '');
  tracefs('set_event_pid', '');
  tracefs('trace', '');
}

/** The syscalls of `pids` while `work` runs, as tracefs' text. */
async function traceSyscalls(pids: readonly number[], work: () => Promise<void>): Promise<string> {
  resetTracing();
  process.on('exit', resetTracing);
  try {
    tracefs('buffer_size_kb', '8192');
    tracefs('set_event_pid', pids.join(' '));
    tracefs('set_event', 'raw_syscalls:sys_enter raw_syscalls:sys_exit');
    tracefs('tracing_on', '1');
    await work();
    tracefs('tracing_on', '0');
    return readFileSync(`${TRACEFS}/trace`, 'utf8');
  } finally {
    resetTracing();
    process.removeListener('exit', resetTracing);
  }
}

interface Row {
  tunnel: string;
  process: string;
  wakes: number;
  toWriteUs?: number;
  busyUs?: number;
}

async function measure(lab: Lab, tunnel: string, ip: string, daemons: Record<string, Daemon>, interval: number, count: number):
  Promise<{ rows: Row[]; rtt: string }> {
  const pids = Object.fromEntries(Object.entries(daemons).map(([name, d]) => [name, d.pid()]));
  const ping = ['ping', '-n', '-c', String(count), '-i', String(interval), ip];
  // A few pings first: ARP, first-packet paths and the like are not what is measured.
  await lab.exec('c', ['ping', '-n', '-c', '3', '-i', String(interval), ip]);
  let output = '';
  const text = await traceSyscalls(Object.values(pids), async () => {
    output = (await lab.exec('c', ping, { timeoutMs: (count * interval + 10) * 1000 })).stdout;
  });
  const all = wakes(parseSyscalls(text), Object.values(pids));
  const rows = Object.entries(pids).map(([name, pid]): Row => {
    const mine = all.filter((w) => w.pid === pid && w.toWrite !== undefined);
    const us = (v: number | undefined) => (v === undefined ? undefined : v * 1e6);
    return { tunnel, process: name, wakes: mine.length, toWriteUs: us(median(mine.map((w) => w.toWrite!))), busyUs: us(median(mine.map((w) => w.busy))) };
  });
  const times = [...output.matchAll(/time=([\d.]+)/g)].map((m) => Number(m[1]));
  const rtt = `${tunnel}: ${times.length}/${count} replies, RTT p50 ${median(times)?.toFixed(3) ?? '-'} ms`;
  return { rows, rtt };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, tracefs)');
  if (process.arch !== 'x64') throw new Error(`knows x86_64 syscall numbers only, this is ${process.arch}`);
  const interval = option('--interval', 0.2);
  const count = Math.max(1, Math.round(option('--count', 20)));
  const warmUp = option('--warm-up', 0);
  // iperf3 needs a couple of seconds to be past slow start.
  const warmUpSeconds = warmUp > 0 ? Math.max(2, warmUp) : 0;
  const mountedHere = await ensureTracefs();
  let lab: Lab | undefined;
  let overlay: Overlay | undefined;
  let openvpn: OpenVpn | undefined;
  try {
    lab = await Lab.create();
    const rows: Row[] = [];
    const rtts: string[] = [];
    overlay = new Overlay(lab);
    await overlay.startServer();
    await Promise.all((['c', 'd'] as const).map((d) => overlay!.startClient(d)));
    const mnedcD = await overlay.overlayIp('d');
    if (warmUpSeconds > 0) await iperf(lab, 'c', 'd', mnedcD, { seconds: warmUpSeconds });
    const mnedc = await measure(lab, 'mnedc', mnedcD, { c: overlay.client('c'), srv: overlay.server, d: overlay.client('d') }, interval, count);
    rows.push(...mnedc.rows);
    rtts.push(mnedc.rtt);
    await stopDaemons([overlay.client('c'), overlay.client('d'), overlay.server]);

    openvpn = await OpenVpn.start(lab, ['c', 'd']);
    const openvpnD = await openvpn.ip('d');
    const vpn = await measure(lab, 'OpenVPN', openvpnD, { c: openvpn.clients.get('c')!, srv: openvpn.server!, d: openvpn.clients.get('d')! }, interval, count);
    rows.push(...vpn.rows);
    rtts.push(vpn.rtt);

    const cell = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(0)).padStart(10);
    process.stdout.write(
      `hop-trace: c pings d, ${count} pings ${interval} s apart${warmUpSeconds > 0 ? `, after ${warmUpSeconds} s of iperf3 through mnedc` : ''}.\n` +
      'Per wake-up of each process that passed a packet on, median µs:\n' +
      `${'tunnel'.padEnd(8)} ${'process'.padEnd(7)} ${'wakes'.padStart(5)} ${'wake→write'.padStart(10)} ${'wake→sleep'.padStart(10)}\n` +
      rows.map((r) => `${r.tunnel.padEnd(8)} ${r.process.padEnd(7)} ${String(r.wakes).padStart(5)} ${cell(r.toWriteUs)} ${cell(r.busyUs)}`).join('\n') +
      `\n${rtts.join('\n')}\n`);
  } finally {
    await openvpn?.stop();
    overlay?.dispose();
    await lab?.destroy();
    if (mountedHere) await runCommand('umount', [TRACEFS]);
  }
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`hop-trace failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
