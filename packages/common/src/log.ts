import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One logger per daemon, JSON lines on stdout. Never call it per packet: count instead. */
export function createLogger(name: string, level: LogLevel): Logger {
  return pino({
    name,
    level: level as LevelWithSilent,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, pino.destination({ dest: 1, sync: true }));
}

/**
 * Counts a recurring event and logs one summary per interval, so a flood of bad packets costs a counter
 * increment each, not a log line each.
 */
export class RateLimitedWarning {
  private suppressed = 0;
  private lastLog = 0;

  constructor(private readonly log: Logger, private readonly intervalMs = 10_000) {}

  warn(fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - this.lastLog < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.log.warn({ ...fields, suppressed: this.suppressed }, message);
    this.lastLog = now;
    this.suppressed = 0;
  }
}
