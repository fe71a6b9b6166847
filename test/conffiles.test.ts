/** The shipped configuration files show every key at its real default, so they cannot drift. */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { clientSchema, parseClientConfig } from '@mnedc/client';
import { REPO_ROOT } from '@mnedc/lab';
import { parseServerConfig, serverSchema } from '@mnedc/server';

function commentedKeys(file: string): Map<string, string> {
  const keys = new Map<string, string>();
  let section = '';
  for (const line of readFileSync(path.join(REPO_ROOT, file), 'utf8').split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1]!;
    const entry = /^;(\w+) =(.*)$/.exec(line);
    if (entry) keys.set(`${section}.${entry[1]}`, entry[2]!.trim());
  }
  return keys;
}

function check(file: string, schema: Record<string, Record<string, { default?: string }>>): void {
  const shown = commentedKeys(file);
  for (const [section, keys] of Object.entries(schema)) {
    for (const [name, spec] of Object.entries(keys)) {
      assert.ok(shown.has(`${section}.${name}`), `${file} does not show [${section}] ${name}`);
      assert.equal(shown.get(`${section}.${name}`), spec.default ?? '', `${file}: [${section}] ${name}`);
    }
  }
  assert.equal(shown.size, Object.values(schema).reduce((n, keys) => n + Object.keys(keys).length, 0), `${file} shows unknown keys`);
}

describe('shipped configuration files', () => {
  it('server.ini shows every key at its default and parses as the defaults', () => {
    check('etc/mnedc/server.ini', serverSchema);
    assert.doesNotThrow(() => parseServerConfig(readFileSync(path.join(REPO_ROOT, 'etc/mnedc/server.ini'), 'utf8'), 'server.ini'));
  });

  it('client.ini shows every key, and as shipped asks for server and join', () => {
    check('etc/mnedc/client.ini', clientSchema);
    assert.throws(() => parseClientConfig(readFileSync(path.join(REPO_ROOT, 'etc/mnedc/client.ini'), 'utf8'), 'client.ini'), /\[client\] server: is required/);
  });
});
