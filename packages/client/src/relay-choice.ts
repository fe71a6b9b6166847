import { formatHostPort, parseHostPort, type HostPort } from '@mnedc/common';

/** The preferred relay must have answered every probe for this long before the device goes back to it. */
export const RETURN_AFTER_MS = 60_000;
/** How often the preferred relay is probed while the device is on another. */
export const PROBE_EVERY_MS = 10_000;
/** Relays learned from WELCOMEs kept at most: a hostile relay cannot make the list grow without bound. */
export const MAX_LEARNED_RELAYS = 32;

/**
 * Which relay a device of a cluster connects to: `[client] server` in order (the first is the preferred
 * one), then the relays the last WELCOME listed. A lost or failing relay moves the device to the next;
 * it returns to the preferred one only after that has been healthy for RETURN_AFTER_MS (Failback), so
 * a relay going up and down does not drag its devices along.
 */
export class RelayChoice {
  private candidates: HostPort[] = [];
  private learnedRelays: string[] = [];
  private index = 0;

  constructor(private readonly configured: HostPort[], learned: string[] = []) {
    if (configured.length === 0) throw new Error('no relay to connect to');
    this.learn(learned);
  }

  get current(): HostPort {
    return this.candidates[this.index]!;
  }

  get preferred(): HostPort {
    return this.configured[0]!;
  }

  get onPreferred(): boolean {
    return this.index === 0;
  }

  /** Every relay the device may try, in order. */
  get all(): string[] {
    return this.candidates.map(formatHostPort);
  }

  /** What the WELCOMEs taught, for the state file. */
  get learned(): string[] {
    return [...this.learnedRelays];
  }

  /** The current relay was lost or refused the device: the next one. */
  next(): void {
    this.index = (this.index + 1) % this.candidates.length;
  }

  prefer(): void {
    this.index = 0;
  }

  /**
   * The relays a WELCOME listed (host:port each; those that do not parse are skipped): they follow the
   * configured ones, replacing what earlier WELCOMEs said. The current relay stays current. True when
   * the list changed.
   */
  learn(relays: string[]): boolean {
    const configured = new Set(this.configured.map(formatHostPort));
    // Relays on this very host are the operator's choice only when a configured one is there too (a test, a demo).
    const local = this.configured.some((c) => unfitRelayAddress(c.host));
    const learned: string[] = [];
    for (const text of relays) {
      if (learned.length >= MAX_LEARNED_RELAYS) break;
      let relay: HostPort;
      try {
        relay = parseHostPort(text);
      } catch {
        continue;
      }
      const key = formatHostPort(relay);
      if (!configured.has(key) && !learned.includes(key) && (local || !unfitRelayAddress(relay.host))) learned.push(key);
    }
    const changed = learned.join(',') !== this.learnedRelays.join(',');
    const current = this.candidates.length > 0 ? formatHostPort(this.current) : null;
    this.learnedRelays = learned;
    this.candidates = [...this.configured, ...learned.map((text) => parseHostPort(text))];
    const at = current === null ? -1 : this.candidates.findIndex((c) => formatHostPort(c) === current);
    if (at >= 0) this.index = at;
    else if (current !== null) {
      // The relay the device is on is no longer listed: it stays put until it is lost, then starts over.
      this.candidates.push(parseHostPort(current));
      this.index = this.candidates.length - 1;
    }
    return changed;
  }

  /** Back to `relay` (one tried before): a return to the preferred one that did not work. */
  select(relay: HostPort): void {
    const at = this.candidates.findIndex((c) => c.host === relay.host && c.port === relay.port);
    if (at >= 0) this.index = at;
  }

  /**
   * The current relay, if only a WELCOME named it, is dropped: it is not a relay of this network (the
   * device refused it). A configured one stays: that is the operator's to fix. True when dropped.
   */
  dropIfLearned(): boolean {
    const current = formatHostPort(this.current);
    if (!this.learnedRelays.includes(current)) return false;
    this.learnedRelays = this.learnedRelays.filter((r) => r !== current);
    this.candidates.splice(this.index, 1);
    this.index = this.index % this.candidates.length;
    return true;
  }
}

/**
 * A relay a WELCOME may not send a device to: this host itself, no host, link-local or multicast
 * addresses — what a hostile relay would name to make devices probe their own machine or network.
 */
export function unfitRelayAddress(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::' || h === '::1' || h.startsWith('fe80:') || h.startsWith('ff')) return true;
  const v4 = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(h);
  if (!v4) return false;
  const [a, b] = [Number(v4[1]), Number(v4[2])];
  return a === 0 || a === 127 || (a === 169 && b === 254) || a >= 224;
}

/**
 * Whether it is time to go back to the preferred relay: every probe since `since` answered, for
 * RETURN_AFTER_MS. A failed probe starts the wait over.
 */
export class Failback {
  private healthySince: number | null = null;

  constructor(private readonly returnAfterMs = RETURN_AFTER_MS) {}

  probed(ok: boolean, now: number): boolean {
    if (!ok) {
      this.healthySince = null;
      return false;
    }
    this.healthySince ??= now;
    return now - this.healthySince >= this.returnAfterMs;
  }

  reset(): void {
    this.healthySince = null;
  }
}

export interface FailbackOptions {
  probeEveryMs: number;
  returnAfterMs: number;
  /** Whether the relay answers now (secure.ts probeRelay). */
  probe: (relay: HostPort) => Promise<boolean>;
}

/** A failed return doubles the wait before the next, up to this many times the first. */
const MAX_RETURN_BACKOFF = 8;

/**
 * While the device is on another relay: probes the preferred one (every probeEveryMs, ±30%, so a fleet
 * that failed over together does not probe in step), and says when to go back (Failback). A return that
 * did not work (the relay answers TLS but turns devices away) doubles the wait for the next.
 */
export class PreferredProbe {
  private timer: NodeJS.Timeout | null = null;
  private factor = 1;
  private failback: Failback;

  constructor(private readonly options: FailbackOptions) {
    this.failback = new Failback(options.returnAfterMs);
  }

  start(preferred: HostPort, back: () => void): void {
    this.stop();
    this.failback = new Failback(this.options.returnAfterMs * this.factor);
    const next = () => {
      const timer = setTimeout(() => {
        void this.options.probe(preferred).then((ok) => {
          if (this.timer !== timer) return;
          if (!this.failback.probed(ok, Date.now())) {
            next();
            return;
          }
          this.stop();
          back();
        });
      }, this.options.probeEveryMs * (0.7 + Math.random() * 0.6));
      this.timer = timer;
    };
    next();
  }

  /** The return did not get a session: wait longer before the next. */
  returnFailed(): void {
    this.factor = Math.min(this.factor * 2, MAX_RETURN_BACKOFF);
  }

  /** Back on the preferred relay. */
  returned(): void {
    this.factor = 1;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
