import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { defaultLogFormat, escapeControl, formatLine, RateLimitedWarning } from '../src';

const line = (level: number, msg: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ level, time: '2026-11-22T04:00:00.000Z', pid: 7, name: 'mnedcd-client', msg, ...extra });

describe('log formats', () => {
  it('prefixes journal lines with the syslog priority of their level', () => {
    assert.equal(formatLine(line(40, 'Lost the server', { server: '192.168.0.10:3334' }), 'journal'), '<4>Lost the server server=192.168.0.10:3334\n');
    assert.equal(formatLine(line(50, 'x'), 'journal'), '<3>x\n');
    assert.equal(formatLine(line(60, 'x'), 'journal'), '<2>x\n');
    assert.equal(formatLine(line(30, 'x'), 'journal'), '<6>x\n');
    assert.equal(formatLine(line(20, 'x'), 'journal'), '<7>x\n');
  });

  it('keeps one entry on one line and quotes values that need it', () => {
    const text = formatLine(line(50, 'Cannot start', { err: { type: 'Error', message: 'bind: address in use', stack: 'Error\n  at x' }, path: '/run/a b' }), 'journal');
    assert.equal(text, '<3>Cannot start err="bind: address in use" path="/run/a b"\n');
    assert.equal(formatLine(line(30, 'multi\nline'), 'journal'), '<6>multi\\nline\n');
  });

  it('escapes control characters in the message, field names and values: a peer cannot forge a second entry', () => {
    // A hostile relay's REJECT reason, as the client logs it, trying to add a fake error entry of its own.
    const reason = 'bye\n<3>mnedcd-client: fake\r\u001b[2K\u0007\u009b\u2028\u202e';
    const entry = line(40, `Server rejected this device: ${reason}`, { reason, [`k\ney`]: 1, bare: 'x\u001by', list: ['a\u0085b'] });
    for (const format of ['journal', 'text'] as const) {
      const out = formatLine(entry, format);
      assert.equal(out.indexOf('\n'), out.length - 1, `${format}: one line`);
      assert.doesNotMatch(out.slice(0, -1), /[\u0000-\u001f\u007f-\u009f\u2028\u202e]/, `${format}: nothing unprintable`);
    }
    assert.equal(formatLine(entry, 'journal'),
      '<4>Server rejected this device: bye\\n<3>mnedcd-client: fake\\r\\x1b[2K\\x07\\x9b\\u2028\\u202e' +
      ' reason="bye\\n<3>mnedcd-client: fake\\r\\u001b[2K\\u0007\\x9b\\u2028\\u202e" k\\ney=1 bare="x\\u001by" list=["a\\x85b"]\n');
  });

  it('escapeControl leaves printable text alone, any language included', () => {
    for (const text of ['Büro-PC', '東京 サーバー', 'emoji 😀', 'tab-free', 'a\\nb']) assert.equal(escapeControl(text), text);
    assert.equal(escapeControl('a\tb\u0000c\u{e0041}'), 'a\\tb\\x00c\\u{e0041}');
  });

  it('writes readable text lines elsewhere', () => {
    assert.equal(formatLine(line(30, 'Connected', { ip: '10.0.0.2' }), 'text'), '2026-11-22T04:00:00.000Z INFO  Connected ip=10.0.0.2\n');
  });

  it('chooses journal only when stdout is the stream JOURNAL_STREAM names', () => {
    assert.equal(defaultLogFormat({}), 'text');
    assert.equal(defaultLogFormat({ JOURNAL_STREAM: '1:2' }), 'text');
  });

  it('gives errors before the logger exists priority err when stderr is the journal stream', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-log-'));
    try {
      const file = path.join(dir, 'stream');
      const run = (journalStream: (stat: { dev: number; ino: number }) => string): string => {
        const fd = openSync(file, 'w');
        const { dev, ino } = statSync(file);
        spawnSync(process.execPath, ['-e', `require(${JSON.stringify(require.resolve('../src'))}).startupError('mnedcd-client: [client] server: not set')`],
          { stdio: ['ignore', 'ignore', fd], env: { ...process.env, JOURNAL_STREAM: journalStream({ dev, ino }) } });
        closeSync(fd);
        return readFileSync(file, 'utf8');
      };
      assert.equal(run(({ dev, ino }) => `${dev}:${ino}`), '<3>mnedcd-client: [client] server: not set\n');
      assert.equal(run(() => '1:2'), 'mnedcd-client: [client] server: not set\n', 'no prefix on a redirected stderr');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RateLimitedWarning', () => {
  it('logs one line per kind and interval, describing only what it logs, and counts the rest', () => {
    const lines: Array<{ msg: string; suppressed?: number }> = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as { msg: string }) });
    const warnings = new RateLimitedWarning(log, 60_000);
    let described = 0;
    const describe = (text: string) => () => {
      described++;
      return { fields: {}, message: text };
    };
    for (let i = 0; i < 1000; i++) warnings.warn('spoofed', describe('spoofed'));
    warnings.warn('noRoute', describe('no route'));
    assert.deepEqual(lines.map((l) => l.msg), ['spoofed', 'no route'], 'a storm of one kind does not hide another');
    assert.equal(described, 2, 'suppressed events are not formatted');
    const later = new RateLimitedWarning(log, 0);
    later.warn('k', describe('first'));
    later.warn('k', describe('second'));
    assert.equal(lines.length, 4);
  });
});

