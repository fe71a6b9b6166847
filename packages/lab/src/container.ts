/**
 * A Debian system booted by systemd-nspawn inside one namespace of a lab: real systemd, journald, apt and
 * dpkg, on the lab's network (the container shares the node's network namespace, so it sits behind that
 * node's NATs). Its root is an overlayfs over a cached, read-only root file system
 * (scripts/system-rootfs.sh): what the container changes (packages, state) survives its reboots and is
 * thrown away with it. The lab tears containers down before its namespaces, also from exit handlers.
 *
 * There is no machined on this host (PID 1 is not systemd), so containers are not registered: commands
 * run inside through nsenter on the container's init, whose PID systemd-nspawn reports on NOTIFY_SOCKET
 * (X_NSPAWN_LEADER_PID) together with READY=1 once the container's systemd has finished booting.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand, type ExecResult, type Lab, type LabAttachment, type LabNodeName } from './lab';
import { notifySocket } from './notify-socket';
import { Daemon } from './overlay';

/** Containers' overlay directories, one per container, named after it (a sweep can find leftovers). */
export const CONTAINER_ROOT = '/run/mnedc-containers';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BOOT_TIMEOUT_MS = 120_000;
const HALT_TIMEOUT_MS = 60_000;
/** systemd-nspawn's exit status when the container's init asked for a reboot. */
const NSPAWN_REBOOT_STATUS = 133;

export interface ContainerOptions {
  /** The read-only lower layer: a Debian root file system. */
  rootfs: string;
  /** Host directories bound read-only into the container: host path → container path. */
  bindReadOnly?: Record<string, string>;
  /** Files written into the container's root before its first boot: container path → content. */
  files?: Record<string, string>;
}

export class Container implements LabAttachment {
  readonly name: string;
  private readonly dir: string;
  private readonly merged: string;
  private nspawn: Daemon | undefined;
  private readonly followers = new Set<Daemon>();
  private notify: Daemon | undefined;
  private leader = 0;
  private mounted = false;

  private constructor(private readonly lab: Lab, readonly node: LabNodeName, private readonly options: ContainerOptions) {
    this.name = lab.ns(node);
    this.dir = path.join(CONTAINER_ROOT, this.name);
    this.merged = path.join(this.dir, 'merged');
  }

  /** Builds the container's root (overlay, unique machine ID, hostname = node name) and boots it. */
  static async boot(lab: Lab, node: LabNodeName, options: ContainerOptions): Promise<Container> {
    const container = new Container(lab, node, options);
    lab.attach(container);
    try {
      container.prepareRoot();
      container.notify = await notifySocket(lab, node, path.join(container.dir, 'notify'));
      await container.start();
    } catch (e) {
      await container.teardown().catch(() => undefined);
      lab.detach(container);
      throw e;
    }
    return container;
  }

  /** Runs a shell script inside the container as root (a login-like environment, no terminal). */
  async exec(script: string, timeoutMs = 120_000): Promise<ExecResult> {
    return runCommand('nsenter', this.inside(script), timeoutMs);
  }

  /**
   * Starts a long-running command inside (e.g. `journalctl -f`) whose output lines can be awaited. It ends
   * before the container reboots or halts: the container's shutdown would wait for it, as for any process.
   */
  follow(script: string): Daemon {
    const child = spawn('nsenter', this.inside(script), { stdio: ['ignore', 'pipe', 'pipe'] });
    const follower = new Daemon(`${this.name}: ${script}`, child);
    this.followers.add(follower);
    child.once('exit', () => this.followers.delete(follower));
    return follower;
  }

  /**
   * The command inside is killed, not nsenter: nsenter then reaps it and exits. Killed first, nsenter would
   * leave it a zombie for the host's init to reap (which may never happen), and the container's shutdown
   * waits for every process in it.
   */
  private async stopFollowers(): Promise<void> {
    const followers = [...this.followers];
    this.followers.clear();
    for (const follower of followers) killChildren(follower.child.pid);
    await Promise.all(followers.map((f) => f.waitExit(5_000).catch(() => f.child.kill('SIGKILL'))));
  }

  /** Like exec, but a non-zero exit is an error carrying the output; resolves to stdout. */
  async run(script: string, timeoutMs?: number): Promise<string> {
    const result = await this.exec(script, timeoutMs);
    if (result.code !== 0) {
      throw new Error(`${this.name}: \`${script}\` exited ${result.code ?? result.signal}` +
        `${result.timedOut ? ' (timed out)' : ''}\n${result.stdout}${result.stderr}`);
    }
    return result.stdout;
  }

  /** `systemctl reboot` inside, then boots the same root again, as a device's power cycle would. */
  async reboot(): Promise<void> {
    const nspawn = this.nspawn!;
    await this.stopFollowers();
    // The command itself is killed by the shutdown it starts: its status means nothing.
    await this.exec('systemctl reboot', 30_000);
    await nspawn.waitExit(HALT_TIMEOUT_MS);
    if (nspawn.exited?.code !== NSPAWN_REBOOT_STATUS) {
      throw new Error(`container ${this.name}: systemd-nspawn exited ${JSON.stringify(nspawn.exited)} instead of rebooting\n${nspawn.tail()}`);
    }
    await this.start();
  }

  /** Orderly halt (bounded), then the overlay and its directories go. */
  async teardown(): Promise<void> {
    await this.stopFollowers();
    const nspawn = this.nspawn;
    if (nspawn && this.running()) {
      // SIGTERM makes systemd-nspawn ask the container's init to power off.
      nspawn.child.kill('SIGTERM');
      await nspawn.waitExit(HALT_TIMEOUT_MS).catch(() => this.kill());
      await nspawn.waitExit(10_000).catch(() => undefined);
    }
    this.notify?.child.kill('SIGKILL');
    this.removeRoot();
    this.lab.detach(this);
  }

  teardownSync(): void {
    for (const follower of this.followers) killChildren(follower.child.pid);
    if (this.running()) this.kill();
    this.notify?.child.kill('SIGKILL');
    this.removeRoot();
  }

  /** nsenter's arguments for a script run as root inside, in a clean environment like a login's. */
  private inside(script: string): string[] {
    if (!this.running()) throw new Error(`container ${this.name} is not running`);
    return ['--target', String(this.leader), '--all', '--',
      'env', '-i', `PATH=${PATH}`, 'LANG=C.UTF-8', 'DEBIAN_FRONTEND=noninteractive', 'HOME=/root', 'sh', '-c', script];
  }

  private running(): boolean {
    return this.nspawn !== undefined && this.nspawn.exited === null;
  }

  /** Killing a PID namespace's init kills everything in it. */
  private kill(): void {
    for (const pid of [this.leader, this.nspawn?.child.pid ?? 0]) {
      try {
        if (pid > 0) process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }

  private prepareRoot(): void {
    if (!fs.existsSync(path.join(this.options.rootfs, 'sbin/init'))) {
      throw new Error(`container ${this.name}: ${this.options.rootfs} is not a bootable root file system (run scripts/system-rootfs.sh)`);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    for (const sub of ['upper', 'work', 'merged']) fs.mkdirSync(path.join(this.dir, sub), { recursive: true });
    const mount = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o',
      `lowerdir=${this.options.rootfs},upperdir=${path.join(this.dir, 'upper')},workdir=${path.join(this.dir, 'work')}`, this.merged],
    { encoding: 'utf8' });
    if (mount.status !== 0) throw new Error(`container ${this.name}: mounting its overlay failed: ${mount.stderr}`);
    this.mounted = true;
    const files: Record<string, string> = {
      // Every device has its own machine ID (mnedc derives device IDs from it); the cached root has none.
      '/etc/machine-id': `${randomBytes(16).toString('hex')}\n`,
      '/etc/hostname': `${this.node}\n`,
      ...this.options.files,
    };
    for (const [file, content] of Object.entries(files)) {
      const target = path.join(this.merged, file);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.rmSync(target, { force: true });
      fs.writeFileSync(target, content);
    }
  }

  private async start(): Promise<void> {
    const notify = this.notify!;
    const from = notify.lines.length;
    const argv = ['--quiet', '--boot', '--register=no', '--keep-unit', '--notify-ready=yes', '--console=read-only',
      `--directory=${this.merged}`, `--machine=${this.name}`, `--network-namespace-path=/run/netns/${this.name}`,
      // nspawn keeps CAP_NET_ADMIN only for --private-network; the lab namespace is just as private.
      '--capability=CAP_NET_ADMIN'];
    for (const [host, guest] of Object.entries(this.options.bindReadOnly ?? {})) argv.push(`--bind-ro=${host}:${guest}`);
    const child = spawn('systemd-nspawn', argv, {
      env: { ...process.env, NOTIFY_SOCKET: path.join(this.dir, 'notify') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const nspawn = new Daemon(`container ${this.name}`, child);
    this.nspawn = nspawn;
    // Daemon.waitFor gives up when *its* process exits; the receiver outlives a failed boot, so watch both.
    const failed = new Promise<never>((_, reject) => {
      child.once('exit', (code, signal) => reject(new Error(
        `container ${this.name}: systemd-nspawn exited (${code ?? signal}) before the container was ready\n${nspawn.tail()}`)));
    });
    failed.catch(() => undefined);
    const leader = await Promise.race([notify.waitFor(/^X_NSPAWN_LEADER_PID=\d+$/, { from, timeoutMs: BOOT_TIMEOUT_MS }), failed]);
    this.leader = Number(leader.msg.split('=')[1]);
    await Promise.race([notify.waitFor(/^READY=1$/, { from, timeoutMs: BOOT_TIMEOUT_MS }), failed]);
  }

  private removeRoot(): void {
    if (this.mounted) {
      // Lazy: a process that was still inside when the container died must not keep the mount alive.
      spawnSync('umount', ['--lazy', this.merged], { stdio: 'ignore' });
      this.mounted = false;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function killChildren(pid: number | undefined): void {
  if (pid === undefined) return;
  let children: string[] = [];
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return; // already gone
  }
  for (const child of children) {
    try {
      process.kill(Number(child), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
