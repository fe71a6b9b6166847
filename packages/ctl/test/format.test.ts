import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatAgo, formatBitRate, formatBytes, formatClock, formatCount, formatDuration, formatFields, formatPacketRate,
  formatRate, formatRtt, formatTable, orDash, printable,
} from '../src/format';

test('bytes use binary units with at most three significant figures', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1.0 KiB');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(512_000), '500 KiB');
  assert.equal(formatBytes(1_572_864), '1.5 MiB');
  assert.equal(formatBytes(1024 * 1024 - 1), '1.0 MiB');
  assert.equal(formatBytes(5 * 1024 ** 3), '5.0 GiB');
  assert.equal(formatBytes(-1), '?');
  assert.equal(formatBytes(NaN), '?');
});

test('rates are pkt/s and decimal bit/s', () => {
  assert.equal(formatBitRate(0), '0 bit/s');
  assert.equal(formatBitRate(999), '999 bit/s');
  assert.equal(formatBitRate(9_600), '9.6 Kbit/s');
  assert.equal(formatBitRate(1_200_000), '1.2 Mbit/s');
  assert.equal(formatBitRate(940_000_000), '940 Mbit/s');
  assert.equal(formatBitRate(2.5e9), '2.5 Gbit/s');
  assert.equal(formatPacketRate(0), '0 pkt/s');
  assert.equal(formatPacketRate(2.5), '2.5 pkt/s');
  assert.equal(formatPacketRate(850.4), '850 pkt/s');
  assert.equal(formatRate(850, 1_200_000), '850 pkt/s 1.2 Mbit/s');
});

test('durations show the two most significant units', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(45.9), '45s');
  assert.equal(formatDuration(180), '3m');
  assert.equal(formatDuration(192), '3m 12s');
  assert.equal(formatDuration(7500), '2h 5m');
  assert.equal(formatDuration(7200 + 30), '2h');
  assert.equal(formatDuration(3 * 86400 + 4 * 3600 + 59), '3d 4h');
  assert.equal(formatDuration(-5), '?');
});

test('times are relative to now', () => {
  const now = 1_700_000_000_000;
  assert.equal(formatAgo(now, now), 'just now');
  assert.equal(formatAgo(now - 400, now), 'just now');
  assert.equal(formatAgo(now - 5_000, now), '5s ago');
  assert.equal(formatAgo(now - 180_000, now), '3m ago');
  assert.equal(formatAgo(now - 7_500_000, now), '2h 5m ago');
  assert.equal(formatAgo(now + 60_000, now), 'in 1m');
  assert.equal(formatAgo(0, now), '-');
});

test('clock times are local HH:MM:SS', () => {
  const at = new Date(2024, 0, 15, 9, 3, 4).getTime();
  assert.equal(formatClock(at), '09:03:04');
  assert.equal(formatClock(NaN), '??:??:??');
});

test('rtt, counts and empty values', () => {
  assert.equal(formatRtt(-1), '-');
  assert.equal(formatRtt(3.25), '3.3 ms');
  assert.equal(formatRtt(12.4), '12 ms');
  assert.equal(formatCount(7), '7');
  assert.equal(formatCount(undefined as unknown as number), '?');
  assert.equal(orDash(''), '-');
  assert.equal(orDash(null), '-');
  assert.equal(orDash('x'), 'x');
});

test('tables align columns two spaces apart without trailing spaces', () => {
  const text = formatTable(['NAME', 'N', 'NOTE'], [['a', '1', ''], ['long-name', '100', 'x']], ['left', 'right', 'left']);
  assert.equal(text,
    'NAME         N  NOTE\n' +
    'a            1\n' +
    'long-name  100  x\n');
});

test('fields align their values', () => {
  assert.equal(formatFields([['pid', '1'], ['server ip', '10.0.0.1'], ['empty', '']]),
    'pid        1\n' +
    'server ip  10.0.0.1\n' +
    'empty\n');
});

test('cells and values from a daemon are escaped, and aligned as shown', () => {
  assert.equal(formatTable(['ID', 'HOST'], [['a\nb', 'x\u001b[2J'], ['c', 'y']]),
    'ID    HOST\n' +
    'a\\nb  x\\x1b[2J\n' +
    'c     y\n');
  assert.equal(formatFields([['last error', 'rejected\r\u2028\u202eevil']]), 'last error  rejected\\r\\u2028\\u202eevil\n');
  assert.equal(printable({ a: 'b\u009b' }), '{"a":"b\\x9b"}');
  assert.equal(printable(undefined), '');
  assert.equal(printable('Büro 東京'), 'Büro 東京');
});
