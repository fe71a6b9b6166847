/**
 * Real avahi (mDNS/DNS-SD) inside a network namespace, several at once on one host, none of them on the
 * host's own network.
 *
 * How: avahi-daemon needs a D-Bus system bus (enable-dbus=yes is what avahi-publish and avahi-browse talk
 * to) and keeps its pid file and socket in /run/avahi-daemon; D-Bus clients find the bus at
 * /run/dbus/system_bus_socket. So every instance gets its own mount namespace with its own /run:
 *
 *   holder:  ip netns exec NS unshare --mount --propagation private sh -c 'mount --bind DIR/run /run; …; exec sleep infinity'
 *   bus:     nsenter -t HOLDER -m -n -- dbus-daemon --config-file=DIR/dbus.conf --nofork --nopidfile --print-address=1
 *   daemon:  nsenter -t HOLDER -m -n -- avahi-daemon -f DIR/avahi-daemon.conf --no-chroot
 *   clients: nsenter -t HOLDER -m -n -- avahi-publish … / avahi-browse …
 *
 * The holder (a `sleep`) owns the private mount namespace (propagation private, so nothing it mounts
 * reaches the host) in the test's network namespace; everything else enters both namespaces through its
 * PID, so every process of an instance sees the same private /run (a temporary directory bound over it)
 * and nothing else's. The bus is our own configuration (no service activation, runs as root, logs to
 * stderr) listening on the usual path inside, with avahi's own policy included from
 * /usr/share/dbus-1/system.d; DBUS_SYSTEM_BUS_ADDRESS names that path too. The host's static services and
 * hosts file (/etc/avahi/services, /etc/avahi/hosts) are hidden behind empty ones, so an instance publishes
 * only what its test asks for. --no-chroot: avahi would otherwise chroot into /etc/avahi (shared by all
 * instances) and fork a helper for it; nothing is gained in a test. The daemon still drops root to the
 * `avahi` user when there is one.
 *
 * Readiness is read from the processes' output (the holder's "ready", the bus's address, avahi's "Server
 * startup complete", avahi-publish's "Established under name"), never a fixed sleep. Every process is
 * started detached (its own process group) and tracked; stop() ends them and removes the temporary
 * directory, and so does process exit (normal, uncaught exception, SIGINT/SIGTERM/SIGHUP), as lab.ts does
 * for labs. When the last process of an instance is gone, its mount namespace and mounts go with it.
 *
 * What the generated configuration is for: allow-point-to-point=yes because avahi 0.8 (Debian 12)
 * ignores interfaces flagged IFF_POINTOPOINT otherwise, and a TUN (the overlay's interface) is one;
 * disallow-other-stacks=no so it shares port 5353 with anything else in the namespace; no wide-area, no
 * workstation/HINFO records, no reflector: an instance answers only for what is published on it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { killTree, waitExit, type ExecResult } from './lab';
import { ExitCleanup } from './exit-cleanup';
import { Daemon } from './overlay';

export interface AvahiOptions {
  /** avahi's allow-interfaces: only these interfaces of the namespace are used. */
  interfaces: string[];
  /** use-ipv6 (default false: IPv4 only). */
  ipv6?: boolean;
  /** The daemon's host name (a single DNS label; published as `<hostName>.local`). */
  hostName: string;
  /** Bound for each start-up step (holder, bus, daemon), default 20 s. */
  startTimeoutMs?: number;
}

export interface AvahiService {
  interface: string;
  /** The protocol avahi found the service on (its IPv4 or IPv6 mDNS socket), as avahi-browse reports it. */
  protocol: 'ipv4' | 'ipv6';
  /** The instance name, unescaped. */
  name: string;
  type: string;
  domain: string;
  /** The SRV target, e.g. `host-a.local`. */
  host: string;
  /**
   * The first A or AAAA record of `host` that arrived on that protocol. avahi-daemon puts AAAA records on
   * IPv4 too (publish-aaaa-on-ipv4=yes by default), so an IPv4 entry may carry an IPv6 address; in
   * practice the A record comes with the same answer and wins. IPv6 link-local addresses have no scope:
   * `interface` is it.
   */
  address: string;
  port: number;
  /** TXT strings, in order. */
  txt: string[];
}

export interface BrowseOptions {
  /** Bound for avahi-browse; on expiry it is killed and what it printed so far is returned. */
  timeoutMs: number;
  /** Only entries found on this protocol (avahi-browse has no -4/-6: its protocol column is filtered). */
  protocol?: 'ipv4' | 'ipv6';
}

export interface Avahi {
  readonly netns: string;
  /** The host name the daemon ended up with (avahi renames on conflict: `name-2`), without `.local`. */
  readonly hostName: string;
  /** The instance's temporary directory (configuration; bound over /run inside as `run/`). */
  readonly dir: string;
  /** PID of the process holding the private mount namespace (for `nsenter -t PID -m -n`). */
  readonly holderPid: number;
  /** `avahi-publish -s name type port txt…`; resolves once established, to a function withdrawing it. */
  publish(name: string, type: string, port: number, txt?: string[]): Promise<() => Promise<void>>;
  /** `avahi-browse -rtpk type`: the resolved (`=`) entries. */
  browse(type: string, options: BrowseOptions): Promise<AvahiService[]>;
  /** Runs a command inside the instance's namespaces (e.g. avahi-resolve), bounded by timeoutMs. */
  exec(argv: string[], timeoutMs?: number): Promise<ExecResult>;
  /** avahi-daemon's output so far (for assertions on what it considers relevant, and failure messages). */
  log(): string[];
  stop(): Promise<void>;
}

const NETNS_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const IFNAME_RE = /^[A-Za-z0-9_.@:-]{1,15}$/;
const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** RFC 6335 service names (at most 15 characters, letters, digits and inner hyphens) over TCP or UDP. */
const SERVICE_TYPE_RE = /^_[A-Za-z0-9](?:[A-Za-z0-9-]{0,13}[A-Za-z0-9])?\._(?:tcp|udp)$/;
const DEFAULT_START_TIMEOUT_MS = 20_000;
const MAX_BROWSE_TIMEOUT_MS = 120_000;
const MAX_OUTPUT_BYTES = 1 << 20;
const BUS_SOCKET = '/run/dbus/system_bus_socket';
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// ------------------------------------------------------------------------------------------- tools --

/** Absolute path of a program, also from the sbin directories a non-login root shell may lack. */
function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), ...SYSTEM_PATH.split(':')].filter((d) => d !== '');
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      /* next */
    }
  }
  return undefined;
}

const PROGRAMS = ['ip', 'unshare', 'nsenter', 'mount', 'dbus-daemon', 'avahi-daemon', 'avahi-publish', 'avahi-browse'] as const;

/** Why startAvahi cannot work here (not root, a program missing), or undefined if it can. For test skips. */
export function avahiUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network and mount namespaces)';
  const missing = PROGRAMS.filter((p) => findProgram(p) === undefined);
  if (missing.length > 0) return `missing ${missing.join(', ')} (scripts/setup.sh installs avahi-daemon and avahi-utils)`;
  return undefined;
}

function program(name: (typeof PROGRAMS)[number]): string {
  const found = findProgram(name);
  if (found === undefined) throw new Error(`avahi: ${name} not found (scripts/setup.sh installs it)`);
  return found;
}

// ------------------------------------------------------------------------------ configuration files --

function dbusConfig(): string {
  // system.conf's default policy, without its <user>, <fork>, <syslog>, pid file and service activation.
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${BUS_SOCKET}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <include ignore_missing="no">/usr/share/dbus-1/system.d/avahi-dbus.conf</include>
</busconfig>
`;
}

/** The generated avahi-daemon.conf (exported for tests and for reading what an instance runs with). */
export function avahiConfig(options: Pick<AvahiOptions, 'interfaces' | 'ipv6' | 'hostName'>): string {
  return [
    '[server]',
    `host-name=${options.hostName}`,
    'domain-name=local',
    'use-ipv4=yes',
    `use-ipv6=${options.ipv6 ? 'yes' : 'no'}`,
    `allow-interfaces=${options.interfaces.join(',')}`,
    // A TUN is IFF_POINTOPOINT: without this avahi 0.8 leaves it out.
    'allow-point-to-point=yes',
    'enable-dbus=yes',
    'disallow-other-stacks=no',
    '',
    '[wide-area]',
    'enable-wide-area=no',
    '',
    '[publish]',
    'publish-workstation=no',
    'publish-hinfo=no',
    'publish-domain=no',
    'publish-addresses=yes',
    '',
    '[reflector]',
    'enable-reflector=no',
    '',
  ].join('\n');
}

/** Mounts inside the holder's private mount namespace; $1 is the instance directory. */
const HOLDER_SCRIPT = `set -eu
mount -n --bind "$1/run" /run
if [ -d /etc/avahi/services ]; then mount -n --bind "$1/services" /etc/avahi/services; fi
if [ -f /etc/avahi/hosts ]; then mount -n --bind "$1/hosts" /etc/avahi/hosts; fi
echo ready
exec sleep infinity
`;

function validate(netns: string, options: AvahiOptions): void {
  if (!NETNS_RE.test(netns)) throw new Error(`avahi: bad namespace name ${JSON.stringify(netns)}`);
  if (!fs.existsSync(path.join('/run/netns', netns))) throw new Error(`avahi: no network namespace ${netns}`);
  if (!Array.isArray(options.interfaces) || options.interfaces.length === 0 || options.interfaces.length > 16) {
    throw new Error('avahi: interfaces must list 1 to 16 interface names');
  }
  for (const name of options.interfaces) {
    if (typeof name !== 'string' || !IFNAME_RE.test(name)) throw new Error(`avahi: bad interface name ${JSON.stringify(name)}`);
  }
  if (typeof options.hostName !== 'string' || !LABEL_RE.test(options.hostName)) {
    throw new Error(`avahi: bad host name ${JSON.stringify(options.hostName)} (one DNS label)`);
  }
}

export function validateServiceType(type: string): void {
  if (typeof type !== 'string' || !SERVICE_TYPE_RE.test(type)) {
    throw new Error(`avahi: bad service type ${JSON.stringify(type)} (expected e.g. _http._tcp)`);
  }
}

// ------------------------------------------------------------------------------------------ parsing --

/** avahi_escape_label's output back to text: `\.` and `\\` are the characters, `\DDD` a byte. */
export function unescapeAvahiLabel(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && /^\d{3}$/.test(text.slice(i + 1, i + 4))) {
      bytes.push(Number(text.slice(i + 1, i + 4)) & 0xff);
      i += 3;
    } else if (c === '\\' && i + 1 < text.length) {
      bytes.push(...Buffer.from(text[i + 1]!, 'utf8'));
      i += 1;
    } else {
      bytes.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** avahi_string_list_to_string's output (`"a=1" "b=2"`, with `\"`, `\\` and `\DDD` escapes) to strings. */
export function parseAvahiTxt(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === ' ') {
      i++;
      continue;
    }
    if (text[i] !== '"') throw new Error(`avahi: unexpected TXT text ${JSON.stringify(text)}`);
    i++;
    const bytes: number[] = [];
    let closed = false;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        closed = true;
        i++;
        break;
      }
      if (c === '\\' && /^\d{3}$/.test(text.slice(i + 1, i + 4))) {
        bytes.push(Number(text.slice(i + 1, i + 4)) & 0xff);
        i += 4;
      } else if (c === '\\' && i + 1 < text.length) {
        bytes.push(...Buffer.from(text[i + 1]!, 'utf8'));
        i += 2;
      } else {
        bytes.push(...Buffer.from(c, 'utf8'));
        i++;
      }
    }
    if (!closed) throw new Error(`avahi: unterminated TXT string in ${JSON.stringify(text)}`);
    out.push(Buffer.from(bytes).toString('utf8'));
  }
  return out;
}

/**
 * The resolved entries of `avahi-browse -p -r` output:
 * `=;IFACE;IPv4|IPv6;NAME;TYPE;DOMAIN;HOST;ADDRESS;PORT;TXT`. NAME is escaped (no `;` in it); TXT, the
 * rest of the line, may hold `;`. Other lines (`+`, `-`, errors) are skipped; duplicates are dropped.
 */
export function parseAvahiBrowse(output: string): AvahiService[] {
  const services: AvahiService[] = [];
  const seen = new Set<string>();
  for (const line of output.split('\n')) {
    if (!line.startsWith('=;')) continue;
    const fields = line.split(';');
    if (fields.length < 10) continue;
    const [, iface, proto, name, type, domain, host, address, port] = fields as [string, string, string, string, string, string, string, string, string];
    if (proto !== 'IPv4' && proto !== 'IPv6') continue;
    const portNumber = Number(port);
    if (!Number.isInteger(portNumber) || portNumber < 0 || portNumber > 65535) continue;
    let txt: string[];
    try {
      txt = parseAvahiTxt(fields.slice(9).join(';'));
    } catch {
      continue;
    }
    const service: AvahiService = {
      interface: iface,
      protocol: proto === 'IPv4' ? 'ipv4' : 'ipv6',
      name: unescapeAvahiLabel(name),
      type,
      domain,
      host,
      address,
      port: portNumber,
      txt,
    };
    const key = JSON.stringify(service);
    if (seen.has(key)) continue;
    seen.add(key);
    services.push(service);
  }
  return services;
}

// ---------------------------------------------------------------------------------- exit cleanup --

const live = new ExitCleanup<AvahiInstance>((instance) => instance.stopSync());

// ----------------------------------------------------------------------------------------- instance --

class AvahiInstance implements Avahi {
  hostName: string;
  holderPid = 0;
  private readonly children = new Set<ChildProcess>();
  private holder: Daemon | undefined;
  private bus: Daemon | undefined;
  private daemon: Daemon | undefined;
  private stopping: Promise<void> | undefined;
  private stopped = false;

  constructor(readonly netns: string, readonly dir: string, private readonly options: AvahiOptions) {
    this.hostName = options.hostName;
  }

  private env(): NodeJS.ProcessEnv {
    return { PATH: SYSTEM_PATH, LANG: 'C.UTF-8', DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${BUS_SOCKET}` };
  }

  /** Starts a tracked, detached process with piped output. */
  private start(cmd: string, argv: string[]): ChildProcess {
    if (this.stopped || this.stopping) throw new Error(`avahi ${this.netns}: stopped`);
    const child = spawn(cmd, argv, { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.children.add(child);
    const forget = (): void => void this.children.delete(child);
    child.once('exit', forget);
    child.once('error', forget);
    return child;
  }

  private inside(argv: string[]): string[] {
    if (this.holderPid <= 0) throw new Error(`avahi ${this.netns}: not started`);
    return ['-t', String(this.holderPid), '-m', '-n', '--', ...argv];
  }

  private startInside(name: string, argv: string[]): Daemon {
    const child = this.start(program('nsenter'), this.inside(argv));
    const daemon = new Daemon(`${name} in ${this.netns}`, child);
    child.once('error', (e) => daemon.raw.push(`spawn error: ${e.message}`));
    return daemon;
  }

  async boot(): Promise<void> {
    const timeoutMs = this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const holderChild = this.start(program('ip'), ['netns', 'exec', this.netns, program('unshare'), '--mount', '--propagation', 'private',
      'sh', '-c', HOLDER_SCRIPT, 'sh', this.dir]);
    // ip netns exec, unshare and sh each exec the next: the child's PID is the holder's.
    this.holder = new Daemon(`avahi namespace holder in ${this.netns}`, holderChild);
    await this.holder.waitForRaw(/^ready$/, timeoutMs);
    this.holderPid = holderChild.pid!;

    const conf = path.join(this.dir, 'dbus.conf');
    this.bus = this.startInside('dbus-daemon', [program('dbus-daemon'), `--config-file=${conf}`, '--nofork', '--nopidfile', '--print-address=1']);
    await this.bus.waitForRaw(/^unix:path=/, timeoutMs);

    const argv = [program('avahi-daemon'), '-f', path.join(this.dir, 'avahi-daemon.conf'), '--no-chroot'];
    if (spawnSync('id', ['-u', 'avahi'], { stdio: 'ignore' }).status !== 0) argv.push('--no-drop-root');
    this.daemon = this.startInside('avahi-daemon', argv);
    const line = await this.daemon.waitForRaw(/Server startup complete\. Host name is /, timeoutMs);
    const name = /Host name is ([^ ]+?)\.local\./.exec(line)?.[1];
    if (name) this.hostName = name;
  }

  log(): string[] {
    return [...(this.daemon?.raw ?? [])];
  }

  async publish(name: string, type: string, port: number, txt: string[] = []): Promise<() => Promise<void>> {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 63 || /[\x00-\x1f\x7f]/.test(name)) {
      throw new Error(`avahi: bad service name ${JSON.stringify(name)} (1 to 63 bytes, no control characters)`);
    }
    validateServiceType(type);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`avahi: bad port ${port}`);
    if (!Array.isArray(txt) || txt.length > 32 || txt.some((t) => typeof t !== 'string' || Buffer.byteLength(t) > 255 || t.startsWith('-'))) {
      throw new Error('avahi: bad TXT strings (at most 32, each at most 255 bytes, none starting with "-")');
    }
    // avahi-publish prepends each TXT argument to its list: reversed here, they go on the wire in the given order.
    const publisher = this.startInside('avahi-publish', [program('avahi-publish'), '-s', name, type, String(port), ...[...txt].reverse()]);
    try {
      await publisher.waitForRaw(/^Established under name '/, this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    } catch (e) {
      killTree(publisher.child, 'SIGKILL');
      throw e;
    }
    let done: Promise<void> | undefined;
    return () => {
      // SIGTERM: the daemon sees its client go and withdraws the service with goodbye packets.
      done ??= (async () => {
        killTree(publisher.child, 'SIGTERM');
        await publisher.waitExit(5_000).catch(async () => {
          killTree(publisher.child, 'SIGKILL');
          await publisher.waitExit(5_000).catch(() => undefined);
        });
      })();
      return done;
    };
  }

  async browse(type: string, options: BrowseOptions): Promise<AvahiService[]> {
    validateServiceType(type);
    const { timeoutMs, protocol } = options;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_BROWSE_TIMEOUT_MS) {
      throw new Error(`avahi: browse timeoutMs must be in (0, ${MAX_BROWSE_TIMEOUT_MS}]`);
    }
    if (protocol !== undefined && protocol !== 'ipv4' && protocol !== 'ipv6') throw new Error(`avahi: bad protocol ${String(protocol)}`);
    // -k: without it, avahi-browse replaces known types by their description ("Web Site"), even with -p.
    const result = await this.exec([program('avahi-browse'), '-r', '-t', '-p', '-k', type], timeoutMs);
    if (!result.timedOut && result.code !== 0) {
      throw new Error(`avahi-browse in ${this.netns} exited ${result.code ?? result.signal}: ${result.stderr.trim()}`);
    }
    const services = parseAvahiBrowse(result.stdout);
    return protocol === undefined ? services : services.filter((s) => s.protocol === protocol);
  }

  exec(argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
    if (argv.length === 0) return Promise.reject(new Error('avahi.exec: empty argv'));
    return new Promise<ExecResult>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = this.start(program('nsenter'), this.inside(argv));
      } catch (e) {
        reject(e);
        return;
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const collect = (into: Buffer[]) => (b: Buffer): void => {
        if (size >= MAX_OUTPUT_BYTES) return;
        size += b.length;
        into.push(b);
      };
      child.stdout!.on('data', collect(out));
      child.stderr!.on('data', collect(err));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        killTree(child, 'SIGKILL');
      }, timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        const result: ExecResult = {
          code,
          signal,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        };
        if (timedOut) result.timedOut = true;
        resolve(result);
      });
    });
  }

  stop(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.stopping ??= (async () => {
      // Clients first, then the daemon with SIGTERM (it says goodbye on the network), then the rest.
      const clients = [...this.children].filter((c) => c !== this.daemon?.child && c !== this.bus?.child && c !== this.holder?.child);
      for (const child of clients) killTree(child, 'SIGKILL');
      await Promise.all(clients.map((c) => waitExit(c, 5_000)));
      if (this.daemon) {
        killTree(this.daemon.child, 'SIGTERM');
        await waitExit(this.daemon.child, 5_000);
      }
      const rest = [...this.children];
      for (const child of rest) killTree(child, 'SIGKILL');
      await Promise.all(rest.map((c) => waitExit(c, 5_000)));
      this.children.clear();
      fs.rmSync(this.dir, { recursive: true, force: true });
      this.stopped = true;
      this.forget();
    })();
    return this.stopping;
  }

  /** @internal For exit handlers: SIGKILL everything, remove the directory. */
  stopSync(): void {
    if (this.stopped) return;
    for (const child of this.children) killTree(child, 'SIGKILL');
    this.children.clear();
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.stopped = true;
    this.forget();
  }

  private forget(): void {
    live.delete(this);
  }
}

/**
 * Starts a private D-Bus system bus and an avahi-daemon in network namespace `netns` (which must exist,
 * e.g. `/run/netns/<netns>`), in a mount namespace of their own. On failure everything started is torn
 * down and the error (with the daemons' last output) rethrown.
 */
export async function startAvahi(netns: string, options: AvahiOptions): Promise<Avahi> {
  validate(netns, options);
  const dir = fs.mkdtempSync(path.join(tmpdir(), `mnedc-avahi-${netns}-`));
  const instance = new AvahiInstance(netns, dir, options);
  live.add(instance);
  try {
    for (const sub of ['run/dbus', 'run/avahi-daemon', 'services']) fs.mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'hosts'), '');
    fs.writeFileSync(path.join(dir, 'dbus.conf'), dbusConfig());
    fs.writeFileSync(path.join(dir, 'avahi-daemon.conf'), avahiConfig(options));
    await instance.boot();
  } catch (e) {
    await instance.stop().catch(() => undefined);
    throw e;
  }
  return instance;
}
