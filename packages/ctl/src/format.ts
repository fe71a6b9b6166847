import { escapeControl } from '@mnedc/common';

/*
 * Units for people: sizes in binary units (what `ip -s` and `free -h` show), rates in decimal bit/s
 * (what link speeds are quoted in), times relative to now.
 */

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const BIT_RATE_UNITS = ['bit/s', 'Kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];

/** Daemons report counters as JSON numbers; anything else means a daemon bug, shown rather than hidden. */
function invalid(value: unknown): boolean {
  return typeof value !== 'number' || !Number.isFinite(value) || value < 0;
}

/** Three significant figures at most, so that columns stay narrow and comparable. */
function scaled(value: number, base: number, units: string[]): string {
  let unit = 0;
  while (value >= base && unit < units.length - 1) {
    value /= base;
    unit++;
  }
  if (unit === 0) return `${Math.round(value)} ${units[0]}`;
  let text = value < 100 ? value.toFixed(1) : value.toFixed(0);
  // 1023.96 KiB rounds to "1024 KiB": say "1.0 MiB" instead.
  if (Number(text) >= base && unit < units.length - 1) {
    unit++;
    text = (value / base).toFixed(1);
  }
  return `${text} ${units[unit]}`;
}

export function formatBytes(bytes: number): string {
  return invalid(bytes) ? '?' : scaled(bytes, 1024, BYTE_UNITS);
}

export function formatBitRate(bitsPerSecond: number): string {
  return invalid(bitsPerSecond) ? '?' : scaled(bitsPerSecond, 1000, BIT_RATE_UNITS);
}

export function formatPacketRate(packetsPerSecond: number): string {
  if (invalid(packetsPerSecond)) return '?';
  const text = packetsPerSecond > 0 && packetsPerSecond < 10 ? packetsPerSecond.toFixed(1) : String(Math.round(packetsPerSecond));
  return `${text} pkt/s`;
}

/** Both halves of a rate column: "850 pkt/s 1.2 Mbit/s". */
export function formatRate(packetsPerSecond: number, bitsPerSecond: number): string {
  return `${formatPacketRate(packetsPerSecond)} ${formatBitRate(bitsPerSecond)}`;
}

/** The two most significant units: "45s", "3m 12s", "2h 5m", "3d 4h". */
export function formatDuration(seconds: number): string {
  if (invalid(seconds)) return '?';
  const s = Math.floor(seconds);
  const parts: Array<[number, string]> = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'],
    [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']];
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return '0s';
  const shown = parts.slice(first, first + 2).filter(([n], i) => i === 0 || n > 0);
  return shown.map(([n, unit]) => `${n}${unit}`).join(' ');
}

/** "just now", "3m ago", "2h 5m ago"; "-" when the daemon reports no time (0). */
export function formatAgo(at: number, now: number): string {
  if (typeof at !== 'number' || !Number.isFinite(at) || at <= 0) return '-';
  const ms = now - at;
  if (Math.abs(ms) < 1000) return 'just now';
  return ms > 0 ? `${formatDuration(ms / 1000)} ago` : `in ${formatDuration(-ms / 1000)}`;
}

/** Local wall-clock time of day, "12:03:04". */
export function formatClock(at: number): string {
  const date = new Date(at);
  if (Number.isNaN(date.getTime())) return '??:??:??';
  return [date.getHours(), date.getMinutes(), date.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** Round-trip time; the daemons report -1 until they have measured one. */
export function formatRtt(ms: number): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '-';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

export function formatCount(n: number): string {
  return invalid(n) ? '?' : String(n);
}

/**
 * A daemon's text as it may reach a terminal: whatever a peer or a hostile daemon put in it, control and
 * invisible characters come out as escapes (\n, \x1b, \u202e…), so one value stays one cell on one line
 * and cannot drive the terminal. Anything that is not a string (a daemon bug) is shown as JSON.
 */
export function printable(value: unknown): string {
  if (typeof value === 'string') return escapeControl(value);
  return value === undefined || value === null ? '' : escapeControl(JSON.stringify(value) ?? String(value));
}

/** Empty strings and missing values read as "-" so that columns never look shifted. */
export function orDash(text: string | null | undefined): string {
  return text === null || text === undefined || text === '' ? '-' : text;
}

export type Align = 'left' | 'right';

/**
 * A plain-text table: columns two spaces apart, each as wide as its widest cell, no trailing spaces.
 * `align` gives one entry per column (default left); numbers read best right-aligned. Cells are made
 * printable() here, so no table can carry a raw control character.
 */
export function formatTable(headers: string[], cellsByRow: string[][], align: Align[] = []): string {
  const rows = cellsByRow.map((row) => row.map(printable));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells
    .map((cell, i) => (align[i] === 'right' ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
    .join('  ')
    .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** "name   value" lines with the values aligned, for single records such as status; values made printable(). */
export function formatFields(fields: Array<[string, string]>): string {
  const width = Math.max(0, ...fields.map(([name]) => name.length));
  return fields.map(([name, value]) => `${name.padEnd(width)}  ${printable(value)}`.trimEnd()).join('\n') + '\n';
}
