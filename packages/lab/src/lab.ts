/**
 * Network-namespace lab for integration tests (see scripts/lab.sh for the
 * topology). Requires root, iproute2, nftables and ping.
 *
 * Lab.create() builds a fresh lab under a random prefix (`mn` + 4 hex + `-`);
 * destroy() tears it down. If the test process exits (normally, by an
 * uncaught exception, or on SIGINT/SIGTERM/SIGHUP) while labs are still up,
 * tracked children are SIGKILLed and `lab.sh down` runs synchronously.
 */
import { spawn as cpSpawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExitCleanup } from './exit-cleanup';

export type LabNodeName = 'r0' | 'srv' | 'a' | 'r1' | 'b' | 'r2' | 'c' | 'r3' | 'd';

export const LAB_NODES: readonly LabNodeName[] = ['r0', 'srv', 'a', 'r1', 'b', 'r2', 'c', 'r3', 'd'];

/** Primary underlay IP of each node (routers: WAN IP; r0: its main-LAN IP). */
export const UNDERLAY: Record<LabNodeName, string> = {
  r0: '192.168.0.1',
  srv: '192.168.0.10',
  a: '192.168.0.20',
  r1: '192.168.0.2',
  b: '192.168.1.10',
  r2: '192.168.1.2',
  c: '192.168.2.10',
  r3: '192.168.0.3',
  d: '192.168.1.10',
};

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** true if the process was killed because it exceeded timeoutMs. */
  timedOut?: boolean;
}

function findRepoRoot(start: string): string {
  let dir = path.resolve(start);
  for (let i = 0; i < 64; i++) {
    if (fs.existsSync(path.join(dir, 'scripts', 'lab.sh'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`lab: cannot find scripts/lab.sh in any parent of ${start}`);
}

/** The repository root (resolved from this file's location, works from test/dist/support). */
export const REPO_ROOT: string = findRepoRoot(__dirname);

/** Absolute path of scripts/lab.sh. */
export const LAB_SCRIPT: string = path.join(REPO_ROOT, 'scripts', 'lab.sh');

const PREFIX_RE = /^mn[a-z0-9-]{0,6}$/;
const DEFAULT_TIMEOUT_MS = 30_000;
/** Bound for `lab.sh up/down/check` runs. */
const SCRIPT_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------- cleanup --

const liveLabs = new ExitCleanup<Lab>((lab) => lab.destroySync());

/** Signals a child started detached, with the process group it leads; nothing when it has exited. */
export function killTree(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    // Children are started detached, i.e. leaders of their own process group.
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

// ------------------------------------------------------------------- exec --

interface RunOpts {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

function run(cmd: string, argv: string[], opts: RunOpts, track?: Set<ChildProcess>): Promise<ExecResult> {
  return new Promise<ExecResult>((resolve, reject) => {
    const child = cpSpawn(cmd, argv, {
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    track?.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const timer = setTimeout(() => {
      timedOut = true;
      killTree(child, 'SIGKILL');
    }, timeoutMs);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.stdin?.on('error', () => {
      /* EPIPE if the child does not read its input */
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      track?.delete(child);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      track?.delete(child);
      const res: ExecResult = {
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (timedOut) res.timedOut = true;
      resolve(res);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

function randomPrefix(): string {
  return `mn${randomBytes(2).toString('hex')}-`;
}

// -------------------------------------------------------------------- Lab --

/**
 * Something living in a lab's namespaces that needs more than SIGKILL to go away (a booted container with
 * its mounts): the lab tears it down before its processes and namespaces, also from exit handlers.
 */
export interface LabAttachment {
  teardown(): Promise<void>;
  teardownSync(): void;
}

export class Lab {
  readonly prefix: string;
  private readonly children = new Set<ChildProcess>();
  private readonly attachments = new Set<LabAttachment>();
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  private constructor(prefix: string) {
    this.prefix = prefix;
  }

  /**
   * Build a lab (`lab.sh up`). Without opts.prefix a random `mnXXXX-` prefix
   * is used. On failure the partial lab is torn down and the error rethrown
   * (unless the failure was "prefix already in use", which leaves the other
   * lab alone).
   */
  static async create(opts: { prefix?: string } = {}): Promise<Lab> {
    const prefix = opts.prefix ?? randomPrefix();
    if (!PREFIX_RE.test(prefix)) {
      throw new Error(`lab: bad prefix ${JSON.stringify(prefix)} (must match ${PREFIX_RE})`);
    }
    const lab = new Lab(prefix);
    liveLabs.add(lab);
    let res: ExecResult;
    try {
      res = await run('bash', [LAB_SCRIPT, 'up', prefix], { timeoutMs: SCRIPT_TIMEOUT_MS });
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    if (res.code !== 0) {
      if (res.code === 3) {
        // Prefix in use by someone else: do not tear their lab down.
        lab.destroyed = true;
        lab.forget();
      } else {
        await lab.destroy();
      }
      throw new Error(
        `lab: 'lab.sh up ${prefix}' failed (code ${res.code}, signal ${res.signal})\n${res.stdout}${res.stderr}`,
      );
    }
    return lab;
  }

  /** Full namespace name of a node. */
  ns(node: LabNodeName): string {
    if (!LAB_NODES.includes(node)) throw new Error(`lab: unknown node ${String(node)}`);
    return this.prefix + node;
  }

  /**
   * Run argv inside the node's namespace and collect its output. Killed
   * (SIGKILL, whole process group) after timeoutMs (default 30 s). Resolves
   * on any exit status; rejects only if the process cannot be started.
   */
  async exec(
    node: LabNodeName,
    argv: string[],
    opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {},
  ): Promise<ExecResult> {
    if (argv.length === 0) throw new Error('lab.exec: empty argv');
    this.assertAlive();
    return run('ip', ['netns', 'exec', this.ns(node), ...argv], opts, this.children);
  }

  /**
   * Start a long-running process in the node's namespace. stdout+stderr are
   * piped to the caller with `pipe`, else appended to logFile if given, else discarded. The process is tracked and
   * SIGKILLed (with its process group) on destroy().
   */
  spawn(node: LabNodeName, argv: string[], opts: { env?: NodeJS.ProcessEnv; logFile?: string; pipe?: boolean } = {}): ChildProcess {
    if (argv.length === 0) throw new Error('lab.spawn: empty argv');
    this.assertAlive();
    let fd: number | undefined;
    if (opts.logFile !== undefined) {
      fs.mkdirSync(path.dirname(opts.logFile), { recursive: true });
      fd = fs.openSync(opts.logFile, 'a');
    }
    try {
      const child = cpSpawn('ip', ['netns', 'exec', this.ns(node), ...argv], {
        env: opts.env ?? process.env,
        stdio: opts.pipe ? ['ignore', 'pipe', 'pipe'] : ['ignore', fd ?? 'ignore', fd ?? 'ignore'],
        detached: true,
      });
      this.children.add(child);
      const forget = (): void => {
        this.children.delete(child);
      };
      child.once('exit', forget);
      child.once('error', forget);
      return child;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  attach(attachment: LabAttachment): void {
    this.assertAlive();
    this.attachments.add(attachment);
  }

  detach(attachment: LabAttachment): void {
    this.attachments.delete(attachment);
  }

  /** Run `lab.sh check` (the problem-statement assertions). */
  async check(): Promise<ExecResult> {
    this.assertAlive();
    return run('bash', [LAB_SCRIPT, 'check', this.prefix], { timeoutMs: SCRIPT_TIMEOUT_MS });
  }

  /** Kill tracked children (bounded wait for their exit), then `lab.sh down`. Idempotent. */
  destroy(): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    if (!this.destroying) {
      this.destroying = (async () => {
        const failures: string[] = [];
        for (const attachment of [...this.attachments].reverse()) {
          await attachment.teardown().catch((e: Error) => failures.push(e.message));
        }
        this.attachments.clear();
        const waits = [...this.children].map((child) => waitExit(child, 5_000));
        for (const child of this.children) killTree(child, 'SIGKILL');
        await Promise.all(waits);
        this.children.clear();
        const res = await run('bash', [LAB_SCRIPT, 'down', this.prefix], { timeoutMs: SCRIPT_TIMEOUT_MS }).catch(
          (e: unknown) => ({ code: null, signal: null, stdout: '', stderr: String(e) }) as ExecResult,
        );
        this.destroyed = true;
        this.forget();
        if (res.code !== 0) failures.push(`'lab.sh down ${this.prefix}' failed (code ${res.code})\n${res.stdout}${res.stderr}`);
        if (failures.length > 0) throw new Error(`lab: ${failures.join('\n')}`);
      })();
    }
    return this.destroying;
  }

  /** @internal Synchronous teardown for process 'exit'/signal handlers. */
  destroySync(): void {
    if (this.destroyed) return;
    for (const attachment of [...this.attachments].reverse()) {
      try {
        attachment.teardownSync();
      } catch {
        /* best effort: the process is exiting */
      }
    }
    this.attachments.clear();
    for (const child of this.children) killTree(child, 'SIGKILL');
    this.children.clear();
    spawnSync('bash', [LAB_SCRIPT, 'down', this.prefix], { stdio: 'ignore', timeout: SCRIPT_TIMEOUT_MS });
    this.destroyed = true;
    this.forget();
  }

  private forget(): void {
    liveLabs.delete(this);
  }

  private assertAlive(): void {
    if (this.destroyed || this.destroying) throw new Error(`lab ${this.prefix} is destroyed`);
  }
}

/** Resolves once the child has exited (or failed to start), or after timeoutMs regardless. */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      child.removeListener('exit', done);
      child.removeListener('error', done);
      resolve();
    }
    child.once('exit', done);
    child.once('error', done);
  });
}

/** Namespaces whose names start with `prefix`: empty after a lab is destroyed. */
export async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  const result = await run('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  return result.stdout.split('\n').map((line) => line.split(' ')[0]!).filter((name) => name.startsWith(prefix));
}

/** Runs a command in the current namespace with a time limit (for tools that need no lab node). */
export function runCommand(cmd: string, argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return run(cmd, argv, { timeoutMs });
}
