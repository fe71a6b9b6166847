import { escapeControl, type Logger } from './log';

export interface SdNotify {
  ready(): void;
  stopping(pid: number): void;
  watchdog(): void;
  watchdogInterval(): number;
  sendState(state: string): void;
}

/**
 * Tells systemd the truth about the daemon (sd_notify(3)): READY only once really serving, STATUS kept
 * current, WATCHDOG from a timer on the event loop — so a stuck loop stops the pings and systemd notices —
 * RELOADING around SIGHUP, STOPPING on SIGTERM. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
 */
export class SystemdNotifier {
  private readonly sd: SdNotify | null;
  private lastStatus = '';
  private watchdogTimer: NodeJS.Timeout | null = null;
  private isReady = false;

  constructor(private readonly log: Logger, env: NodeJS.ProcessEnv = process.env, sd?: SdNotify) {
    this.sd = sd ?? (env.NOTIFY_SOCKET ? loadSdNotify(log) : null);
  }

  get enabled(): boolean {
    return this.sd !== null;
  }

  ready(status?: string): void {
    if (status !== undefined) this.status(status);
    if (this.isReady) return;
    this.isReady = true;
    this.sd?.ready();
  }

  status(text: string): void {
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    // STATUS can carry what a relay said (a REJECT reason): a newline in it would start another
    // assignment (MAINPID=, STOPPING=1) on the daemon's behalf.
    this.sd?.sendState(`STATUS=${escapeControl(text)}`);
  }

  reloading(): void {
    this.sd?.sendState('RELOADING=1');
  }

  reloaded(): void {
    this.sd?.sendState('READY=1');
  }

  stopping(): void {
    this.stopWatchdog();
    this.sd?.stopping(process.pid);
  }

  /** Pings at half the interval systemd asks for (WATCHDOG_USEC), if it asks. Returns that period in ms. */
  startWatchdog(): number {
    if (!this.sd || this.watchdogTimer) return 0;
    const intervalMs = this.sd.watchdogInterval();
    if (intervalMs <= 0) return 0;
    const period = Math.max(1, Math.floor(intervalMs / 2));
    const sd = this.sd;
    sd.watchdog();
    this.watchdogTimer = setInterval(() => sd.watchdog(), period);
    this.watchdogTimer.unref();
    this.log.debug({ periodMs: period }, `Watchdog armed: pinging systemd every ${period} ms`);
    return period;
  }

  private stopWatchdog(): void {
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.watchdogTimer = null;
  }
}

function loadSdNotify(log: Logger): SdNotify | null {
  try {
    return require('sd-notify') as SdNotify;
  } catch (err) {
    log.error({ err }, `NOTIFY_SOCKET is set but sd-notify cannot be loaded (${(err as Error).message}); systemd will not hear from this daemon`);
    return null;
  }
}
