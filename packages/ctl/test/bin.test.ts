import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer } from '@mnedc/common';
import { fakeServer } from './fixtures';

// The installed command: exit status and signals go through the real process, not run()'s return value.
const BIN = join(__dirname, '..', '..', 'bin', 'mnedcctl.js');
const TIMEOUT = { timeout: 15_000 };
let dir: string;

before(() => { dir = mkdtempSync(join(tmpdir(), 'mnedcctl-bin-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

function mnedcctl(args: string[]) {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, MNEDC_SOCKET: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
  child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { child, exited };
}

test('bin/mnedcctl.js is executable', () => {
  assert.ok((statSync(BIN).mode & 0o111) !== 0);
});

test('the exit status reaches the shell', TIMEOUT, async () => {
  const help = await mnedcctl(['--help']).exited;
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: mnedcctl /);
  const missing = join(dir, 'missing.sock');
  const absent = await mnedcctl(['--socket', missing, 'status']).exited;
  assert.equal(absent.code, 3);
  assert.equal(absent.stderr, `mnedcctl: no daemon listening on ${missing} (no such socket)\n`);
  assert.equal((await mnedcctl(['bogus']).exited).code, 2);
});

test('SIGINT ends watch with status 0', TIMEOUT, async () => {
  const fake = fakeServer();
  const server = await ControlServer.listen(join(dir, 'server.sock'), fake.methods);
  try {
    const { child, exited } = mnedcctl(['--socket', server.path, 'watch']);
    await fake.watched;
    child.kill('SIGINT');
    const result = await exited;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /Error|at /);
  } finally {
    await server.close();
  }
});
