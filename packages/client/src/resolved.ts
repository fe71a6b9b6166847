import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readlinkSync } from 'node:fs';
import type { Logger } from '@mnedc/common';
import type { Welcome } from '@mnedc/protocol';

/** What to tell systemd-resolved for the TUN: the relay as its DNS server for the overlay's domain only. */
export interface LinkDns {
  serverIp: string;
  domain: string;
}

/**
 * The resolvectl calls that route `*.<domain>` (and nothing else: `~` makes it a routing-only domain)
 * to the relay over the TUN. `revert` drops all of it, as the link had it before.
 */
export function resolvectlCommands(iface: string, dns: LinkDns | null): string[][] {
  if (!dns) return [['revert', iface]];
  // default-route false: without it resolved may send every other name to the relay too, which REFUSEs them.
  return [['dns', iface, dns.serverIp], ['domain', iface, `~${dns.domain}`], ['default-route', iface, 'false']];
}

/** The link DNS a WELCOME asks for, or null when the relay answers no DNS. */
export function linkDnsOf(welcome: Welcome): LinkDns | null {
  return welcome.dnsDomain ? { serverIp: welcome.serverIp, domain: welcome.dnsDomain } : null;
}

const RESOLVECTL_PATHS = ['/usr/bin/resolvectl', '/bin/resolvectl'];
/**
 * resolved asks polkit for a non-root caller, and polkitd may first have to be started by D-Bus activation
 * (seconds on a busy machine); the bus's own method timeout is 25 s.
 */
const TIMEOUT_MS = 30_000;

/**
 * Why per-link DNS cannot be set here, or '' when it can: resolvectl must exist, resolved must run, and
 * we must be in its network namespace (resolved names links by index in its own; a client in another
 * namespace, as in the lab, would configure whatever interface has that index there). Namespaces are
 * compared with PID 1's when readable; a daemon not allowed to read it (not root) runs where systemd put it.
 */
export function resolvedProblem(): string {
  const binary = RESOLVECTL_PATHS.find((p) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  if (!binary) return 'resolvectl is not installed';
  if (!existsSync('/run/systemd/resolve')) return 'systemd-resolved is not running';
  try {
    if (readlinkSync('/proc/1/ns/net') !== readlinkSync('/proc/self/ns/net')) return 'this daemon runs in another network namespace than systemd-resolved';
  } catch {
    // Not readable (an unprivileged daemon): assume the namespace systemd started us in.
  }
  return '';
}

function resolvectl(args: string[]): Promise<void> {
  const binary = RESOLVECTL_PATHS.find((p) => existsSync(p)) ?? 'resolvectl';
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null };
      const why = e.killed ? `no answer within ${TIMEOUT_MS / 1000} s (killed)` : e.signal ? `killed by ${e.signal}` : `exit status ${String(e.code)}`;
      reject(new Error(`resolvectl ${args.join(' ')}: ${stderr.trim() || why}`));
    });
  });
}

/**
 * Keeps systemd-resolved's per-link DNS of the TUN pointed at the relay while connected to one that
 * answers DNS; reverts it when the daemon stops. Calls are serialised, so a stop never races an apply.
 * Errors are warnings: the hosts file still names the peers.
 */
export class ResolvedLink {
  private applied: string | null = null;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly iface: () => string, private readonly log: Logger, private readonly run = resolvectl) {}

  /** After every WELCOME: sets the link's DNS when it differs from what was set. */
  apply(dns: LinkDns | null): Promise<void> {
    const key = dns ? `${dns.serverIp} ~${dns.domain}` : null;
    if (key === this.applied) return this.chain;
    this.applied = key;
    return this.enqueue(resolvectlCommands(this.iface(), dns), dns
      ? `Names in ${dns?.domain} resolve through the relay's DNS at ${dns?.serverIp} (systemd-resolved, link ${this.iface()})`
      : `The relay answers no DNS: systemd-resolved's settings for ${this.iface()} reverted`);
  }

  /** On stop: the link's DNS goes back to resolved's own defaults. */
  revert(): Promise<void> {
    if (this.applied === null) return this.chain;
    this.applied = null;
    return this.enqueue(resolvectlCommands(this.iface(), null), '');
  }

  private enqueue(commands: string[][], done: string): Promise<void> {
    this.chain = this.chain.then(async () => {
      try {
        for (const args of commands) await this.run(args);
        if (done) this.log.info(done);
      } catch (err) {
        // Tried again at the next WELCOME (a reconnect), not left half-set for good.
        if (done) this.applied = null;
        this.log.warn({ err }, `Could not configure systemd-resolved (names still come from the hosts file): ${(err as Error).message}`);
      }
    });
    return this.chain;
  }
}

/** The per-link DNS keeper for `[client] dns`, or null (off, or resolved not usable here: logged why). */
export function linkDnsFor(mode: 'auto' | 'off', iface: () => string, log: Logger): ResolvedLink | null {
  if (mode === 'off') return null;
  const problem = resolvedProblem();
  if (problem) {
    log.info(`Not pointing systemd-resolved at the relay's DNS: ${problem}; peers' names come from the hosts file`);
    return null;
  }
  return new ResolvedLink(iface, log);
}
