import { chmodSync, constants as fsConstants, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { RateLimitedWarning, writeFileAtomic, type Logger } from '@mnedc/common';
import type { PeerInfo } from '@mnedc/protocol';
import { HookProcess, hookSandbox, KILL_GRACE_MS, REAP_GRACE_MS } from './hook-runner';
import { EventQueue, hookCandidates, hookEnvironment, MAX_QUEUED_EVENTS, type QueuedEvent, type SelfInfo } from './hook-events';
import { renderHosts, sortedPeers } from './hosts';
import type { PeerChanges } from './peer-table';

export { hookCandidates, MAX_QUEUED_EVENTS, type PeerEvent, type SelfInfo } from './hook-events';

/**
 * The discovery hand-off: once the client learns which peers are on the overlay (and their virtual IPs),
 * it tells the rest of the device, so orchestration (SSH configs, cluster joins, service registries…)
 * can reach the peers. Three outputs, each optional:
 *
 * - `peersFile` (JSON), rewritten atomically after every change, for programs that poll or watch it;
 * - `hostsFile` (hosts(5) format), for resolvers to include: `<deviceId>.mnedc`, `<hostname>.mnedc` and
 *   the bare `<hostname>` for every peer and for this device, as hosts.ts ranks the claims on each name;
 * - hooks: run-parts style executables in `hookDir`, run once per peer event ('up' | 'down'), without the
 *   daemon's capabilities and optionally as another user (hook-runner.ts).
 */

export interface DiscoveryConfig {
  /** Directory of hook executables, e.g. /etc/mnedc/peer.d; '' disables hooks, a missing directory has none. */
  hookDir: string;
  /** A hook still running after this is killed (SIGTERM to its process group, SIGKILL 2 s later). */
  hookTimeoutMs: number;
  /** The user hooks run as; '' (the default) = the daemon's own user. */
  hookUser?: string;
  /** e.g. /run/mnedc/peers.json; '' disables. */
  peersFile: string;
  /** e.g. /run/mnedc/hosts; '' disables. */
  hostsFile: string;
}

export interface DiscoveryStats {
  /** Hook executions attempted (including those that could not be started). */
  hookRuns: number;
  /** Hooks that exited non-zero, died of a signal other than our timeout kill, or could not be started. */
  hookFailures: number;
  /** Hooks killed because they ran longer than hookTimeoutMs (not counted in hookFailures). */
  hookTimeouts: number;
  /** Peer events waiting for their hooks to run. */
  queued: number;
  /** Hook processes running now. */
  running: number;
  /** Peer events dropped (oldest first) because more than MAX_QUEUED_EVENTS were pending. */
  dropped: number;
}

interface HookRun {
  name: string;
  process: HookProcess;
}

/** The peers.json document (without the trailing newline). */
export function renderPeersJson(self: SelfInfo | null, peers: readonly PeerInfo[], now = Date.now()): string {
  const doc = {
    updatedAt: now,
    self: self ? { deviceId: self.deviceId, ip: self.ip, hostname: self.hostname } : null,
    peers: sortedPeers(peers).map((p) => ({
      deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, underlay: [...p.underlay], since: p.since,
    })),
  };
  return JSON.stringify(doc, null, 2);
}

export class DiscoveryHandoff {
  private config: DiscoveryConfig;
  private readonly maxConcurrentHooks: number;
  private readonly queue = new EventQueue();
  private readonly runs = new Set<HookRun>();
  private readonly counters = { hookRuns: 0, hookFailures: 0, hookTimeouts: 0, dropped: 0 };
  private pumping = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  private runWaiters: Array<() => void> = [];
  /** The hook directory we already said is missing (debug, once). */
  private missingDirLogged = '';
  /** Skip rewriting an unchanged hosts file (no needless fsync, no resolver reload). */
  private lastHosts: { path: string; text: string } | null = null;
  /** Queue overflow and file problems, each rate-limited on its own. */
  private readonly warnings: RateLimitedWarning;
  /** setpriv's options for hooks under config.hookUser. */
  private sandbox: string[];

  /** Throws HookUserError when config.hookUser cannot be used: a configuration error. */
  constructor(config: DiscoveryConfig, private readonly log: Logger, options: { maxConcurrentHooks?: number } = {}) {
    this.warnings = new RateLimitedWarning(log);
    this.sandbox = hookSandbox(config.hookUser ?? '');
    this.config = { ...config };
    this.maxConcurrentHooks = Math.max(1, Math.floor(options.maxConcurrentHooks ?? 4));
  }

  /**
   * Called after every peer-table change: rewrites peers.json and the hosts file atomically, and queues one
   * hook run per change (changes.up → 'up', then changes.down → 'down'). Never blocks, never throws.
   */
  update(self: SelfInfo | null, peers: PeerInfo[], changes: PeerChanges): void {
    if (this.closed) return;
    const { peersFile, hostsFile, hookDir } = this.config;
    try {
      if (peersFile) this.writePeersFile(peersFile, self, peers);
      if (hostsFile) this.writeHostsFile(hostsFile, self, peers);
      if (!hookDir) return;
      const selfCopy = self ? { deviceId: self.deviceId, ip: self.ip, hostname: self.hostname } : null;
      for (const peer of changes.up) this.queue.push({ event: 'up', peer, self: selfCopy, peersFile });
      for (const peer of changes.down) this.queue.push({ event: 'down', peer, self: selfCopy, peersFile });
      let dropped = 0;
      while (this.queue.length > MAX_QUEUED_EVENTS) {
        this.queue.shift();
        dropped++;
      }
      if (dropped > 0) {
        this.counters.dropped += dropped;
        const droppedTotal = this.counters.dropped;
        this.warnings.warn('queue', () => ({
          fields: { dropped, droppedTotal, limit: MAX_QUEUED_EVENTS },
          message: `Peer hook queue is full (more than ${MAX_QUEUED_EVENTS} events pending): dropped the ${dropped} oldest events, their hooks will not run`,
        }));
      }
      this.kick();
    } catch (err) {
      this.log.error({ err }, `Discovery hand-off failed to process a peer update: ${(err as Error).message}`);
    }
  }

  /**
   * SIGHUP: the new hook dir, timeout and user apply to hook runs started afterwards; new file paths at the
   * next update. A hook user that cannot be used is reported and the one in force kept.
   */
  reconfigure(config: DiscoveryConfig): void {
    const before = this.config;
    this.config = { ...config };
    if ((config.hookUser ?? '') !== (before.hookUser ?? '')) {
      try {
        this.sandbox = hookSandbox(config.hookUser ?? '');
      } catch (err) {
        this.config.hookUser = before.hookUser;
        this.log.error({ err, hookUser: config.hookUser },
          `[discovery] hook_user: ${(err as Error).message}; hooks keep running as ${before.hookUser || "the daemon's own user"}`);
      }
    }
    if (before.hookDir !== config.hookDir) this.missingDirLogged = '';
    this.lastHosts = null; // a reload rewrites the hosts file even if unchanged (it may have been removed)
    this.log.debug({ ...config }, 'Discovery hand-off reconfigured');
  }

  stats(): DiscoveryStats {
    return { ...this.counters, queued: this.queue.length, running: this.runs.size };
  }

  /** Resolves once no event is queued and no hook is running (at once if so already). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Drops the queue and waits for running hooks: they get until their timeout, then are killed; the
   * whole wait is bounded by hookTimeoutMs + 3 s, after which any survivor's process group gets SIGKILL.
   */
  async close(): Promise<void> {
    this.closed = true;
    const dropped = this.queue.length;
    this.queue.clear();
    if (dropped > 0) this.log.info({ dropped }, `Discovery hand-off closing: ${dropped} queued peer events dropped`);
    if (this.runs.size > 0) {
      this.log.info({ running: this.runs.size }, `Discovery hand-off closing: waiting for ${this.runs.size} running hooks`);
      const boundMs = this.config.hookTimeoutMs + KILL_GRACE_MS + REAP_GRACE_MS;
      let bound: NodeJS.Timeout | undefined;
      const allDone = new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.runs.size === 0) resolve();
          else this.runWaiters.push(check);
        };
        check();
      });
      const timedOut = new Promise<boolean>((resolve) => { bound = setTimeout(() => resolve(true), boundMs); });
      const late = await Promise.race([allDone.then(() => false), timedOut]);
      clearTimeout(bound);
      if (late) {
        for (const run of this.runs) {
          this.log.warn({ hook: run.name, pid: run.process.pid }, `Hook ${run.name} still running at shutdown after ${boundMs} ms: killed`);
          run.process.killGroup('SIGKILL');
        }
      }
    }
    this.notifyIdle();
  }

  // ---- files ----

  private writePeersFile(path: string, self: SelfInfo | null, peers: PeerInfo[]): void {
    try {
      writeFileAtomic(path, renderPeersJson(self, peers) + '\n', 0o644);
      chmodSync(path, 0o644); // the temporary file's mode went through the umask
    } catch (err) {
      this.warnings.warn('peersFile', () => ({ fields: { err, path }, message: `Could not write the peers file ${path}: ${(err as Error).message}` }));
    }
  }

  private writeHostsFile(path: string, self: SelfInfo | null, peers: PeerInfo[]): void {
    const text = renderHosts(self, peers);
    if (this.lastHosts && this.lastHosts.path === path && this.lastHosts.text === text) return;
    try {
      writeFileAtomic(path, text, 0o644);
      chmodSync(path, 0o644);
      this.lastHosts = { path, text };
    } catch (err) {
      this.lastHosts = null;
      this.warnings.warn('hostsFile', () => ({ fields: { err, path }, message: `Could not write the hosts file ${path}: ${(err as Error).message}` }));
    }
  }

  // ---- hooks ----

  private isIdle(): boolean {
    return !this.pumping && this.queue.length === 0 && this.runs.size === 0;
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private kick(): void {
    if (this.pumping || this.closed || this.queue.length === 0) return;
    this.pumping = true;
    this.pump()
      .catch((err: Error) => this.log.error({ err }, `Peer hook runner failed: ${err.message}`))
      .finally(() => {
        this.pumping = false;
        if (this.queue.length > 0 && !this.closed) this.kick();
        else this.notifyIdle();
      });
  }

  /** Events strictly in order; the next starts only when every hook of the previous one is done. */
  private async pump(): Promise<void> {
    for (let ev = this.queue.shift(); ev && !this.closed; ev = this.queue.shift()) {
      const { hookDir, hookTimeoutMs } = this.config;
      if (!hookDir) continue;
      const hooks = await this.scanHooks(hookDir);
      if (hooks.length === 0 || this.closed) continue;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < hooks.length && !this.closed) {
          const name = hooks[next++]!;
          await this.runHook(hookDir, name, ev!, hookTimeoutMs);
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.maxConcurrentHooks, hooks.length) }, worker));
    }
  }

  /** run-parts: regular executable files (symlinks followed), sorted by name, skipping dotfiles and backups. */
  private async scanHooks(dir: string): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        if (this.missingDirLogged !== dir) {
          this.missingDirLogged = dir;
          this.log.debug({ hookDir: dir }, `Peer hook directory ${dir} does not exist: no hooks to run`);
        }
      } else {
        this.warnings.warn('hookDir', () => ({ fields: { err, hookDir: dir }, message: `Could not read the peer hook directory ${dir}: ${(err as Error).message}` }));
      }
      return [];
    }
    if (this.missingDirLogged === dir) this.missingDirLogged = '';
    const candidates = hookCandidates(names);
    const runnable = await Promise.all(candidates.map(async (name) => {
      const path = join(dir, name);
      try {
        const st = await fsp.stat(path);
        if (!st.isFile() || (st.mode & 0o111) === 0) return false;
        await fsp.access(path, fsConstants.X_OK);
        return true;
      } catch {
        return false; // dangling symlink, vanished meanwhile, not executable for us
      }
    }));
    return candidates.filter((_, i) => runnable[i]);
  }

  private runHook(dir: string, name: string, ev: QueuedEvent, timeoutMs: number): Promise<void> {
    const { event, peer } = ev;
    const fields = { hook: name, event, peer: peer.deviceId, ip: peer.ip };
    this.counters.hookRuns++;
    const env = hookEnvironment(ev, process.env);
    const hook = new HookProcess({ path: join(dir, name), args: [event], env, timeoutMs, sandbox: this.sandbox }, (signal, err) => {
      this.log.warn({ hook: name, pgid: hook.pid, err }, `Could not send ${signal} to hook ${name} (process group ${hook.pid}): ${err.message}`);
    });
    const run: HookRun = { name, process: hook };
    if (hook.pid !== undefined) this.runs.add(run);
    return hook.done.then((outcome) => {
      if (this.runs.delete(run)) {
        const waiters = this.runWaiters;
        this.runWaiters = [];
        for (const w of waiters) w();
      }
      if (outcome.kind === 'unstarted') {
        const err = outcome.error;
        this.counters.hookFailures++;
        this.log.warn({ ...fields, err, errno: (err as NodeJS.ErrnoException).code },
          `Hook ${name} could not be started for peer ${peer.deviceId} ${event}: ${err.message}`);
        return;
      }
      const { stdout, stderr } = outcome;
      const output = { stderr: stderr || undefined, stdout: stdout || undefined };
      if (outcome.kind === 'timeout') {
        this.counters.hookTimeouts++;
        this.log.warn({ ...fields, timeoutMs, ...output }, `Hook ${name} timed out after ${timeoutMs} ms: killed (peer ${peer.deviceId} ${event})`);
      } else if (outcome.code !== 0) {
        this.counters.hookFailures++;
        const why = outcome.signal ? `killed by signal ${outcome.signal}` : outcome.exited ? `exit code ${outcome.code}` : 'no exit status';
        this.log.warn({ ...fields, code: outcome.code, signal: outcome.signal ?? undefined, ms: outcome.ms, ...output },
          `Hook ${name} failed for peer ${peer.deviceId} ${event}: ${why}${stderr ? `: ${stderr}` : ''}`);
      } else {
        this.log.debug({ ...fields, ms: outcome.ms, ...output }, `Hook ${name} ran for peer ${peer.deviceId} ${event} in ${outcome.ms} ms`);
      }
    });
  }
}
