/**
 * Why a TUN interface name cannot be had: the kernel only says EBUSY (another process has that TUN
 * open) or EINVAL (an interface of that name exists and is no TUN this process can attach to). An
 * operator needs to know who holds it and which setting to change, so this looks it up: the processes
 * whose /dev/net/tun descriptor is bound to the name (its fdinfo has "iff:\t<name>"), and the kind of
 * the existing interface (`ip -d -j link show`).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

export interface TunHolder {
  pid: number;
  /** Its command line, arguments separated by spaces. */
  command: string;
}

/** The interface a /dev/net/tun descriptor is bound to, from its /proc/PID/fdinfo/FD text; null if none. */
export function fdinfoInterface(fdinfo: string): string | null {
  const match = /^iff:\s*(\S+)\s*$/m.exec(fdinfo);
  return match ? match[1]! : null;
}

/**
 * What `ip -d -j link show dev NAME` says the interface is: "tun", "tap", "veth", "bridge", … or, for
 * an interface without a driver kind (hardware, loopback), its link type ("ether device"); null when the
 * output cannot be read.
 */
export function linkKind(ipJson: string): string | null {
  try {
    const [link] = JSON.parse(ipJson) as Array<{ link_type?: string; linkinfo?: { info_kind?: string; info_data?: { type?: string } } }>;
    if (!link) return null;
    const info = link.linkinfo;
    if (info?.info_kind === 'tun') return info.info_data?.type ?? 'tun';
    if (info?.info_kind) return info.info_kind;
    return link.link_type ? `${link.link_type} device` : null;
  } catch {
    return null;
  }
}

export interface TakenFacts {
  name: string;
  /** Where to change it, e.g. "[client] interface in /etc/mnedc/client.ini". */
  setting: string;
  holders: TunHolder[];
  /** linkKind of the existing interface; undefined: no such interface; null: exists, kind unknown. */
  kind: string | null | undefined;
  /** The kernel's refusal, e.g. "TUNSETIFF mnedc0: Device or resource busy". */
  error: string;
  /** It was EBUSY: a process has that TUN open. */
  busy: boolean;
}

/** One line saying who holds the name and what to change; null when the facts show no taken name. */
export function takenMessage(facts: TakenFacts): string | null {
  const { name, setting, holders, kind } = facts;
  const fix = `set another name with ${setting}`;
  if (holders.length > 0) {
    const who = holders.map((h) => `pid ${h.pid} (${h.command || 'command line not readable'})`).join(', ');
    return `interface ${name} is taken: ${who} has it open as its TUN device; ${fix}, or stop that process`;
  }
  if (facts.busy) {
    return `interface ${name} is taken: another process has it open as its TUN device (this daemon cannot see which: ` +
      `another user's; as root, grep -l "iff:.${name}$" /proc/*/fdinfo/* finds it); ${fix} (${facts.error})`;
  }
  if (kind === undefined) return null;
  const what = kind === null ? 'an interface' : `a ${kind} interface`;
  return `interface ${name} is taken: ${what} of that name exists, not a TUN device this daemon can attach to; ` +
    `${fix}, or remove that interface (${facts.error})`;
}

/**
 * Processes in this network namespace (interface names are per namespace, so an "mnedc0" elsewhere is
 * another interface) that have `name` open as their TUN device, among those /proc lets us inspect.
 */
export function findTunHolders(name: string, proc = '/proc'): TunHolder[] {
  const holders: TunHolder[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync(proc).filter((entry) => /^\d+$/.test(entry));
  } catch {
    return holders;
  }
  const netns = link(`${proc}/self/ns/net`);
  for (const pid of pids) {
    let fds: string[];
    try {
      if (link(`${proc}/${pid}/ns/net`) !== netns) continue;
      fds = fs.readdirSync(`${proc}/${pid}/fd`);
    } catch {
      continue; // gone, or another user's
    }
    const holds = fds.some((fd) => {
      try {
        return fs.readlinkSync(`${proc}/${pid}/fd/${fd}`) === '/dev/net/tun' &&
          fdinfoInterface(fs.readFileSync(`${proc}/${pid}/fdinfo/${fd}`, 'utf8')) === name;
      } catch {
        return false;
      }
    });
    if (holds) holders.push({ pid: Number(pid), command: commandLine(`${proc}/${pid}/cmdline`) });
  }
  return holders;
}

function link(file: string): string | null {
  try {
    return fs.readlinkSync(file);
  } catch {
    return null;
  }
}

/** Enough of a command line to tell which daemon and config it is; a log line is no place for all of it. */
const MAX_COMMAND_LINE = 512;

function commandLine(file: string): string {
  try {
    const text = fs.readFileSync(file, 'utf8').replace(/\0+$/, '').split('\0').join(' ');
    return text.length > MAX_COMMAND_LINE ? `${text.slice(0, MAX_COMMAND_LINE)}…` : text;
  } catch {
    return '';
  }
}

/** The kind of the interface `name` (see linkKind); undefined when there is none; null when unknown. */
function existingKind(name: string): string | null | undefined {
  try {
    return linkKind(execFileSync('ip', ['-d', '-j', 'link', 'show', 'dev', name], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch (err) {
    // ip says "does not exist" with status 1; without ip at all, sysfs still tells whether it exists.
    if ((err as { status?: number }).status === 1) return undefined;
    return fs.existsSync(`/sys/class/net/${name}`) ? null : undefined;
  }
}

/**
 * For an error from Tun.open(name): a message naming who holds the interface name and `setting` to
 * change, or null when a taken name is not the cause (e.g. no CAP_NET_ADMIN).
 */
export function explainTakenName(err: unknown, name: string, setting: string): string | null {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if ((code !== 'EBUSY' && code !== 'EINVAL' && code !== 'EPERM') || name === '' || name.includes('%')) return null;
  return takenMessage({ name, setting, holders: findTunHolders(name), kind: existingKind(name), error: (err as Error).message, busy: code === 'EBUSY' });
}
