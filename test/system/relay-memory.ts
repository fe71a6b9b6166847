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
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import {
  encodeFrame, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, FrameDecoder, FrameType, helloAuth, ipv4ToInt,
  parseJoin, parseWelcome, PROTOCOL_VERSION,
} from '@mnedc/protocol';
import { REPO_ROOT } from '@mnedc/lab';

const NAMESPACE_ENV = 'MNEDC_RELAY_MEMORY_NETNS';
const PORT = 3334;
const SERVER_BIN = path.join(REPO_ROOT, 'packages/server/bin/mnedcd-server.js');

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

/** A device as the relay sees one: its own key, the join proof, pings answered until it stalls. */
class Device {
  readonly socket: TLSSocket;
  ip = 0;
  stalled = false;
  private readonly decoder = new FrameDecoder();
  private welcomed: (() => void) | null = null;

  constructor(readonly id: string, private readonly join: string, private readonly key: KeyObject) {
    this.socket = connect({ host: '127.0.0.1', port: PORT, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk: Buffer) => this.decoder.push(chunk, (frame) => this.onFrame(frame)));
  }

  async joined(): Promise<void> {
    await once(this.socket, 'secureConnect');
    const ekm = this.socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const auth = helloAuth(parseJoin(this.join).secret, this.key, ekm, this.id);
    const welcome = new Promise<void>((resolve) => { this.welcomed = resolve; });
    this.socket.write(encodeJsonFrame(FrameType.Hello, { version: PROTOCOL_VERSION, deviceId: this.id, hostname: this.id, underlay: [], auth }));
    await welcome;
  }

  stall(): void {
    this.stalled = true;
    this.socket.pause();
  }

  private onFrame(frame: Buffer): void {
    const payload = frame.subarray(4);
    if (frame[0] === FrameType.Welcome) {
      this.ip = ipv4ToInt(parseWelcome(payload).ip);
      this.welcomed?.();
    } else if (frame[0] === FrameType.Ping && !this.stalled) {
      this.socket.write(encodeFrame(FrameType.Pong, Buffer.from(payload)));
    }
  }
}

function udpPacket(src: number, dst: number, bytes: number): Buffer {
  const packet = Buffer.alloc(bytes);
  packet[0] = 0x45;
  packet.writeUInt16BE(bytes, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.writeUInt32BE(src, 12);
  packet.writeUInt32BE(dst, 16);
  return packet;
}

/** One JSON-RPC call on the server's control socket. */
async function rpc(socketPath: string, method: string): Promise<unknown> {
  const socket = netConnect(socketPath);
  socket.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, method })}\n`);
  let text = '';
  for await (const chunk of socket) {
    text += String(chunk);
    if (text.includes('\n')) break;
  }
  socket.destroy();
  return (JSON.parse(text) as { result: unknown }).result;
}

/** Sends packets from `from` to the stalled devices, round robin, until the relay drops for every one of them. */
async function flood(from: Device, targets: Device[], controlSocket: string, queueKib: number, pin: boolean): Promise<void> {
  const targetIds = new Set(targets.map((t) => t.id));
  const frames = targets.map((t) => pin
    ? Buffer.concat([encodeFrame(FrameType.Data, udpPacket(from.ip, t.ip, 28)), encodeFrame(FrameType.Data, udpPacket(from.ip + 1, t.ip, 16000))])
    : encodeFrame(FrameType.Data, udpPacket(from.ip, t.ip, 1400)));
  let stop = false;
  const pump = async () => {
    for (let i = 0; !stop; i++) {
      if (!from.socket.write(frames[i % frames.length]!)) await once(from.socket, 'drain');
    }
  };
  const pumping = pump();
  const deadline = Date.now() + 120_000;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const peers = await rpc(controlSocket, 'peers') as Array<{ deviceId: string; queueBytes: number; missed: number }>;
    const full = peers.filter((p) => targetIds.has(p.deviceId) && p.missed > 0 && p.queueBytes >= queueKib * 1024);
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
  const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-memory-'));
  const config = path.join(dir, 'server.ini');
  const control = path.join(dir, 'server.sock');
  // Limits opened up: every device comes from 127.0.0.1; stalled devices answer no pings.
  writeFileSync(config, `[server]\nlisten = 127.0.0.1:${PORT}\nsubnet = 10.77.0.0/16\ninterface =\nstate_dir = ${dir}/state\n` +
    `send_queue_kib = ${queueKib}\ndead_after_ms = 600000\n[limits]\nmax_handshakes = 100000\nmax_handshakes_per_source = 100000\n` +
    `connections_per_source_per_second = 100000\nconnection_burst_per_source = 100000\n[control]\nsocket = ${control}\n`);
  const printed = spawnSync(process.execPath, [SERVER_BIN, '--config', config, '--print-join'], { encoding: 'utf8' });
  if (printed.status !== 0) throw new Error(`--print-join failed: ${printed.stderr}`);
  const join = printed.stdout.trim();
  const server = spawn(process.execPath, [SERVER_BIN, '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`the server did not start listening in 20 s:\n${seen.slice(-2000)}`)), 20_000);
      // Read on to the end: the server logs a line per device, and a full pipe would stall it.
      server.stdout.on('data', (chunk: Buffer) => {
        if (seen.includes('Relay listening')) return;
        seen += String(chunk);
        if (seen.includes('Relay listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      server.once('exit', (code) => reject(new Error(`the server exited (${code}):\n${seen.slice(-2000)}`)));
    });
    const pid = server.pid!;
    const report: Array<[string, Sample]> = [];
    report.push(['idle, no device', await peak(pid, 3000)]);

    const devices: Device[] = [];
    const keys = Array.from({ length: sessions }, () => generateKeyPairSync('ed25519').privateKey);
    for (let i = 0; i < sessions; i += 50) {
      const batch = keys.slice(i, i + 50).map((key, j) => new Device(`mem-${i + j}`, join, key));
      await Promise.all(batch.map((d) => d.joined()));
      devices.push(...batch);
    }
    report.push([`${sessions} devices connected, idle`, await peak(pid, 6000)]);

    if (stalledCount > 0) {
      const stalled = devices.slice(devices.length - stalledCount);
      stalled.forEach((d) => d.stall());
      await flood(devices[0]!, stalled, control, queueKib, process.argv.includes('--pin'));
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
    devices.forEach((d) => d.socket.destroy());
  } finally {
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
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
