import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Lab, REPO_ROOT, UNDERLAY, type LabNodeName } from './lab';

export const DEVICES = ['a', 'b', 'c', 'd'] as const;
export type Device = (typeof DEVICES)[number];
export const SERVER_PORT = 3334;

const SERVER_BIN = path.join(REPO_ROOT, 'packages/server/bin/mnedcd-server.js');
const CLIENT_BIN = path.join(REPO_ROOT, 'packages/client/bin/mnedcd-client.js');

export interface LogLine {
  msg: string;
  [field: string]: unknown;
}

/**
 * A daemon running in a lab namespace. Its JSON log lines are kept and can be awaited, so tests
 * synchronise on what the daemon says it did instead of sleeping.
 */
export class Daemon {
  readonly lines: LogLine[] = [];
  readonly raw: string[] = [];
  exited: { code: number | null; signal: string | null } | null = null;
  private waiters: Array<() => void> = [];

  constructor(readonly name: string, readonly child: ChildProcess) {
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        this.raw.push(line);
        try {
          const parsed = JSON.parse(line) as LogLine;
          if (typeof parsed.msg === 'string') this.lines.push(parsed);
        } catch {
          // Not a log line (e.g. a crash trace): kept in raw for the failure message.
        }
        this.wake();
      });
    }
    child.once('exit', (code, signal) => {
      this.exited = { code, signal };
      this.wake();
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach((w) => w());
  }

  /** Waits for the first log line after index `from` whose msg matches. */
  async waitFor(pattern: RegExp, options: { timeoutMs?: number; from?: number } = {}): Promise<LogLine> {
    const from = options.from ?? 0;
    return this.waitUntil(() => this.lines.slice(from).find((l) => pattern.test(l.msg)), String(pattern), options.timeoutMs);
  }

  /** Waits for an output line (any format) matching `pattern`. */
  async waitForRaw(pattern: RegExp, timeoutMs?: number): Promise<string> {
    return this.waitUntil(() => this.raw.find((l) => pattern.test(l)), String(pattern), timeoutMs);
  }

  private async waitUntil<T>(probe: () => T | undefined, what: string, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = probe();
      if (found !== undefined) return found;
      if (this.exited) throw new Error(`${this.name} exited (${JSON.stringify(this.exited)}) before logging ${what}\n${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name} did not log ${what} in time\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resolves once the process has exited (bounded). */
  async waitExit(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.exited) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name} did not exit in time`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  signal(signal: NodeJS.Signals): void {
    // The child is `ip netns exec`, which execs node: its pid is the daemon's.
    this.child.kill(signal);
  }

  tail(lines = 15): string {
    return this.raw.slice(-lines).join('\n');
  }
}

/** Server in `srv`, clients in a, b, c, d, configs and state in a temporary directory. */
export class Overlay {
  readonly dir: string;
  server!: Daemon;
  readonly clients = new Map<Device, Daemon>();

  constructor(readonly lab: Lab, private readonly serverExtra = '') {
    this.dir = mkdtempSync(path.join(tmpdir(), `mnedc-${lab.prefix}`));
  }

  static async start(lab: Lab, serverExtra = ''): Promise<Overlay> {
    const overlay = new Overlay(lab, serverExtra);
    await overlay.startServer();
    await Promise.all(DEVICES.map((d) => overlay.startClient(d)));
    return overlay;
  }

  configPath(node: LabNodeName): string {
    return path.join(this.dir, `${node}.ini`);
  }

  async startServer(): Promise<Daemon> {
    writeFileSync(this.configPath('srv'),
      `[server]\nlisten = 0.0.0.0:${SERVER_PORT}\nsubnet = 10.0.0.0/24\ninterface = mnedc0\nstate_dir = ${this.dir}/srv-state\n${this.serverExtra}`);
    const daemon = new Daemon('server', this.lab.spawn('srv', [process.execPath, SERVER_BIN, '--config', this.configPath('srv')], { pipe: true }));
    this.server = daemon;
    await daemon.waitFor(/^Relay listening/);
    return daemon;
  }

  async startClient(device: Device): Promise<Daemon> {
    mkdirSync(path.join(this.dir, device), { recursive: true });
    writeFileSync(this.configPath(device),
      `[client]\nserver = ${UNDERLAY.srv}:${SERVER_PORT}\ndevice_id = device-${device}\ninterface = mnedc0\nstate_dir = ${this.dir}/${device}-state\n`);
    const daemon = new Daemon(`client ${device}`, this.lab.spawn(device, [process.execPath, CLIENT_BIN, '--config', this.configPath(device)], { pipe: true }));
    this.clients.set(device, daemon);
    await daemon.waitFor(/^Connected to /);
    return daemon;
  }

  client(device: Device): Daemon {
    const daemon = this.clients.get(device);
    if (!daemon) throw new Error(`no client ${device}`);
    return daemon;
  }

  /** The overlay address of a device, as its interface has it. */
  async overlayIp(node: Device | 'srv'): Promise<string> {
    const result = await this.lab.exec(node, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'mnedc0']);
    const parsed = JSON.parse(result.stdout) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>;
    const info = parsed[0]?.addr_info[0];
    if (!info) throw new Error(`${node} has no address on mnedc0: ${result.stdout}${result.stderr}`);
    return info.local;
  }

  async overlayIps(): Promise<Record<Device | 'srv', string>> {
    const nodes = ['srv', ...DEVICES] as const;
    const ips = await Promise.all(nodes.map((n) => this.overlayIp(n)));
    return Object.fromEntries(nodes.map((n, i) => [n, ips[i]!])) as Record<Device | 'srv', string>;
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Pings once with a short deadline; true when a reply came. */
export async function pings(lab: Lab, from: LabNodeName, to: string, extra: string[] = []): Promise<boolean> {
  const result = await lab.exec(from, ['ping', '-c', '1', '-W', '2', ...extra, to], { timeoutMs: 5_000 });
  return result.code === 0;
}
