/**
 * What the relay's memory is made of, for sizing the units' MemoryHigh= and MemoryMax= (README: Sizing
 * MemoryMax). Runs the real mnedcd-server of this tree on loopback in a private network namespace and drives
 * it with real devices (TLS 1.3, signed HELLO, pings answered): idle, with --sessions devices connected,
 * then with --stalled of them no longer reading while another device floods them, so that their send queues
 * fill. At each stage it prints the server's RSS, its threads and the kernel's buffers of its connections
 * (`ss -tm`: socket memory is charged to the service's cgroup too).
 *   node test/dist/system/relay-memory.js [--sessions 1000] [--stalled 50] [--queue-kib 2048] [--pin]
 * --pin floods the hostile way: each tiny packet for a stalled device shares its TLS record only with a
 * spoofed (dropped) filler packet, so every queued 32-byte frame keeps a whole received record alive.
 * Root only (unshare). The namespace ends with the run; nothing reaches another one.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { encodeFrame, FrameType } from '@mnedc/protocol';
import { ipPacket, RelayProcess, WireClient } from '@mnedc/lab';

const NAMESPACE_ENV = 'MNEDC_RELAY_MEMORY_NETNS';
const PORT = 3334;

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name}: ${process.argv[index + 1]} is not a count`);
  return value;
}

interface Sample {
  rssKib: number;
  anonKib: number;
  threads: number;
  /** The server's connections: receive + send queue + forward-allocated kernel memory, in KiB. */
  socketKib: number;
}

function sample(pid: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const ss = spawnSync('ss', ['-tmnH', 'state', 'established', `( sport = :${PORT} )`], { encoding: 'utf8' });
  let socketBytes = 0;
  for (const match of ss.stdout.matchAll(/skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f(\d+),w(\d+)/g)) {
    socketBytes += Number(match[1]) + Number(match[2]) + Number(match[3]);
  }
  return { rssKib: field('VmRSS'), anonKib: field('RssAnon'), threads: readdirSync(`/proc/${pid}/task`).length, socketKib: socketBytes / 1024 };
}

/** The highest of samples every 500 ms over `ms`: a cgroup limit has to hold the peaks, not the average. */
async function peak(pid: number, ms: number): Promise<Sample> {
  const samples = [sample(pid)];
  for (let waited = 0; waited < ms; waited += 500) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    samples.push(sample(pid));
  }
  const most = (key: keyof Sample) => Math.max(...samples.map((s) => s[key]));
  return { rssKib: most('rssKib'), anonKib: most('anonKib'), threads: most('threads'), socketKib: most('socketKib') };
}

/** Sends packets from `from` to the stalled devices, round robin, until the relay drops for every one of them. */
async function flood(relay: RelayProcess, from: WireClient, targets: WireClient[], pin: boolean): Promise<void> {
  const targetIps = new Set(targets.map((t) => t.welcome!.ip));
  const frames = targets.map((t) => pin
    ? Buffer.concat([encodeFrame(FrameType.Data, ipPacket(from.ip, t.ip, Buffer.alloc(8))), encodeFrame(FrameType.Data, ipPacket(from.ip + 1, t.ip, Buffer.alloc(15980)))])
    : encodeFrame(FrameType.Data, ipPacket(from.ip, t.ip, Buffer.alloc(1380))));
  let stop = false;
  const pump = async () => {
    for (let i = 0; !stop; i++) {
      if (!from.socket.write(frames[i % frames.length]!)) {
        await from.drained();
        if (from.closed) throw new Error('the relay closed the flooding device');
      }
    }
  };
  const pumping = pump();
  const deadline = Date.now() + 120_000;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const peers = (await relay.ctl(['peers', '--json'])).json as Array<{ ip: string; missed: number }>;
    const full = peers.filter((p) => targetIps.has(p.ip) && p.missed > 0);
    if (full.length === targets.length) break;
    if (Date.now() > deadline) throw new Error(`after 120 s only ${full.length} of ${targets.length} send queues are full`);
  }
  stop = true;
  await pumping;
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

async function main(): Promise<void> {
  const sessions = option('--sessions', 1000);
  const stalledCount = Math.min(option('--stalled', 50), Math.max(0, sessions - 1));
  const queueKib = option('--queue-kib', 2048);
  // Limits opened up: every device comes from 127.0.0.1 and is new; stalled devices answer no pings.
  const relay = await RelayProcess.start(`[server]\nlisten = 127.0.0.1:${PORT}\nsubnet = 10.77.0.0/16\nsend_queue_kib = ${queueKib}\n` +
    'dead_after_ms = 600000\n[limits]\nmax_handshakes = 100000\nmax_handshakes_per_source = 100000\n' +
    'connections_per_source_per_second = 100000\nconnection_burst_per_source = 100000\nnew_devices_per_minute = 1000000\nnew_device_burst = 1000000\n');
  try {
    const pid = relay.daemon.pid();
    const report: Array<[string, Sample]> = [];
    report.push(['idle, no device', await peak(pid, 3000)]);

    const devices: WireClient[] = [];
    for (let i = 0; i < sessions; i += 50) {
      devices.push(...await Promise.all(Array.from({ length: Math.min(50, sessions - i) }, (_, j) => WireClient.join(relay.port, relay.join, `mem-${i + j}`))));
    }
    report.push([`${sessions} devices connected, idle`, await peak(pid, 6000)]);

    if (stalledCount > 0) {
      const stalled = devices.slice(devices.length - stalledCount);
      stalled.forEach((d) => d.socket.pause());
      await flood(relay, devices[0]!, stalled, process.argv.includes('--pin'));
      report.push([`${stalledCount} of them stalled, queues full`, await peak(pid, 3000)]);
    }

    const [idle, connected, full] = report.map(([, s]) => s) as [Sample, Sample, Sample | undefined];
    process.stdout.write(`mnedcd-server on Node ${process.version}, send_queue_kib = ${queueKib}\n`);
    for (const [what, s] of report) {
      process.stdout.write(`  ${what.padEnd(34)} RSS ${mib(s.rssKib).padStart(7)} MiB (anonymous ${mib(s.anonKib)})  ` +
        `kernel socket buffers ${mib(s.socketKib).padStart(6)} MiB  threads ${s.threads}\n`);
    }
    const perSession = (connected.rssKib - idle.rssKib) / sessions;
    process.stdout.write(`  per connected device: ${perSession.toFixed(0)} KiB RSS, ${((connected.socketKib - idle.socketKib) / sessions).toFixed(1)} KiB kernel\n`);
    if (full) {
      process.stdout.write(`  per stalled device beyond that: ${((full.rssKib - connected.rssKib) / stalledCount).toFixed(0)} KiB RSS, ` +
        `${((full.socketKib - connected.socketKib) / stalledCount).toFixed(0)} KiB kernel (queue limit ${queueKib} KiB)\n`);
    }
    devices.forEach((d) => d.close());
  } finally {
    await relay.dispose();
  }
}

if (process.getuid?.() !== 0) {
  process.stderr.write('relay-memory: needs root (a private network namespace)\n');
  process.exit(2);
}
if (!process.env[NAMESPACE_ENV]) {
  // Loopback of a namespace of its own: no other traffic, and the kernel's socket figures are this run's.
  const child = spawnSync('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, __filename, ...process.argv.slice(2)],
    { stdio: 'inherit', env: { ...process.env, [NAMESPACE_ENV]: '1' } });
  process.exit(child.status ?? 1);
}
main().catch((err: Error) => {
  process.stderr.write(`relay-memory: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
