/**
 * The real mnedcd-server for the scale bench: in a network namespace of its own (prefix `mn` + 4 hex +
 * `-sc`) with its TUN up, so it has its overlay address, listening on 127.0.0.1 there, its descriptor limit
 * raised with prlimit. The namespace and every process started here go away on exit, SIGINT and SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT, runCommand } from '../lab';
import { Daemon } from '../overlay';
import { SERVER_BIN } from '../relay-process';

const CTL_BIN = path.join(REPO_ROOT, 'packages/ctl/bin/mnedcctl.js');
export const SCALE_SUBNET = '10.77.0.0/16';

const live = new Set<ScaleRelay>();
let handlersInstalled = false;

function cleanupAll(): void {
  for (const relay of [...live]) relay.destroySync();
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupAll);
  // `on`, not `once`: a second signal during the clean-up (timeout(1) forwards one) must not find the
  // default disposition back and kill the process half way.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      cleanupAll();
      process.exit(130);
    });
  }
}

/** A relay of a cluster: its etcd, and whether it has the network key or an endorsement (`prepare` writes it). */
export interface ScaleCluster {
  etcd: string[];
  network: string;
}

/**
 * Relay settings for `devices` devices: every fleet limit raised to fit, the rest as an operator leaves
 * them. A cluster's relays share one namespace and have no interface (their TUNs would all claim the
 * relay address there), so they answer no DNS.
 */
export function scaleConfig(devices: number, stateDir: string, socket: string, port: number, cluster?: ScaleCluster): string {
  return [
    '[server]', `listen = 127.0.0.1:${port}`, `subnet = ${SCALE_SUBNET}`, `interface = ${cluster ? '' : 'mnsc0'}`, `state_dir = ${stateDir}`,
    ...(cluster ? ['[cluster]', `etcd = ${cluster.etcd.join(', ')}`, `network = ${cluster.network}`] : []),
    '[limits]', 'max_handshakes = 4096', `max_handshakes_per_source = 1024`,
    'connections_per_source_per_second = 100000', 'connection_burst_per_source = 100000',
    `max_clients = ${devices + 16}`, `max_devices = ${devices * 2 + 16}`,
    'new_devices_per_minute = 1000000', 'new_device_burst = 1000000',
    '[control]', `socket = ${socket}`,
    '[log]', 'level = info', '',
  ].join('\n');
}

export interface ScaleRelayOptions {
  /** Run in this relay's namespace (a cluster's second and later relays) rather than a new one. */
  beside?: ScaleRelay;
  cluster?: ScaleCluster;
  /** Runs before the first start, its configuration written (an endorsement goes into its state directory). */
  prepare?: (relay: ScaleRelay) => Promise<void>;
}

export class ScaleRelay {
  readonly ns: string;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'mnedc-scale-'));
  readonly stateDir = path.join(this.dir, 'state');
  /** The namespace is this relay's to delete. */
  private readonly ownsNamespace: boolean;
  readonly socket = path.join(this.dir, 'server.sock');
  readonly config = path.join(this.dir, 'server.ini');
  daemon: Daemon | null = null;
  port = 0;
  join = '';
  private readonly children = new Set<ChildProcess>();

  private constructor(readonly devices: number, private readonly options: ScaleRelayOptions) {
    this.ns = options.beside?.ns ?? `mn${randomBytes(2).toString('hex')}-sc`;
    this.ownsNamespace = options.beside === undefined;
  }

  static async create(devices: number, options: ScaleRelayOptions = {}): Promise<ScaleRelay> {
    installHandlers();
    const relay = new ScaleRelay(devices, options);
    live.add(relay);
    try {
      for (const argv of relay.ownsNamespace ? [['netns', 'add', relay.ns], ['-n', relay.ns, 'link', 'set', 'lo', 'up']] : []) {
        const result = await runCommand('ip', argv, 10_000);
        if (result.code !== 0) throw new Error(`ip ${argv.join(' ')}: ${result.stderr.trim()}`);
      }
      if (options.prepare) {
        mkdirSync(relay.stateDir, { recursive: true });
        relay.writeConfig();
        await options.prepare(relay);
      }
      await relay.start();
    } catch (error) {
      relay.destroySync();
      throw error;
    }
    return relay;
  }

  /** A process inside the namespace; killed with the namespace. */
  spawnInside(argv: string[], stdio: Array<'ignore' | 'pipe' | 'inherit' | 'ipc'>): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns, ...argv], { stdio });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Starts the relay (again, on the same state and port after a kill). */
  async start(): Promise<void> {
    this.writeConfig();
    // What the relay's own start-up check counts (max_clients + max_handshakes + 256), and slack.
    const nofile = this.devices + 16 + 4096 + 512;
    // MNEDC_SCALE_RELAY_NODE_ARGS (e.g. --perf-basic-prof, for perf record -p) reaches the relay's node.
    const nodeArgs = (process.env.MNEDC_SCALE_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = this.spawnInside(['prlimit', `--nofile=${nofile}:${nofile}`, process.execPath, ...nodeArgs, SERVER_BIN,
      '--config', this.config, '--log-format', 'json'], ['ignore', 'pipe', 'pipe']);
    this.daemon = new Daemon('relay', child);
    const listening = await this.daemon.waitFor(/^Relay listening/, { timeoutMs: 60_000 });
    this.port = Number(/:(\d+)$/.exec(String(listening.listen))![1]);
    await this.daemon.waitFor(/^mnedcctl can connect to /, { timeoutMs: 30_000 });
    if (this.join === '') {
      const result = await runCommand(process.execPath, [CTL_BIN, '--socket', this.socket, 'join', '--json'], 15_000);
      if (result.code !== 0) throw new Error(`mnedcctl join: ${result.stderr.trim()}`);
      this.join = (JSON.parse(result.stdout) as { join: string }).join;
    }
  }

  writeConfig(): void {
    writeFileSync(this.config, scaleConfig(this.devices, this.stateDir, this.socket, this.port, this.options.cluster));
  }

  async kill9(): Promise<void> {
    const daemon = this.daemon!;
    daemon.signal('SIGKILL');
    await daemon.waitExit(20_000);
    this.keepLog();
  }

  /** MNEDC_SCALE_RELAY_LOG names a file that gets each relay run's log lines, for a look after the bench. */
  private keepLog(): void {
    const file = process.env.MNEDC_SCALE_RELAY_LOG;
    if (file && this.daemon) appendFileSync(file, `${this.daemon.raw.join('\n')}\n`);
  }

  pid(): number {
    return this.daemon!.pid();
  }

  /** Seconds the relay has spent runnable but waiting for a core (schedstat): a busy shared machine shows here. */
  runQueueSeconds(): number {
    return Number(readFileSync(`/proc/${this.pid()}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  }

  /** The relay's resident memory now, in KiB. */
  rssKib(): number {
    return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${this.pid()}/status`, 'utf8'))![1]);
  }

  destroySync(): void {
    if (!live.delete(this)) return;
    this.keepLog();
    for (const child of this.children) {
      try {
        child.kill('SIGKILL');
      } catch { /* gone */ }
    }
    if (this.ownsNamespace) {
      // Whatever still holds the namespace (a worker that ignored its parent, etcd) dies with it.
      spawnSync('ip', ['netns', 'pids', this.ns], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean).forEach((pid) => {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch { /* gone */ }
      });
      spawnSync('ip', ['netns', 'del', this.ns]);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
