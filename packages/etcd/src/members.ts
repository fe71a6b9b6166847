/**
 * Real etcd members for tests, the lab and the bench: Debian's etcd binary on loopback (or in a
 * namespace, through `wrap`), each with a temporary data directory, stopped and removed by `stop`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The binary: MNEDC_ETCD, else `etcd` on PATH (scripts/setup.sh puts Debian's in /usr/local/bin). */
export const ETCD_BINARY = process.env.MNEDC_ETCD ?? 'etcd';

export interface MemberSpec {
  name: string;
  host: string;
  clientPort: number;
  peerPort: number;
  /** Client URLs over TLS with this certificate; with `ca`, clients must present a certificate it signed. */
  tls?: MemberTls;
}

export interface MemberTls {
  certFile: string;
  keyFile: string;
  caFile?: string;
}

/** A port nobody listens on now (the kernel's choice); racy in theory, fine on a test machine. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export class EtcdMember {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  /** The last lines etcd wrote, for the error when it does not come up. */
  private readonly tail: string[] = [];

  constructor(readonly spec: MemberSpec, readonly dataDir: string, private readonly cluster: string, private readonly token: string,
    private readonly wrap: (argv: string[]) => string[] = (argv) => argv, private readonly health?: (member: EtcdMember) => Promise<boolean>) {}

  get clientUrl(): string {
    return `${this.spec.tls ? 'https' : 'http'}://${this.spec.host}:${this.spec.clientPort}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process; `state` 'existing' for a member coming back or added to a running cluster. */
  start(state: 'new' | 'existing' = 'new'): void {
    if (this.child) throw new Error(`etcd member ${this.spec.name} is running`);
    const { name, host, peerPort, tls } = this.spec;
    const tlsFlags = tls ? ['--cert-file', tls.certFile, '--key-file', tls.keyFile, ...(tls.caFile ? ['--trusted-ca-file', tls.caFile, '--client-cert-auth'] : [])] : [];
    const argv = this.wrap([ETCD_BINARY,
      '--name', name, '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrl, '--advertise-client-urls', this.clientUrl, ...tlsFlags,
      '--listen-peer-urls', `http://${host}:${peerPort}`, '--initial-advertise-peer-urls', `http://${host}:${peerPort}`,
      '--initial-cluster', this.cluster, '--initial-cluster-state', state, '--initial-cluster-token', this.token,
      // As the README tells operators: history is compacted, so watches must cope with it.
      '--auto-compaction-mode', 'revision', '--auto-compaction-retention', '1000', '--experimental-watch-progress-notify-interval', '10s',
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn']);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) if (line) this.tail.push(line);
      this.tail.splice(0, Math.max(0, this.tail.length - 20));
    });
    this.exited = new Promise((resolve) => child.once('exit', () => {
      if (this.child === child) this.child = null;
      resolve();
    }));
    child.once('error', (err) => this.tail.push(`spawn ${argv[0]}: ${err.message}`));
  }

  /** Resolves once the member answers /health as healthy (it has a leader), within `timeoutMs`. */
  async ready(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.child) throw new Error(`etcd member ${this.spec.name} exited: ${this.tail.join('\n')}`);
      if (await this.healthy()) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`etcd member ${this.spec.name} not healthy within ${timeoutMs} ms: ${this.tail.slice(-5).join('\n')}`);
  }

  /** The member's own certificate doubles as the client's for a TLS member (the tests make it for both uses). */
  healthy(): Promise<boolean> {
    if (this.health) return this.health(this);
    const { tls } = this.spec;
    const fetch = tls ? httpsGet : get;
    const options = tls ? { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile), ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}) } : {};
    return new Promise((resolve) => {
      const request = fetch(`${this.clientUrl}/health`, { timeout: 1_000, ...options }, (response) => {
        let body = '';
        response.on('data', (c: Buffer) => { body += c.toString(); });
        response.on('end', () => resolve(response.statusCode === 200 && /"health":\s*"true"/.test(body)));
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => resolve(false));
    });
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /** SIGKILL, as a crash would. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    if (!this.child) return;
    this.child.kill('SIGCONT');
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface EtcdClusterOptions {
  members?: number;
  host?: string;
  /** Runs each member through this (e.g. `ip netns exec NAME`, per member index); default: as it is. */
  wrap?: (argv: string[], member: number) => string[];
  tls?: MemberTls;
  /**
   * One address per member, each in a network namespace of its own (with `wrap`): members listen on the
   * standard ports 2379 and 2380 there, and `health` asks them from inside (the test's own namespace
   * cannot reach them).
   */
  hosts?: string[];
  health?: (member: EtcdMember) => Promise<boolean>;
}

/** N members forming one cluster, each with its own data directory under one temporary directory. */
export class EtcdCluster {
  private constructor(readonly members: EtcdMember[], private readonly dir: string) {}

  static async start(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const n = options.hosts?.length ?? options.members ?? 1;
    const host = options.host ?? '127.0.0.1';
    const dir = mkdtempSync(join(tmpdir(), 'mnedc-etcd-'));
    const specs: MemberSpec[] = [];
    for (let i = 0; i < n; i++) {
      const own = options.hosts?.[i];
      specs.push({
        name: `m${i}`, host: own ?? host, clientPort: own ? 2379 : await freePort(host), peerPort: own ? 2380 : await freePort(host),
        ...(options.tls ? { tls: options.tls } : {}),
      });
    }
    const initial = specs.map((s) => `${s.name}=http://${s.host}:${s.peerPort}`).join(',');
    const token = `mnedc-test-${process.pid}-${Date.now()}`;
    const { wrap } = options;
    const cluster = new EtcdCluster(specs.map((s, i) => new EtcdMember(s, join(dir, s.name), initial, token,
      wrap ? (argv) => wrap(argv, i) : undefined, options.health)), dir);
    try {
      for (const m of cluster.members) m.start();
      await Promise.all(cluster.members.map((m) => m.ready()));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
