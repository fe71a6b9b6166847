/** The daemons' command lines: a bad configuration is one clear line and a distinct exit status. */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '@mnedc/lab';

const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(program: 'server' | 'client', args: string[]): { status: number | null; stderr: string; stdout: string } {
  const bin = path.join(REPO_ROOT, `packages/${program}/bin/mnedcd-${program}.js`);
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 10_000 });
  return { status: result.status, stderr: result.stderr, stdout: result.stdout };
}

function config(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

describe('daemon command lines', () => {
  it('exit 2 with file, section, key and problem for a bad value or unknown key', () => {
    const bad = config('bad.ini', '[server]\nsubnet = 10.0.0.0/8\n');
    const result = run('server', ['--config', bad]);
    assert.equal(result.status, 2);
    assert.equal(result.stderr, `mnedcd-server: ${bad}: [server] subnet: /8 is outside /16../30 (a /16 holds 65533 devices, a /30 one)\n`);
    const unknown = config('unknown.ini', '[client]\nserver = 1.2.3.4:5\nsevrer = x\n');
    const client = run('client', ['--config', unknown]);
    assert.equal(client.status, 2);
    assert.match(client.stderr, /^mnedcd-client: .*unknown\.ini: \[client\] sevrer: unknown key; known keys are server, join, device_id/);
  });

  it('exit 78 (EX_CONFIG) when the client has no server set', () => {
    const result = run('client', ['--config', config('empty.ini', '[client]\n')]);
    assert.equal(result.status, 78);
    assert.match(result.stderr, /\[client\] server: is required but not set/);
  });

  it('exit 2 for a missing file or an unknown option, with usage', () => {
    const missing = run('server', ['--config', path.join(dir, 'nope.ini')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read configuration .*nope\.ini: ENOENT/);
    const option = run('client', ['--bogus']);
    assert.equal(option.status, 2);
    assert.match(option.stderr, /Unknown option '--bogus'[\s\S]*usage: mnedcd-client/);
    const help = run('server', ['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: mnedcd-server \[--config FILE\]/);
  });
});
