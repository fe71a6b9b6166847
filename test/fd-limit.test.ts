/**
 * The relay warns at start when its open-file limit cannot hold [limits] max_clients connections plus the
 * handshakes in progress: the real mnedcd-server, started under a lowered limit (ulimit -n lowers the hard
 * limit too, as Node raises the soft one to the hard one at start).
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Daemon, SERVER_BIN } from '@mnedc/lab';

const dirs: string[] = [];
const daemons: Daemon[] = [];
after(() => {
  daemons.forEach((d) => d.child.kill('SIGKILL'));
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

async function relayUnder(nofile: number, extra: string): Promise<Daemon> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-fd-'));
  dirs.push(dir);
  const config = path.join(dir, 'server.ini');
  writeFileSync(config, `[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}/state\n[control]\nsocket = ${dir}/s.sock\n[log]\nlevel = info\n${extra}`);
  const child = spawn('/bin/sh', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, SERVER_BIN, '--config', config, '--log-format', 'json'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const daemon = new Daemon('relay', child);
  daemons.push(daemon);
  await daemon.waitFor(/^Relay listening/);
  return daemon;
}

describe('open-file limit', () => {
  it('warns at start naming the limit and what max_clients needs, and is quiet when it fits', { timeout: 30_000 }, async () => {
    // A /22 holds 1021 devices: 1021 + 64 handshakes + 256 = 1341 descriptors.
    const short = await relayUnder(1200, '[server]\nsubnet = 10.0.0.0/22\n[limits]\nmax_handshakes = 64\n');
    const warning = await short.waitFor(/^The open-file limit/);
    assert.match(String(warning.msg), /^The open-file limit is 1200, but 1341 may be needed: 1021 devices \(\[limits\] max_clients 0: the subnet's size\) \+ 64 handshakes/);
    assert.equal(warning.level, 40);
    assert.deepEqual([warning.openFiles, warning.needed], [1200, 1341]);
    const fits = await relayUnder(1200, '[server]\nsubnet = 10.0.0.0/22\n[limits]\nmax_handshakes = 64\nmax_clients = 800\n');
    await fits.waitFor(/^mnedcctl can connect to /);
    assert.equal(fits.lines.find((l) => /open-file limit/.test(String(l.msg))), undefined, 'max_clients 800 fits 1200');
  });
});
