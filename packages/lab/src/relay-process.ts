/**
 * The real mnedcd-server as a process on loopback, without a TUN (so without root): what attack and scale
 * tests drive with simulated devices, and whose memory they read from /proc.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT, runCommand } from './lab';
import { Daemon, mergeIni } from './overlay';

export const SERVER_BIN = path.join(REPO_ROOT, 'packages/server/bin/mnedcd-server.js');
const CTL_BIN = path.join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js');

/** Relays of this process still running: killed if the process exits without disposing of them. */
const running = new Set<RelayProcess>();
process.once('exit', () => running.forEach((relay) => relay.daemon.child.kill('SIGKILL')));

export class RelayProcess {
  readonly dir: string;
  readonly config: string;
  readonly socket: string;
  daemon!: Daemon;
  port = 0;
  join = '';

  private constructor(extra: string) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'mnedc-relay-'));
    this.config = path.join(this.dir, 'server.ini');
    this.socket = path.join(this.dir, 'server.sock');
    writeFileSync(this.config, mergeIni(
      `[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${this.dir}/state\n[control]\nsocket = ${this.socket}\n[log]\nlevel = info\n`, extra));
  }

  /** Starts a relay; `extra` is INI merged over the defaults (e.g. "[server]\nsubnet = 10.0.0.0/16\n"). */
  static async start(extra = ''): Promise<RelayProcess> {
    const relay = new RelayProcess(extra);
    running.add(relay);
    await relay.restart();
    return relay;
  }

  /** Starts (again, after a stop or kill) on the same state and, when it had one, the same port. */
  async restart(): Promise<void> {
    if (this.port !== 0) writeFileSync(this.config, mergeIni(readFileSync(this.config, 'utf8'), `[server]\nlisten = 127.0.0.1:${this.port}\n`));
    const child = spawn(process.execPath, [SERVER_BIN, '--config', this.config, '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.daemon = new Daemon('relay', child);
    const listening = await this.daemon.waitFor(/^Relay listening/);
    this.port = Number(/:(\d+)$/.exec(String(listening.listen))![1]);
    await this.daemon.waitFor(/^mnedcctl can connect to /);
    this.join = ((await this.ctl(['join', '--json'])).json as { join: string }).join;
  }

  async ctl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; json: unknown }> {
    const result = await runCommand(process.execPath, [CTL_BIN, '--socket', this.socket, ...args], 15_000);
    const json = args.includes('--json') && result.code === 0 ? JSON.parse(result.stdout) as unknown : undefined;
    return { ...result, json };
  }

  /** The relay's resident memory now, in KiB. */
  rssKib(): number {
    const status = readFileSync(`/proc/${this.daemon.pid()}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.daemon.exited) {
      this.daemon.signal(signal);
      await this.daemon.waitExit(20_000);
    }
  }

  async dispose(): Promise<void> {
    try {
      await this.stop('SIGKILL');
    } finally {
      running.delete(this);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
