/**
 * A real OpenSSH session between two lab namespaces: OpenSSH's sshd in one node, the OpenSSH client in
 * another, with throwaway keys, so a test can show that an interactive ssh session crosses a network (and
 * keeps going while something happens to it).
 *
 *   const sshd = await startSshd(lab, 'srv', 'fd00::10');          // sshd on [fd00::10]:2222 in srv
 *   const session = sshSession(lab, 'a', sshd, 'fd00::10');         // ssh root@fd00::10 from a
 *   await session.waitFor(/^echoed 20$/);                           // 20 lines went there and back
 *   const { code } = await session.stop();                          // ends ssh cleanly: code 0
 *   await sshd.stop();                                              // sshd gone, its temp dir removed
 *
 * startSshd(lab, node, listen, { port = 2222, maxMs = 600 s }) makes a temp dir with a fresh ed25519 host key,
 * a client key, authorized_keys, known_hosts and an sshd_config (ListenAddress listen, IPv4 or IPv6 literal;
 * root by key only; no PAM, no passwords), starts `sshd -D -e` inside the node's namespace and resolves
 * once sshd logs "Server listening on" (rejects with sshd's log if it exits first or does not get there in
 * 10 s). The result's `daemon` holds sshd's log lines (`daemon.waitForRaw(/Accepted publickey for root from
 * fd00::20 /)`), `sshArgs(address)` is an ssh command line reaching it (for one-shot `lab.exec`s), `stop()`
 * ends sshd and the sessions it serves (SIGTERM, then SIGKILL) and removes the temp dir; after maxMs sshd
 * is killed anyway.
 *
 * sshSession(lab, fromNode, sshd, address, { intervalMs = 100, maxMs = 600 s }) runs a small node process
 * in fromNode that starts `ssh … root@address` with a remote loop echoing every line it reads back as
 * "echoed LINE", and writes "1", "2", … to it every intervalMs. It is a Daemon (overlay.ts): each line ssh
 * prints is a log line whose msg is the line itself ("echoed 7"), ssh's stderr lines are "ssh: …", and the
 * end is "ssh exited" with its code and signal. stop() closes ssh's input, so the remote loop and then ssh
 * end normally (exit code 0 when the session was intact), and resolves with that exit status.
 *
 * `lab` is a Lab or a ClusterLab (anything whose spawn runs argv in a node's namespace and kills it on
 * destroy). A Lab also gets sshd attached, so lab.destroy() stops it and removes its temp dir.
 *
 * The sshd binary is Debian's, which scripts/setup.sh extracts to /usr/local/lib/mnedc-lab/sshd (with any
 * library this machine lacks in /usr/local/lib/mnedc-lab/lib) without installing openssh-server; $MNEDC_SSHD
 * overrides it, /usr/sbin/sshd is the fallback. sshdBinary() is undefined when there is none: tests skip.
 *
 * The package would also have created the `sshd` user, which sshd needs for privilege separation, and root
 * may have a locked password ("!" in /etc/shadow), which sshd refuses without PAM. The host's accounts are
 * left alone: sshd runs in a mount namespace of its own (unshare --mount, on top of `ip netns exec`'s) in
 * which the temp dir's copy of /etc/passwd (plus an `sshd` entry if the host has none) and a two-line shadow
 * (root and sshd, no password) are bind-mounted over /etc/passwd and /etc/shadow. Those mounts vanish with
 * sshd. The only trace on the host is /run/sshd, the empty privsep directory sshd requires, created if missing.
 * sshd is also process 1 of a PID namespace of its own, so every process it forks (connections, sessions)
 * dies with it, and `timeout` bounds its life.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { killTree, runCommand, type LabAttachment, type LabNodeName } from './lab';
import { Daemon } from './overlay';

/** Where scripts/setup.sh puts sshd, and the libraries it needs that the host lacks. */
export const LAB_PRIVATE_DIR = '/usr/local/lib/mnedc-lab';
export const SSHD_PORT = 2222;
/** The name the host key is known under in known_hosts (ssh -o HostKeyAlias), whatever address is used. */
export const SSHD_HOST_KEY_ALIAS = 'mnedc-lab-sshd';
const READY_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_MS = 600_000;
const PRIVSEP_DIR = '/run/sshd';

/** What startSshd and sshSession need of a lab: Lab and ClusterLab both fit. */
export interface SshLab {
  spawn(node: string, argv: string[], options?: { pipe?: boolean; env?: NodeJS.ProcessEnv }): ChildProcess;
  attach?(attachment: LabAttachment): void;
  detach?(attachment: LabAttachment): void;
}

export interface Sshd {
  readonly node: string;
  readonly listen: string;
  readonly port: number;
  /** Temp dir with keys, config and the passwd/shadow overlays; removed by stop(). */
  readonly dir: string;
  /** Private key the server accepts for root (ssh -i). */
  readonly clientKey: string;
  /** known_hosts with the server's host key under SSHD_HOST_KEY_ALIAS. */
  readonly knownHosts: string;
  /** sshd itself: its log lines (stderr, -e) in daemon.raw. */
  readonly daemon: Daemon;
  /** `ssh … root@address` with this server's key, known_hosts and port; append a remote command. */
  sshArgs(address: string): string[];
  /** Ends sshd and its sessions (SIGTERM, SIGKILL after 5 s), then the temp dir goes. Idempotent. */
  stop(): Promise<void>;
}

export interface SshdOptions {
  port?: number;
  /** sshd is killed after this long whatever happens (default 600 s). */
  maxMs?: number;
}

/** The sshd to use, or undefined if this machine has none (run scripts/setup.sh as root). */
export function sshdBinary(): string | undefined {
  const candidates = [process.env.MNEDC_SSHD, path.join(LAB_PRIVATE_DIR, 'sshd'), '/usr/sbin/sshd'];
  return candidates.find((file): file is string => file !== undefined && file !== '' && existsSync(file));
}

/** A reason to skip ssh tests, or false if they can run. */
export function sshSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces';
  if (sshdBinary() === undefined) return `no sshd (run scripts/setup.sh as root: it extracts one to ${LAB_PRIVATE_DIR})`;
  if (!existsSync('/usr/bin/ssh')) return 'no ssh client (openssh-client)';
  return false;
}

/** An address as sshd_config's ListenAddress wants it with a port: IPv6 in brackets. */
function listenAddress(listen: string, port: number): string {
  const host = listen.startsWith('[') && listen.endsWith(']') ? listen.slice(1, -1) : listen;
  const family = isIP(host.split('%')[0]!);
  if (family === 0 || (family === 4 && host.includes('%'))) throw new Error(`sshd: listen must be an IP address, not ${JSON.stringify(listen)}`);
  return family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The host's passwd with an `sshd` privsep user added if it has none (uid: a free one below 65000). */
function passwdWithSshd(): string {
  let passwd = readFileSync('/etc/passwd', 'utf8');
  if (!passwd.endsWith('\n')) passwd += '\n';
  if (/^sshd:/m.test(passwd)) return passwd;
  const used = new Set(passwd.split('\n').map((line) => Number(line.split(':')[2])));
  let uid = 64_999;
  while (used.has(uid)) uid--;
  return `${passwd}sshd:x:${uid}:65534:mnedc lab sshd privilege separation:${PRIVSEP_DIR}:/usr/sbin/nologin\n`;
}

async function keygen(file: string, comment: string): Promise<void> {
  const result = await runCommand('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], 15_000);
  if (result.code !== 0) throw new Error(`ssh-keygen failed (${result.code}): ${result.stderr}`);
}

const tempDirs = new Set<string>();
let exitHookInstalled = false;
function trackTempDir(dir: string): void {
  tempDirs.add(dir);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Processes die with the lab (its children are SIGKILLed); temp dirs of sshds nobody stopped go here.
  process.once('exit', () => {
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  });
}

/** Starts sshd in `node`'s namespace on `listen` (see the top of this file). */
export async function startSshd(lab: SshLab, node: LabNodeName | string, listen: string, options: SshdOptions = {}): Promise<Sshd> {
  const binary = sshdBinary();
  if (binary === undefined) throw new Error(`sshd: none found (run scripts/setup.sh as root: it extracts one to ${LAB_PRIVATE_DIR})`);
  const port = options.port ?? SSHD_PORT;
  const maxMs = options.maxMs ?? DEFAULT_MAX_MS;
  const address = listenAddress(listen, port);
  const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-sshd-'));
  trackTempDir(dir);
  const removeDir = (): void => {
    rmSync(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  };
  let child: ChildProcess | undefined;
  try {
    const file = (name: string): string => path.join(dir, name);
    await Promise.all([keygen(file('host_key'), 'mnedc lab sshd host key'), keygen(file('client_key'), 'mnedc lab ssh client')]);
    writeFileSync(file('authorized_keys'), readFileSync(file('client_key.pub')));
    writeFileSync(file('known_hosts'), `${SSHD_HOST_KEY_ALIAS} ${readFileSync(file('host_key.pub'), 'utf8').trim()}\n`);
    writeFileSync(file('passwd'), passwdWithSshd(), { mode: 0o644 });
    writeFileSync(file('shadow'), 'root:*:19000::::::\nsshd:*:19000::::::\n', { mode: 0o600 });
    writeFileSync(file('sshd_config'), [
      `ListenAddress ${address}`,
      `HostKey ${file('host_key')}`,
      `AuthorizedKeysFile ${file('authorized_keys')}`,
      `PidFile ${file('sshd.pid')}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'UseDNS no',
      'PrintMotd no',
      'PrintLastLog no',
      'LogLevel INFO',
      '',
    ].join('\n'));
    mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });

    // Inside the node's namespace: timeout (the spawned process) bounds the whole thing's life; unshare gives
    // sshd a mount namespace for the passwd/shadow overlays and a PID namespace in which sshd is process 1.
    // So sshd reaps every orphan of its own, and when it ends the kernel kills and reaps whatever it forked
    // (connections, their sessions): nothing of it outlives it, nothing is left for the host's init.
    // (--kill-child: if timeout or unshare is killed, sshd is too.)
    const script = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow && shift 2 && exec "$@"';
    const libDir = path.join(LAB_PRIVATE_DIR, 'lib');
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (existsSync(libDir)) env.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH ? `${libDir}:${env.LD_LIBRARY_PATH}` : libDir;
    child = lab.spawn(node, [
      'timeout', '-s', 'KILL', `${Math.ceil(maxMs / 1000)}s`,
      'unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL',
      'sh', '-c', script, 'sshd-overlay', file('passwd'), file('shadow'), binary, '-D', '-e', '-f', file('sshd_config'),
    ], { pipe: true, env });
    const daemon = new Daemon(`sshd@${node}`, child);
    await daemon.waitForRaw(/^Server listening on /, READY_TIMEOUT_MS);

    let stopping: Promise<void> | undefined;
    const attachment: LabAttachment = {
      teardown: () => sshd.stop(),
      teardownSync: () => {
        killTree(child!, 'SIGKILL');
        removeDir();
      },
    };
    const sshd: Sshd = {
      node,
      listen,
      port,
      dir,
      clientKey: file('client_key'),
      knownHosts: file('known_hosts'),
      daemon,
      sshArgs: (to: string) => sshCommand(sshd, to),
      stop: () => {
        stopping ??= (async () => {
          lab.detach?.(attachment);
          // SIGTERM goes to sshd itself (timeout would pass it to unshare, which ignores it while it waits);
          // once sshd and its PID namespace are gone, unshare and timeout end, and so does `daemon`.
          const sshdPid = childrenOf(childrenOf(child!.pid)[0])[0];
          if (!daemon.exited) {
            if (sshdPid === undefined) killTree(child!, 'SIGKILL');
            else {
              try {
                process.kill(sshdPid, 'SIGTERM');
              } catch {
                /* ended meanwhile */
              }
            }
          }
          await daemon.waitExit(5_000).catch(() => {
            killTree(child!, 'SIGKILL');
            return daemon.waitExit(5_000);
          });
          removeDir();
        })();
        return stopping;
      },
    };
    lab.attach?.(attachment);
    return sshd;
  } catch (err) {
    if (child) {
      killTree(child, 'SIGKILL');
      await new Promise<void>((resolve) => {
        if (child!.exitCode !== null || child!.signalCode !== null) resolve();
        else {
          const timer = setTimeout(resolve, 5_000);
          child!.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
        }
      });
    }
    removeDir();
    throw err;
  }
}

/** PIDs of the children of `pid` (Linux's /proc/PID/task/TID/children; the processes here are single-threaded). */
function childrenOf(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function sshCommand(sshd: Sshd, address: string): string[] {
  const host = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  return [
    'ssh', '-F', 'none', '-T', '-i', sshd.clientKey,
    '-o', 'IdentitiesOnly=yes',
    '-o', `UserKnownHostsFile=${sshd.knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', `HostKeyAlias=${SSHD_HOST_KEY_ALIAS}`,
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=10',
    '-p', String(sshd.port),
    `root@${host}`,
  ];
}

export interface SshSessionOptions {
  /** A numbered line goes to the session this often (default 100 ms). */
  intervalMs?: number;
  /** The session is ended (as by stop()) after this long (default 600 s). */
  maxMs?: number;
}

/** An interactive ssh session (see the top of this file); stop() ends it and resolves with ssh's exit status. */
export class SshSession extends Daemon {
  async stop(timeoutMs = 10_000): Promise<{ code: number | null; signal: string | null }> {
    if (!this.exited) {
      this.signal('SIGTERM');
      await this.waitExit(timeoutMs).catch(() => {
        killTree(this.child, 'SIGKILL');
        return this.waitExit(5_000);
      });
    }
    return this.exited!;
  }
}

/** Runs in the session's node: ssh with piped stdio, numbered lines in, every line out as a JSON log line. */
const SESSION_SCRIPT = `
const { spawn } = require('child_process');
const [argv, intervalMs, maxMs] = JSON.parse(process.argv[1]);
const say = (msg, extra) => { try { process.stdout.write(JSON.stringify({ time: new Date().toISOString(), msg, ...extra }) + '\\n'); } catch {} };
const ssh = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
say('ssh started', { pid: ssh.pid });
let n = 0, timer, ending = false;
const lines = (stream, each) => { let buf = ''; stream.setEncoding('utf8'); stream.on('data', (d) => { buf += d; const l = buf.split('\\n'); buf = l.pop(); l.forEach((line) => each(line.replace(/\\r$/, ''))); }); };
lines(ssh.stdout, (l) => say(l));
lines(ssh.stderr, (l) => say('ssh: ' + l));
ssh.stdin.on('error', () => {});
timer = setInterval(() => ssh.stdin.write(++n + '\\n'), intervalMs);
const end = () => {
  if (ending) return;
  ending = true;
  clearInterval(timer);
  ssh.stdin.end();
  setTimeout(() => ssh.kill('SIGKILL'), 5000).unref();
};
process.on('SIGTERM', end);
process.on('SIGINT', end);
process.stdout.on('error', () => { ssh.kill('SIGKILL'); process.exit(1); });
setTimeout(end, maxMs).unref();
ssh.on('error', (e) => { say('ssh error ' + e.message); process.exit(2); });
ssh.on('close', (code, signal) => { clearInterval(timer); say('ssh exited', { code, signal, sent: n }); process.exit(code ?? 1); });
`;

/** Starts an ssh session from `fromNode` to sshd at `address` (see the top of this file). */
export function sshSession(lab: SshLab, fromNode: LabNodeName | string, sshd: Sshd, address: string, options: SshSessionOptions = {}): SshSession {
  const argv = [...sshd.sshArgs(address), 'while read -r l; do echo "echoed $l"; done'];
  const config = JSON.stringify([argv, options.intervalMs ?? 100, options.maxMs ?? DEFAULT_MAX_MS]);
  return new SshSession(`ssh@${fromNode}`, lab.spawn(fromNode, [process.execPath, '-e', SESSION_SCRIPT, config], { pipe: true }));
}
