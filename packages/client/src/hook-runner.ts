import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { clearAmbientCapabilities, clearInheritableCapabilities } from '@mnedc/tun';
import type { Logger } from 'pino';

/**
 * One hook process, without the daemon's privileges. The client holds CAP_NET_ADMIN (as user mnedc with
 * it as an ambient capability under systemd, or as root from a source tree), and a child would inherit
 * it. Two ways keep it from hooks:
 *
 * - At start the daemon empties its own ambient set (withholdCapabilitiesFromChildren), keeping its
 *   permitted and effective CAP_NET_ADMIN for the TUN. A non-root exec then gets no capability, so a
 *   non-root daemon execs its hooks directly. This is the packaged unit's case, whose seccomp filter
 *   (SystemCallFilter=~@privileged) denies capset(2) and with it every use of setpriv.
 * - Otherwise (a root daemon, hook_user, a daemon still holding ambient capabilities or CAP_SETPCAP) the
 *   hook is started through util-linux setpriv(1), which execs it in place (same pid, so the process-group
 *   kill on timeout still reaches it) after no_new_privs (no gain through setuid bits), empty inheritable
 *   and ambient sets, an empty bounding set where the daemon may change it (CAP_SETPCAP, i.e. root: root's
 *   exec is given its bounding set, so this is what leaves a root hook without capabilities), and
 *   optionally another user (`[discovery] hook_user`) with that user's groups.
 *
 * Either way a program a hook runs that carries file capabilities gets those of them the daemon holds
 * (no_new_privs only caps file capabilities at the daemon's permitted set); only an empty bounding set,
 * i.e. a root daemon, rules that out.
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
  /** The effective uid: 0 makes an exec root's too. */
  euid: number;
  gid: number;
  effective: bigint;
  /** What a non-root exec passes on as permitted and effective capabilities. */
  ambient: bigint;
}

export function currentPrivileges(): Privileges {
  const uid = process.getuid?.() ?? -1;
  const euid = process.geteuid?.() ?? uid;
  let caps: Pick<CapabilitySets, 'effective' | 'ambient'>;
  try {
    caps = parseCapabilities(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    // No /proc: assume the worst the uid allows, so hooks go through setpriv and a root daemon still
    // empties the bounding set.
    caps = { effective: uid === 0 ? (1n << 64n) - 1n : 0n, ambient: (1n << 64n) - 1n };
  }
  return { uid, euid, gid: process.getgid?.() ?? -1, effective: caps.effective, ambient: caps.ambient };
}

/**
 * Called once at daemon start, before any hook can run (the choice between setpriv and a direct exec reads
 * the ambient set): empties the ambient set, so children get no capability, while the daemon keeps its own.
 *
 * The inheritable set is emptied too where capset(2) is allowed. It matters only to a program carrying
 * inheritable file capabilities: it gets those also in our inheritable set, no_new_privs notwithstanding
 * (the kernel then caps file capabilities at the daemon's permitted set, which holds CAP_NET_ADMIN).
 * Under the packaged unit capset is denied and CAP_NET_ADMIN stays inheritable (systemd puts ambient
 * capabilities there, and the kernel keeps ambient ⊆ inheritable); hooks then show it in CapInh, inert
 * for every file without file capabilities. Files with them can only be made by root, who can as well give
 * permitted ones, which no unprivileged setting stops (see the top of this file); so this is no reason to
 * fail, nor to widen the unit's filter. Per thread: call on the main thread, the one that forks children.
 */
export function withholdCapabilitiesFromChildren(log: Pick<Logger, 'debug' | 'warn'>): void {
  try {
    clearAmbientCapabilities();
  } catch (err) {
    // Hooks then keep going through setpriv, which empties the set for each of them where it can run.
    log.warn({ err }, `Cannot clear this process's ambient capabilities: ${(err as Error).message}; hooks are started through setpriv`);
  }
  try {
    if (!clearInheritableCapabilities()) log.debug('capset(2) is denied (a seccomp filter): the inheritable capability set stays as it is');
  } catch (err) {
    log.warn({ err }, `Cannot clear this process's inheritable capabilities: ${(err as Error).message}`);
  }
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

/**
 * setpriv's options (up to and including '--') for a daemon with `self`'s privileges, or [] where an exec
 * passes the hook no capability anyway: neither uid 0, no ambient capability, no bounding set to empty,
 * no user to switch to. That exec needs no capset(2), which the packaged unit's seccomp filter denies.
 */
export function sandboxArgs(self: Privileges, user: HookUser | null): string[] {
  const switchUser = user !== null && (user.uid !== self.uid || user.gid !== self.gid);
  const setpcap = hasCapability(self.effective, CAP_SETPCAP);
  if (self.uid !== 0 && self.euid !== 0 && self.ambient === 0n && !setpcap && !switchUser) return [];
  const args = ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all'];
  if (setpcap) args.push('--bounding-set=-all');
  if (switchUser) args.push(`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups');
  args.push('--');
  return args;
}

/** The setpriv options for `hookUser` ('' = the daemon's own user), or [] (see sandboxArgs); throws HookUserError when unusable. */
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
  /** setpriv's options, from hookSandbox(); [] execs the hook directly. */
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
 * SystemCallFilter=~@privileged does) stops every hook that needs setpriv: the message says so. Such hooks
 * are never started without it instead.
 */
function setprivFailure(code: number | null, stderr: string): Error | null {
  if ((code !== 126 && code !== 127) || !stderr.startsWith(`${SETPRIV}: `)) return null;
  const said = stderr.split('\n')[0]!;
  const capset = /capabilit/.test(said) && /not permitted/i.test(said);
  return new Error(capset ? `${said} (is capset(2) denied by a seccomp filter? Under systemd, SystemCallFilter= must allow capset)` : said.slice(SETPRIV.length + 2));
}

function setprivMissing(err: NodeJS.ErrnoException): Error {
  return err.code === 'ENOENT' ? new Error(`${SETPRIV} (util-linux) is not installed: hooks run through it here, without the daemon's capabilities`) : err;
}

/** A hook exec'd directly that could not be: the path is there (it was listed), so ENOENT means its #! line. */
function execFailure(path: string, err: NodeJS.ErrnoException): Error {
  const why = err.code === 'ENOENT' ? 'ENOENT (is the interpreter on its #! line installed?)' : err.code ?? err.message;
  const failure: NodeJS.ErrnoException = new Error(`cannot execute ${path}: ${why}`);
  if (err.code) failure.code = err.code;
  return failure;
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
    const direct = spec.sandbox.length === 0;
    let child: ChildProcess;
    try {
      const options = { detached: true, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'], env: spec.env };
      child = direct ? spawn(spec.path, spec.args, options) : spawn(SETPRIV, [...spec.sandbox, spec.path, ...spec.args], options);
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
      if (child.pid === undefined) finish(direct ? execFailure(spec.path, err as NodeJS.ErrnoException) : setprivMissing(err as NodeJS.ErrnoException));
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
