import type { PeerInfo } from '@mnedc/protocol';

/* The events hooks run for, their queue, and what a hook run is given: its name and environment. */

export interface SelfInfo {
  deviceId: string;
  ip: string;
  hostname: string;
}

export type PeerEvent = 'up' | 'down';

/** More pending events than this and the oldest are dropped: bounded memory whatever the churn. */
export const MAX_QUEUED_EVENTS = 10_000;
/** run-parts skips these: editor backups, package manager leftovers. */
const SKIPPED_SUFFIXES = ['~', '.dpkg-old', '.dpkg-dist', '.dpkg-new', '.swp'];

/**
 * systemd hands these to the daemon alone: a hook inheriting them could notify or claim sockets on the
 * daemon's behalf. They are removed from the hooks' environment.
 */
const DAEMON_ONLY_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_PID', 'WATCHDOG_USEC', 'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES'];

export interface QueuedEvent {
  event: PeerEvent;
  peer: PeerInfo;
  self: SelfInfo | null;
  /** Where peers.json was written for this event ('' if disabled then). */
  peersFile: string;
}

/** A FIFO with O(1) push and shift, also from the front when dropping the oldest. */
export class EventQueue {
  private items: Array<QueuedEvent | undefined> = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: QueuedEvent): void {
    this.items.push(item);
  }

  shift(): QueuedEvent | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

/** Hook names run-parts would run (before checking they are executable regular files), sorted. */
export function hookCandidates(names: readonly string[]): string[] {
  return names
    .filter((n) => !n.startsWith('.') && !SKIPPED_SUFFIXES.some((s) => n.endsWith(s)))
    .sort();
}

/** Environment values cannot hold NUL; a hostile hostname must not make spawn() throw. */
function envSafe(value: string): string {
  return value.includes('\0') ? value.replace(/\0/g, '') : value;
}

/** A hook's environment: `base` (the daemon's) without what systemd meant for the daemon alone, plus the event. */
export function hookEnvironment(ev: QueuedEvent, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { event, peer, self } = ev;
  const env: NodeJS.ProcessEnv = {
    ...base,
    MNEDC_EVENT: event,
    MNEDC_PEER_ID: envSafe(peer.deviceId),
    MNEDC_PEER_IP: envSafe(peer.ip),
    MNEDC_PEER_HOSTNAME: envSafe(peer.hostname),
    MNEDC_PEER_UNDERLAY: envSafe(peer.underlay.join(' ')),
    MNEDC_PEER_SINCE: String(peer.since),
    MNEDC_SELF_ID: envSafe(self?.deviceId ?? ''),
    MNEDC_SELF_IP: envSafe(self?.ip ?? ''),
    MNEDC_PEERS_FILE: envSafe(ev.peersFile),
  };
  for (const key of DAEMON_ONLY_ENV) delete env[key];
  return env;
}
