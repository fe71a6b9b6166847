import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Lab, REPO_ROOT, runCommand, UNDERLAY, type ExecResult, type LabNodeName } from './lab';

export const DEVICES = ['a', 'b', 'c', 'd'] as const;
export type Device = (typeof DEVICES)[number];
export const SERVER_PORT = 3334;

const SERVER_BIN = path.join(REPO_ROOT, 'packages/server/bin/mnedcd-server.js');
export const CLIENT_BIN = path.join(REPO_ROOT, 'packages/client/bin/mnedcd-client.js');
const CTL_BIN = path.join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js');

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

  /** The daemon's PID (`ip netns exec` execs it, so the child's PID is the daemon's); throws once it has exited. */
  pid(): number {
    if (this.child.pid === undefined || this.exited) throw new Error(`${this.name} is not running\n${this.tail()}`);
    return this.child.pid;
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

export interface DaemonOptions {
  /** INI text appended to the generated configuration (later keys win over earlier ones). */
  extra?: string;
  env?: NodeJS.ProcessEnv;
  /** Resolve once the process runs instead of waiting for it to connect/listen. */
  noWait?: boolean;
  /** A client's configuration file mode (it holds the join secret): 0600 unless a test wants it laxer. */
  configMode?: number;
}

/**
 * Server in `srv`, clients in a, b, c, d; configuration, state, control sockets, peers files and hook
 * directories of every daemon in one temporary directory (Unix sockets are not per network namespace,
 * so each daemon gets its own paths).
 */
export class Overlay {
  readonly dir: string;
  server!: Daemon;
  readonly clients = new Map<Device, Daemon>();
  /** The server's join string, as `mnedcctl join` prints it once the server runs. */
  join = '';

  constructor(readonly lab: Lab) {
    this.dir = mkdtempSync(path.join(tmpdir(), `mnedc-${lab.prefix}`));
  }

  static async start(lab: Lab, options: { server?: DaemonOptions; clients?: Partial<Record<Device, DaemonOptions>> } = {}): Promise<Overlay> {
    const overlay = new Overlay(lab);
    await overlay.startServer(options.server);
    await Promise.all(DEVICES.map((d) => overlay.startClient(d, options.clients?.[d])));
    return overlay;
  }

  socket(node: Device | 'srv'): string {
    return path.join(this.dir, `${node}.sock`);
  }

  peersFile(device: Device): string {
    return path.join(this.dir, `${device}-peers.json`);
  }

  hostsFile(device: Device): string {
    return path.join(this.dir, `${device}-hosts`);
  }

  hookDir(device: Device): string {
    return path.join(this.dir, `${device}-hooks`);
  }

  configPath(node: LabNodeName): string {
    return path.join(this.dir, `${node}.ini`);
  }

  private writeServerConfig(extra?: string): void {
    writeFileSync(this.configPath('srv'), mergeIni(
      `[server]\nlisten = 0.0.0.0:${SERVER_PORT}\nsubnet = 10.0.0.0/24\ninterface = mnedc0\nstate_dir = ${this.dir}/srv-state\n` +
      `[control]\nsocket = ${this.socket('srv')}\n`, extra));
  }

  /** The join string without a running server (`mnedcd-server --print-join` creates the identity). */
  async printJoin(extra?: string): Promise<string> {
    this.writeServerConfig(extra);
    const result = await this.lab.exec('srv', [process.execPath, SERVER_BIN, '--config', this.configPath('srv'), '--print-join'], { timeoutMs: 20_000 });
    if (result.code !== 0) throw new Error(`--print-join failed (${result.code}): ${result.stderr}`);
    this.join = result.stdout.trim();
    return this.join;
  }

  async startServer(options: DaemonOptions = {}): Promise<Daemon> {
    this.writeServerConfig(options.extra);
    const daemon = new Daemon('server', this.lab.spawn('srv',
      [process.execPath, SERVER_BIN, '--config', this.configPath('srv'), '--log-format', 'json'], { pipe: true, env: { ...process.env, ...options.env } }));
    this.server = daemon;
    if (!options.noWait) {
      await daemon.waitFor(/^mnedcctl can connect to /);
      await this.refreshJoin();
    }
    return daemon;
  }

  /** Reads the join string from the running server (it changes with rotate-join or a new identity). */
  async refreshJoin(): Promise<string> {
    const result = await this.ctl('srv', ['join', '--json']);
    if (result.code !== 0) throw new Error(`mnedcctl join failed: ${result.stderr}`);
    this.join = (result.json as { join: string }).join;
    return this.join;
  }

  async startClient(device: Device, options: DaemonOptions = {}): Promise<Daemon> {
    const daemon = await this.startClientAs(device, device, options);
    this.clients.set(device, daemon);
    return daemon;
  }

  /**
   * A client instance named `name` in `node`'s namespace, with its own files (`name` = the device for the
   * regular clients; another name gives a second instance, e.g. an impostor on a device's machine).
   */
  async startClientAs(node: Device, name: string, options: DaemonOptions = {}): Promise<Daemon> {
    const files = (suffix: string) => path.join(this.dir, `${name}${suffix}`);
    mkdirSync(files('-hooks'), { recursive: true });
    const config = files('.ini');
    writeFileSync(config, mergeIni(
      `[client]\nserver = ${UNDERLAY.srv}:${SERVER_PORT}\njoin = ${this.join}\ndevice_id = device-${name}\ninterface = mnedc0\nstate_dir = ${files('-state')}\n` +
      `[control]\nsocket = ${files('.sock')}\n` +
      `[discovery]\nhook_dir = ${files('-hooks')}\npeers_file = ${files('-peers.json')}\nhosts_file = ${files('-hosts')}\n`,
      options.extra), { mode: 0o600 });
    // It holds the join secret: the client warns about a file others can read, as an operator's would.
    chmodSync(config, options.configMode ?? 0o600);
    const daemon = new Daemon(`client ${name}`, this.lab.spawn(node,
      [process.execPath, CLIENT_BIN, '--config', config, '--log-format', 'json'], { pipe: true, env: { ...process.env, ...options.env } }));
    if (!options.noWait) await daemon.waitFor(/^Connected to /);
    return daemon;
  }

  /** Runs mnedcctl against a daemon's control socket (a file, so no namespace is needed). */
  async ctl(node: Device | 'srv', args: string[]): Promise<ExecResult & { json: unknown }> {
    return this.ctlAt(this.socket(node), args);
  }

  async ctlAt(socket: string, args: string[]): Promise<ExecResult & { json: unknown }> {
    const result = await runCommand(process.execPath, [CTL_BIN, '--socket', socket, ...args], 15_000);
    let json: unknown = undefined;
    if (args.includes('--json') && result.code === 0) json = JSON.parse(result.stdout);
    return { ...result, json };
  }

  /** `mnedcctl watch --json` on a daemon, as a process whose output lines can be awaited. */
  async watch(node: Device | 'srv'): Promise<Daemon> {
    const watcher = new Daemon(`watch ${node}`, this.lab.spawn('srv', [process.execPath, CTL_BIN, '--socket', this.socket(node), 'watch', '--json'], { pipe: true }));
    // The subscription is in place once the RPC answered; mnedcctl says so on stderr before streaming.
    await watcher.waitForRaw(/watching/);
    return watcher;
  }

  /** Rewrites a daemon's configuration (for SIGHUP tests), merging `extra` into what it was started with. */
  rewriteConfig(node: Device | 'srv', extra: string): void {
    writeFileSync(this.configPath(node), mergeIni(readFileSync(this.configPath(node), 'utf8'), extra));
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

/** Overlays INI `extra` on `base` key by key, so tests can override one setting of a generated file. */
export function mergeIni(base: string, extra = ''): string {
  const sections = new Map<string, Map<string, string>>();
  for (const text of [base, extra]) {
    let section = '';
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      const header = /^\[([^\]]+)\]$/.exec(line);
      if (header) {
        section = header[1]!;
        if (!sections.has(section)) sections.set(section, new Map());
      } else if (line.includes('=')) {
        const at = line.indexOf('=');
        sections.get(section)?.set(line.slice(0, at).trim(), line.slice(at + 1).trim());
      }
    }
  }
  return [...sections].map(([name, keys]) => `[${name}]\n${[...keys].map(([k, v]) => `${k} = ${v}\n`).join('')}`).join('');
}
