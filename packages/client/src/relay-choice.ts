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
      if (!configured.has(key) && !learned.includes(key)) learned.push(key);
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

/** While the device is on another relay: probes the preferred one, and says when to go back (Failback). */
export class PreferredProbe {
  private timer: NodeJS.Timeout | null = null;
  private readonly failback: Failback;

  constructor(private readonly options: FailbackOptions) {
    this.failback = new Failback(options.returnAfterMs);
  }

  start(preferred: HostPort, back: () => void): void {
    this.stop();
    this.failback.reset();
    const timer = setInterval(() => {
      void this.options.probe(preferred).then((ok) => {
        if (this.timer !== timer || !this.failback.probed(ok, Date.now())) return;
        this.stop();
        back();
      });
    }, this.options.probeEveryMs);
    this.timer = timer;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
