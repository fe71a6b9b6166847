import { fstatSync } from 'node:fs';
import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['text', 'json', 'journal'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * journal when stdout really is the journal stream systemd gave us (JOURNAL_STREAM names its device and
 * inode: a redirected stdout must not get syslog prefixes), readable text otherwise.
 */
export function defaultLogFormat(env: NodeJS.ProcessEnv = process.env, fd: 1 | 2 = 1): LogFormat {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return 'text';
  try {
    const [dev, ino] = stream.split(':');
    const stat = fstatSync(fd);
    return String(stat.dev) === dev && String(stat.ino) === ino ? 'journal' : 'text';
  } catch {
    return 'text';
  }
}

/**
 * Characters that must not reach a log line or a terminal as they are: C0 and C1 controls and DEL (a
 * newline would forge a second journal entry, an escape sequence would rewrite the terminal), line and
 * paragraph separators, and the invisible format characters (bidirectional overrides, zero-width
 * characters) that make text read differently from what it is.
 */
const UNPRINTABLE = '\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb\\u{e0000}-\\u{e007f}';
const UNPRINTABLE_ALL = new RegExp(`[${UNPRINTABLE}]`, 'gu');
const HAS_UNPRINTABLE = new RegExp(`[${UNPRINTABLE}]`, 'u');
const SHORT_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * `text` with every unprintable character (see UNPRINTABLE) written as an escape: \n, \r, \t, \xNN below
 * U+0100, \uNNNN above (\u{NNNNN} beyond the BMP). Backslashes stay as they are: the point is that
 * nothing unseen gets through, not that the text can be decoded back.
 */
export function escapeControl(text: string): string {
  if (!HAS_UNPRINTABLE.test(text)) return text;
  return text.replace(UNPRINTABLE_ALL, (c) => {
    const code = c.codePointAt(0)!;
    if (SHORT_ESCAPES[c]) return SHORT_ESCAPES[c];
    if (code < 0x100) return `\\x${code.toString(16).padStart(2, '0')}`;
    return code < 0x10000 ? `\\u${code.toString(16).padStart(4, '0')}` : `\\u{${code.toString(16)}}`;
  });
}

/**
 * JSON text (as JSON.stringify writes it, which already escapes C0 controls inside strings) with the other
 * unprintable characters written as \uNNNN escapes too: the same value to a parser, nothing unseen on a
 * terminal. Characters beyond the BMP become surrogate-pair escapes, as JSON has no other form.
 */
export function escapeJsonText(json: string): string {
  if (!HAS_UNPRINTABLE.test(json)) return json;
  return json.replace(UNPRINTABLE_ALL, (c) => {
    if (c.charCodeAt(0) < 0x20) return c; // outside strings: the indentation's own newlines
    return [...Array(c.length).keys()].map((i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`).join('');
  });
}

/** True when escapeControl would change `text`. */
export function hasControl(text: string): boolean {
  return HAS_UNPRINTABLE.test(text);
}

/**
 * One line on stderr for what goes wrong before there is a logger (arguments, configuration): under
 * journald at priority err like the logger's errors, so `journalctl -p err` shows what to fix.
 */
export function startupError(line: string): void {
  process.stderr.write(`${defaultLogFormat(process.env, 2) === 'journal' ? '<3>' : ''}${escapeControl(line)}\n`);
}

/** sd-daemon(3) priorities by pino level: journald files each line under the priority of its <N> prefix. */
const JOURNAL_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const LEVEL_NAME: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has; repeating them after the message adds nothing a reader needs. */
const QUIET_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/** JSON escapes C0 controls, quotes and backslashes; escapeControl the rest of what must not show raw. */
function fieldText(value: unknown): string {
  if (typeof value === 'string') {
    return /[\s"=]/.test(value) || value === '' || hasControl(value) ? escapeControl(JSON.stringify(value)) : value;
  }
  if (value !== null && typeof value === 'object' && 'message' in value && typeof (value as { message: unknown }).message === 'string') {
    return escapeControl(JSON.stringify((value as { message: string }).message));
  }
  return escapeControl(JSON.stringify(value) ?? String(value));
}

/**
 * Turns one pino JSON line into "message key=value …" (exported for tests). Always exactly one line:
 * whatever a peer managed to get into a message or a field (a relay's REJECT reason, a hook's stderr) has
 * its control characters escaped, so it can neither forge another entry nor drive the terminal.
 */
export function formatLine(json: string, format: Exclude<LogFormat, 'json'>): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const level = typeof entry.level === 'number' ? entry.level : 30;
  const fields = Object.entries(entry)
    .filter(([name, value]) => !QUIET_FIELDS.has(name) && value !== undefined)
    .map(([name, value]) => `${escapeControl(name)}=${fieldText(value)}`);
  const text = [escapeControl(String(entry.msg ?? '')), ...fields].join(' ');
  if (format === 'journal') return `<${JOURNAL_PRIORITY[level] ?? 6}>${text}\n`;
  const time = typeof entry.time === 'string' ? entry.time : new Date().toISOString();
  return `${time} ${(LEVEL_NAME[level] ?? 'INFO').padEnd(5)} ${text}\n`;
}

/**
 * One logger per daemon on stdout. Never call it per packet: count instead and use RateLimitedWarning.
 * The level can be changed at run time (`logger.level = …`), which SIGHUP reloads use.
 */
export function createLogger(name: string, level: LogLevel, format: LogFormat = defaultLogFormat(), fd: 1 | 2 = 1): Logger {
  const options = { name, level: level as LevelWithSilent, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'json') return pino(options, pino.destination({ dest: fd, sync: true }));
  const out = fd === 1 ? process.stdout : process.stderr;
  return pino(options, { write: (line: string) => out.write(formatLine(line, format)) });
}

export interface WarningText {
  fields: Record<string, unknown>;
  message: string;
}

/**
 * Counts recurring events and logs one summary per kind and interval, so a flood of bad packets costs a
 * counter increment each, not a log line each, and a storm of one kind cannot hide another. `describe`
 * runs only when a line is due: a suppressed event formats nothing, which matters on the packet path.
 */
export class RateLimitedWarning {
  private readonly kinds = new Map<string, { lastLog: number; suppressed: number }>();

  constructor(private readonly log: Logger, private readonly intervalMs = 10_000) {}

  warn(kind: string, describe: () => WarningText): void {
    const now = Date.now();
    let state = this.kinds.get(kind);
    if (!state) this.kinds.set(kind, (state = { lastLog: -Infinity, suppressed: 0 }));
    if (now - state.lastLog < this.intervalMs) {
      state.suppressed++;
      return;
    }
    const { fields, message } = describe();
    const suppressed = state.suppressed;
    this.log.warn(suppressed > 0 ? { ...fields, suppressed } : fields,
      suppressed > 0 ? `${message} (and ${suppressed} more since the last report)` : message);
    state.lastLog = now;
    state.suppressed = 0;
  }
}
