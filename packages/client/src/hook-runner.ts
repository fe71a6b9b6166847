import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * One hook process, without the daemon's privileges. The client holds CAP_NET_ADMIN (as user mnedc with
 * it as an ambient capability under systemd, or as root from a source tree), and a child would inherit
 * it. So every hook is started through util-linux setpriv(1), which execs the hook in place (same pid, so
 * the process-group kill on timeout still reaches it) after:
 *
 * - no_new_privs, so nothing the hook runs can gain privileges through setuid bits or file capabilities;
 * - empty inheritable and ambient sets: a non-root exec then gets no capability at all (unless the hook
 *   executable itself carries file capabilities: no_new_privs still lets it have those the daemon holds);
 * - an empty bounding set when the daemon may change it (CAP_SETPCAP, i.e. root): root's exec is given
 *   its bounding set, so this is what leaves a root hook without capabilities;
 * - optionally another user (`[discovery] hook_user`) with that user's groups.
 */

export const SETPRIV = 'setpriv';
export const CAP_SETGID = 6;
export const CAP_SETUID = 7;
export const CAP_SETPCAP = 8;

/** Bytes of each of a hook's stdout and stderr kept for the log. */
const OUTPUT_TAIL_BYTES = 2048;
/** After SIGTERM (timeout), the process group gets SIGKILL this much later. */
export const KILL_GRACE_MS = 2000;
/** After SIGKILL, how long to wait for the pipes to close before giving up on the hook anyway. */
export const REAP_GRACE_MS = 1000;
/**
 * After a hook's own process exited, how long its pipes may stay open (held by a background process it
 * started) before we stop reading them and consider the hook done. That background process is left alone.
 */
const EXIT_PIPE_GRACE_MS = 500;

export interface CapabilitySets {
  inheritable: bigint;
  permitted: bigint;
  effective: bigint;
  bounding: bigint;
  ambient: bigint;
}

/** The Cap* lines of /proc/<pid>/status. */
export function parseCapabilities(status: string): CapabilitySets {
  const read = (name: string): bigint => {
    const match = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    if (!match) throw new Error(`no ${name} line in the process status`);
    return BigInt(`0x${match[1]}`);
  };
  return { inheritable: read('CapInh'), permitted: read('CapPrm'), effective: read('CapEff'), bounding: read('CapBnd'), ambient: read('CapAmb') };
}

export function hasCapability(set: bigint, capability: number): boolean {
  return (set >> BigInt(capability)) & 1n ? true : false;
}

/** Who the daemon is, as far as starting hooks is concerned. */
export interface Privileges {
  uid: number;
  gid: number;
  effective: bigint;
}

export function currentPrivileges(): Privileges {
  const uid = process.getuid?.() ?? -1;
  let effective: bigint;
  try {
    effective = parseCapabilities(readFileSync('/proc/self/status', 'utf8')).effective;
  } catch {
    // No /proc: assume what the uid usually means, so a root daemon still empties the bounding set.
    effective = uid === 0 ? (1n << 64n) - 1n : 0n;
  }
  return { uid, gid: process.getgid?.() ?? -1, effective };
}

export interface HookUser {
  name: string;
  uid: number;
  gid: number;
}

/** Thrown for a hook_user the daemon cannot use; the message says why, for a config error. */
export class HookUserError extends Error {}

/** A user name as useradd(8) and systemd accept them (a trailing '$' for Samba machine accounts), or a uid. */
export function isUserName(text: string): boolean {
  return text.length <= 256 && /^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$/.test(text);
}

/** A user (name or number) looked up with id(1), so NSS users count too, with their primary group. */
export function lookupUser(name: string): HookUser {
  if (!isUserName(name)) throw new HookUserError(`${JSON.stringify(name)} is not a user name or number`);
  const ask = (flag: '-u' | '-g'): number => {
    const result = spawnSync('id', [flag, '--', name], { encoding: 'utf8', timeout: 10_000 });
    if (result.error) throw new HookUserError(`cannot look up user ${name}: id: ${result.error.message}`);
    const text = result.stdout.trim();
    if (result.status !== 0 || !/^\d+$/.test(text)) throw new HookUserError(`no such user ${name}`);
    return Number(text);
  };
  return { name, uid: ask('-u'), gid: ask('-g') };
}

/**
 * What keeps a daemon with `self`'s privileges from running hooks as `user`, or null. Being that user
 * already needs nothing; anything else needs CAP_SETUID and CAP_SETGID (supplementary groups included).
 */
export function hookUserProblem(user: HookUser, self: Privileges): string | null {
  if (user.uid === self.uid && user.gid === self.gid) return null;
  if (hasCapability(self.effective, CAP_SETUID) && hasCapability(self.effective, CAP_SETGID)) return null;
  return `the daemon runs as uid ${self.uid} without CAP_SETUID and CAP_SETGID, so it cannot run hooks as ${user.name} ` +
    `(uid ${user.uid}); leave hook_user empty (hooks then run as the daemon's own user, without its capabilities) or run the daemon as root`;
}

/** setpriv's options (up to and including '--') for a daemon with `self`'s privileges. */
export function sandboxArgs(self: Privileges, user: HookUser | null): string[] {
  const args = ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all'];
  if (hasCapability(self.effective, CAP_SETPCAP)) args.push('--bounding-set=-all');
  if (user && (user.uid !== self.uid || user.gid !== self.gid)) args.push(`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups');
  args.push('--');
  return args;
}

/** The setpriv options for `hookUser` ('' = the daemon's own user); throws HookUserError when unusable. */
export function hookSandbox(hookUser: string, self: Privileges = currentPrivileges()): string[] {
  if (hookUser === '') return sandboxArgs(self, null);
  const user = lookupUser(hookUser);
  const problem = hookUserProblem(user, self);
  if (problem) throw new HookUserError(problem);
  return sandboxArgs(self, user);
}

/** Keeps the last `limit` bytes written to it. */
class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit = OUTPUT_TAIL_BYTES) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  text(): string {
    if (this.size === 0) return '';
    const all = Buffer.concat(this.chunks);
    const tail = all.length > this.limit ? all.subarray(all.length - this.limit) : all;
    // A cut through a multi-byte character decodes to U+FFFD at the start; drop it.
    return tail.toString('utf8').replace(/^\uFFFD+/, '').trimEnd();
  }
}

export interface HookSpec {
  /** The hook's path and arguments. */
  path: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** setpriv's options, from hookSandbox(). */
  sandbox: readonly string[];
}

export type HookOutcome =
  | { kind: 'unstarted'; error: Error }
  | { kind: 'timeout'; ms: number; stdout: string; stderr: string }
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null; exited: boolean; ms: number; stdout: string; stderr: string };

/**
 * setpriv reports a hook it could not exec (missing interpreter, not executable) or a sandbox it could not
 * set up as exit 126 or 127 with its own "setpriv: …" message: a hook that could not be started, not one
 * that failed. setpriv always calls capset(2), so a seccomp filter denying it (systemd's
 * SystemCallFilter=~@privileged does) stops every hook: the message says so. Such hooks are never started
 * without the sandbox instead.
 */
function setprivFailure(code: number | null, stderr: string): Error | null {
  if ((code !== 126 && code !== 127) || !stderr.startsWith(`${SETPRIV}: `)) return null;
  const said = stderr.split('\n')[0]!;
  const capset = /capabilit/.test(said) && /not permitted/i.test(said);
  return new Error(capset ? `${said} (is capset(2) denied by a seccomp filter? Under systemd, SystemCallFilter= must allow capset)` : said.slice(SETPRIV.length + 2));
}

/**
 * A running hook in its own process group. `done` settles once it exited and its pipes closed (or
 * EXIT_PIPE_GRACE_MS after it exited), or once it was killed for outliving timeoutMs: SIGTERM to the
 * group, SIGKILL KILL_GRACE_MS later. Never rejects.
 */
export class HookProcess {
  readonly done: Promise<HookOutcome>;
  private child: ChildProcess | null = null;

  /** `onKillError` hears of signals that could not be sent (other than to a group already gone). */
  constructor(spec: HookSpec, private readonly onKillError: (signal: NodeJS.Signals, err: Error) => void) {
    this.done = new Promise((resolve) => this.start(spec, resolve));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  killGroup(signal: NodeJS.Signals): void {
    const pgid = this.child?.pid;
    if (pgid === undefined) return;
    try {
      process.kill(-pgid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.onKillError(signal, err as Error);
    }
  }

  private start(spec: HookSpec, resolve: (outcome: HookOutcome) => void): void {
    const { timeoutMs } = spec;
    let child: ChildProcess;
    try {
      child = spawn(SETPRIV, [...spec.sandbox, spec.path, ...spec.args], { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: spec.env });
    } catch (err) {
      resolve({ kind: 'unstarted', error: err as Error });
      return;
    }
    this.child = child;
    const started = Date.now();
    const stdout = new OutputTail();
    const stderr = new OutputTail();
    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    let done = false;
    let exited = false;
    let timedOut = false;
    let exitCode: number | null = null;
    let exitSignal: NodeJS.Signals | null = null;
    const timers = new Set<NodeJS.Timeout>();
    const later = (fn: () => void, ms: number): void => {
      const t = setTimeout(() => { timers.delete(t); fn(); }, ms);
      timers.add(t);
    };

    const finish = (spawnError?: Error): void => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (timedOut) {
        // The group gets its SIGKILL even if the hook itself went quietly on SIGTERM.
        const t = setTimeout(() => this.killGroup('SIGKILL'), Math.max(0, started + timeoutMs + KILL_GRACE_MS - Date.now()));
        t.unref();
      }
      const ms = Date.now() - started;
      const out = stdout.text();
      const errText = stderr.text();
      const unstartable = spawnError ?? (timedOut ? null : setprivFailure(exitCode, errText));
      if (unstartable) resolve({ kind: 'unstarted', error: unstartable });
      else if (timedOut) resolve({ kind: 'timeout', ms, stdout: out, stderr: errText });
      else resolve({ kind: 'exited', code: exitCode, signal: exitSignal, exited, ms, stdout: out, stderr: errText });
    };

    child.on('error', (err) => {
      if (child.pid === undefined) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        finish(missing ? new Error(`${SETPRIV} (util-linux) is not installed: hooks only run through it, without the daemon's capabilities`) : err);
      }
    });
    if (child.pid === undefined) return; // 'error' follows
    child.on('exit', (code, signal) => {
      exited = true;
      exitCode = code;
      exitSignal = signal;
      // Normally 'close' follows at once; a background process holding the pipes must not hold us.
      if (!timedOut) later(() => finish(), EXIT_PIPE_GRACE_MS);
    });
    child.on('close', () => finish());
    later(() => {
      if (exited) {
        finish(); // it exited; only a background process of its still holds the pipes
        return;
      }
      timedOut = true;
      this.killGroup('SIGTERM');
      later(() => {
        this.killGroup('SIGKILL');
        later(() => finish(), REAP_GRACE_MS);
      }, KILL_GRACE_MS);
    }, timeoutMs);
  }
}
