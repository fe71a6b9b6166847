import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { DiscoveryHandoff } from '../src/discovery';
import {
  CAP_SETGID, CAP_SETPCAP, CAP_SETUID, HookProcess, hookUserProblem, HookUserError, KILL_GRACE_MS, lookupUser, parseCapabilities, sandboxArgs,
  type Privileges,
} from '../src/hook-runner';

const skipUnlessRoot = process.getuid?.() !== 0 ? 'needs root to check dropped capabilities and switch users' : false;
const CAP_NET_ADMIN = 12;
const bit = (cap: number): bigint => 1n << BigInt(cap);
const ALL = (1n << 41n) - 1n;
const ROOT: Privileges = { uid: 0, euid: 0, gid: 0, effective: ALL, ambient: 0n };
/** The packaged client as systemd starts it: user mnedc with CAP_NET_ADMIN as an ambient capability. */
const PACKAGED: Privileges = { uid: 998, euid: 998, gid: 998, effective: bit(CAP_NET_ADMIN), ambient: bit(CAP_NET_ADMIN) };
/** The packaged client once it emptied its ambient set (withholdCapabilitiesFromChildren). */
const WITHHELD: Privileges = { ...PACKAGED, ambient: 0n };
const NOBODY = { name: 'nobody', uid: 65534, gid: 65534 };

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-hook-runner-'));
  // Hooks may run as nobody: they must be able to reach their script and write their record.
  chmodSync(dir, 0o777);
  dirs.push(dir);
  return dir;
}

/** A hook directory with one hook that records its capability sets and ids in `<dir>/record`. */
function recordingHooks(): { hookDir: string; record: string } {
  const dir = tempDir();
  const hookDir = join(dir, 'peer.d');
  const record = join(dir, 'record');
  mkdirSync(hookDir);
  chmodSync(hookDir, 0o755);
  writeFileSync(join(hookDir, 'caps'), `#!/bin/sh\n{ grep ^Cap /proc/self/status; echo "Uid: $(id -u)"; echo "Gid: $(id -g)"; } > ${record}\n`);
  chmodSync(join(hookDir, 'caps'), 0o755);
  return { hookDir, record };
}

/** "CapEff" → hex value etc., from a record or /proc/<pid>/status text. */
function fields(text: string): Record<string, string> {
  return Object.fromEntries(text.trim().split('\n').map((l) => l.split(/:\s*/) as [string, string]));
}

function captureLog(): { log: pino.Logger; lines: Array<{ level: number; msg: string }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  return { log: pino({ level: 'debug' }, { write(s: string) { lines.push(JSON.parse(s) as { level: number; msg: string }); } }), lines };
}

async function runHooks(hookDir: string, hookUser = ''): Promise<DiscoveryHandoff> {
  const h = new DiscoveryHandoff({ hookDir, hookTimeoutMs: 10_000, peersFile: '', hostsFile: '', hookUser }, captureLog().log);
  h.update(null, [], { up: [{ deviceId: 'p', ip: '10.0.0.3', hostname: 'p', underlay: [], since: 1 }], down: [] });
  await h.idle();
  await h.close();
  return h;
}

const ZERO = '0000000000000000';

/** Whether `pid` is gone (or a zombie) within `ms`: polled, no event tells of another process's end. */
async function gone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    let state: string;
    try {
      state = /^State:\s*(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '';
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Execs argv[1:] under a seccomp filter that fails capset(2) with EPERM and allows everything else, as the
 * packaged unit's SystemCallFilter=@system-service ~@privileged with SystemCallErrorNumber=EPERM does.
 */
const DENY_CAPSET = `
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
capset = {'x86_64': 126, 'aarch64': 91}[os.uname().machine]
prog = b''.join([struct.pack('HBBI', 0x20, 0, 0, 0), struct.pack('HBBI', 0x15, 0, 1, capset),
                 struct.pack('HBBI', 0x06, 0, 0, 0x00050001), struct.pack('HBBI', 0x06, 0, 0, 0x7fff0000)])
buf = ctypes.create_string_buffer(prog)
class Prog(ctypes.Structure): _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Prog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))), 0, 0):
    sys.exit('seccomp: errno %d' % ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
`;
const PYTHON = '/usr/bin/python3';
const SECCOMP_SKIP = !existsSync(PYTHON) ? 'needs /usr/bin/python3 to install a seccomp filter'
  : !['x64', 'arm64'].includes(process.arch) ? 'capset syscall number known for x86_64 and aarch64 only' : false;

describe('hook sandbox', () => {
  it('reads capability sets from a process status', () => {
    const caps = parseCapabilities('Name:\tnode\nCapInh:\t0000000000001000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\n' +
      'CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000001000\n');
    assert.equal(caps.ambient, bit(CAP_NET_ADMIN));
    assert.equal(caps.bounding, ALL);
    assert.throws(() => parseCapabilities('CapInh:\t0\n'), /no CapPrm line/);
  });

  it('empties inheritable and ambient sets always, the bounding set where the daemon may, and switches users only when asked', () => {
    assert.deepEqual(sandboxArgs(PACKAGED, null), ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--']);
    assert.deepEqual(sandboxArgs(ROOT, null), ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', '--']);
    assert.deepEqual(sandboxArgs(ROOT, NOBODY).slice(4), ['--reuid=65534', '--regid=65534', '--init-groups', '--']);
    assert.deepEqual(sandboxArgs({ ...PACKAGED, effective: PACKAGED.effective | bit(CAP_SETPCAP) }, null).slice(3, 4), ['--bounding-set=-all']);
    // Already that user: nothing to switch (and setgroups would need CAP_SETGID).
    assert.deepEqual(sandboxArgs(PACKAGED, { name: 'mnedc', uid: 998, gid: 998 }), sandboxArgs(PACKAGED, null));
  });

  it('execs hooks directly only where an exec passes nothing on: not root, no ambient capability, nothing to drop or switch', () => {
    assert.deepEqual(sandboxArgs(WITHHELD, null), []);
    assert.deepEqual(sandboxArgs(WITHHELD, { name: 'mnedc', uid: 998, gid: 998 }), []);
    assert.deepEqual(sandboxArgs({ ...WITHHELD, effective: 0n }, null), []);
    assert.deepEqual(sandboxArgs(WITHHELD, NOBODY), ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--reuid=65534', '--regid=65534', '--init-groups', '--']);
    assert.deepEqual(sandboxArgs({ ...WITHHELD, effective: WITHHELD.effective | bit(CAP_SETPCAP) }, null).slice(3, 4), ['--bounding-set=-all']);
    assert.deepEqual(sandboxArgs({ ...WITHHELD, euid: 0 }, null), ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--']);
    assert.deepEqual(sandboxArgs({ ...ROOT, effective: 0n }, null), ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--']);
  });

  it('says clearly when the daemon cannot run hooks as hook_user', () => {
    const problem = hookUserProblem(NOBODY, PACKAGED);
    assert.match(problem ?? '', /runs as uid 998 without CAP_SETUID and CAP_SETGID, so it cannot run hooks as nobody \(uid 65534\); leave hook_user empty/);
    assert.equal(hookUserProblem(NOBODY, ROOT), null);
    assert.equal(hookUserProblem(NOBODY, { ...PACKAGED, effective: bit(CAP_SETUID) | bit(CAP_SETGID) }), null);
    assert.equal(hookUserProblem({ name: 'mnedc', uid: 998, gid: 998 }, PACKAGED), null);
    assert.throws(() => lookupUser('-rf'), (e: unknown) => e instanceof HookUserError && /"-rf" is not a user name or number/.test(e.message));
    assert.throws(() => lookupUser('no-such-user-mnedc'), /no such user no-such-user-mnedc/);
    assert.deepEqual(lookupUser('root'), { name: 'root', uid: 0, gid: 0 });
    assert.throws(() => new DiscoveryHandoff({ hookDir: '', hookTimeoutMs: 1000, peersFile: '', hostsFile: '', hookUser: 'no-such-user-mnedc' }, captureLog().log),
      HookUserError);
  });

  it('a reload naming an unusable hook_user is reported and hooks keep their user', async () => {
    const { hookDir, record } = recordingHooks();
    const { log, lines } = captureLog();
    const h = new DiscoveryHandoff({ hookDir, hookTimeoutMs: 10_000, peersFile: '', hostsFile: '' }, log);
    h.reconfigure({ hookDir, hookTimeoutMs: 10_000, peersFile: '', hostsFile: '', hookUser: 'no-such-user-mnedc' });
    const error = lines.find((l) => l.level === 50);
    assert.match(error?.msg ?? '', /^\[discovery\] hook_user: no such user no-such-user-mnedc; hooks keep running as the daemon's own user/);
    h.update(null, [], { up: [{ deviceId: 'p', ip: '10.0.0.3', hostname: 'p', underlay: [], since: 1 }], down: [] });
    await h.idle();
    await h.close();
    assert.equal(fields(readFileSync(record, 'utf8')).Uid, String(process.getuid?.()));
  });
});

describe('hooks exec\'d directly', () => {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

  it('a hook whose interpreter is missing could not be started, and the error says so', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'badinterp'), '#!/nonexistent/interpreter\n');
    chmodSync(join(dir, 'badinterp'), 0o755);
    const outcome = await new HookProcess({ path: join(dir, 'badinterp'), args: ['up'], env, timeoutMs: 10_000, sandbox: [] }, () => {}).done;
    assert.equal(outcome.kind, 'unstarted');
    assert.match(outcome.kind === 'unstarted' ? outcome.error.message : '',
      new RegExp(`^cannot execute ${dir}/badinterp: ENOENT \\(is the interpreter on its #! line installed\\?\\)$`));
  });

  it('runs in its own process group, which a timeout kills whole', async () => {
    const dir = tempDir();
    const pids = join(dir, 'pids');
    writeFileSync(join(dir, 'slow'), `#!/bin/sh\nsleep 1000 &\necho "$$ $! $(cut -d' ' -f5 /proc/$$/stat)" > ${pids}\nwait\n`);
    chmodSync(join(dir, 'slow'), 0o755);
    const hook = new HookProcess({ path: join(dir, 'slow'), args: ['up'], env, timeoutMs: 500, sandbox: [] }, () => {});
    const outcome = await hook.done;
    assert.equal(outcome.kind, 'timeout');
    const [shell, background, group] = readFileSync(pids, 'utf8').trim().split(/\s+/).map(Number);
    assert.deepEqual([shell, group], [hook.pid, hook.pid], 'the hook itself leads its own group');
    assert.equal(await gone(background!, KILL_GRACE_MS + 5000), true, `background process ${background} killed with the group`);
  });
});

describe('hooks run without the daemon\'s capabilities', { skip: skipUnlessRoot }, () => {
  it('a root daemon\'s hook has no capability in any set, bounding set included', async () => {
    assert.notEqual(parseCapabilities(readFileSync('/proc/self/status', 'utf8')).effective, 0n, 'this test runs with capabilities to lose');
    const { hookDir, record } = recordingHooks();
    const h = await runHooks(hookDir);
    assert.equal(h.stats().hookFailures, 0);
    const got = fields(readFileSync(record, 'utf8'));
    assert.deepEqual([got.CapInh, got.CapPrm, got.CapEff, got.CapBnd, got.CapAmb], [ZERO, ZERO, ZERO, ZERO, ZERO], JSON.stringify(got));
    assert.equal(got.Uid, '0');
  });

  it('hook_user runs hooks as that user, with its groups and no capabilities', async () => {
    const { hookDir, record } = recordingHooks();
    const h = await runHooks(hookDir, 'nobody');
    assert.equal(h.stats().hookFailures, 0);
    const got = fields(readFileSync(record, 'utf8'));
    assert.deepEqual([got.Uid, got.Gid], [execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim(), execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim()]);
    assert.deepEqual([got.CapInh, got.CapPrm, got.CapEff, got.CapBnd, got.CapAmb], [ZERO, ZERO, ZERO, ZERO, ZERO]);
  });

  it('a packaged daemon (non-root, CAP_NET_ADMIN ambient) passes nothing on, though it cannot empty its bounding set', () => {
    const { hookDir, record } = recordingHooks();
    // User nobody keeping CAP_NET_ADMIN as permitted, effective, inheritable and ambient, as systemd's
    // AmbientCapabilities= gives the packaged unit.
    const asPackaged = ['--securebits=+no_setuid_fixup', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+net_admin', '--ambient-caps=+net_admin'];
    // What any child of such a daemon gets when nothing is done about it: the threat.
    const plain = spawnSync('setpriv', [...asPackaged, 'grep', '^CapAmb', '/proc/self/status'], { encoding: 'utf8' });
    assert.equal(plain.stdout.trim(), 'CapAmb:\t0000000000001000', plain.stderr);

    const child = spawnSync('setpriv', [...asPackaged, process.execPath, join(__dirname, 'hook-child.js'), hookDir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.status, 0, child.stderr);
    const daemon = JSON.parse(child.stdout) as { uid: number; ambient: string; stats: { hookRuns: number; hookFailures: number } };
    assert.deepEqual([daemon.uid, daemon.ambient, daemon.stats.hookRuns, daemon.stats.hookFailures], [65534, '1000', 1, 0]);
    const got = fields(readFileSync(record, 'utf8'));
    assert.deepEqual([got.Uid, got.CapInh, got.CapPrm, got.CapEff, got.CapAmb], ['65534', ZERO, ZERO, ZERO, ZERO], JSON.stringify(got));
    assert.notEqual(got.CapBnd, ZERO, 'a non-root daemon cannot empty the bounding set; no_new_privs makes it moot');
  });

  it('a daemon still holding ambient capabilities where capset(2) is denied (as by SystemCallFilter=~@privileged): hooks fail closed and each failure says why', { skip: SECCOMP_SKIP }, () => {
    const { hookDir, record } = recordingHooks();
    const asPackaged = ['--securebits=+no_setuid_fixup', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+net_admin', '--ambient-caps=+net_admin'];
    const child = spawnSync('setpriv', [...asPackaged, PYTHON, '-c', DENY_CAPSET, process.execPath, join(__dirname, 'hook-child.js'), hookDir],
      { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.status, 0, child.stderr);
    const daemon = JSON.parse(child.stdout) as { ambient: string; stats: { hookRuns: number; hookFailures: number } };
    assert.deepEqual([daemon.ambient, daemon.stats.hookRuns, daemon.stats.hookFailures], ['1000', 1, 1]);
    assert.equal(existsSync(record), false, 'the hook did not run, with or without capabilities');
    const logged = child.stderr.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string });
    assert.match(logged.find((l) => l.level === 40)?.msg ?? '',
      /^Hook caps could not be started for peer p up: setpriv: activate capabilities: Operation not permitted \(is capset\(2\) denied by a seccomp filter\? Under systemd, SystemCallFilter= must allow capset\)/);
  });

  it('a packaged daemon that withheld its capabilities runs hooks under a filter denying capset(2), with none usable', { skip: SECCOMP_SKIP }, () => {
    const { hookDir, record } = recordingHooks();
    const asPackaged = ['--securebits=+no_setuid_fixup', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+net_admin', '--ambient-caps=+net_admin'];
    const child = spawnSync('setpriv', [...asPackaged, PYTHON, '-c', DENY_CAPSET, process.execPath, join(__dirname, 'hook-child.js'), hookDir, '', 'withhold'],
      { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stderr, '', 'nothing logged at warning level');
    const daemon = JSON.parse(child.stdout) as { ambient: string; inheritable: string; permitted: string; effective: string; stats: { hookRuns: number; hookFailures: number } };
    // The daemon keeps CAP_NET_ADMIN for its TUN; capset being denied, it stays inheritable too.
    assert.deepEqual([daemon.ambient, daemon.inheritable, daemon.permitted, daemon.effective], ['0', '1000', '1000', '1000']);
    assert.deepEqual([daemon.stats.hookRuns, daemon.stats.hookFailures], [1, 0]);
    const got = fields(readFileSync(record, 'utf8'));
    assert.deepEqual([got.Uid, got.CapPrm, got.CapEff, got.CapAmb], ['65534', ZERO, ZERO, ZERO], JSON.stringify(got));
    assert.equal(got.CapInh, '0000000000001000', 'inert without a file carrying inheritable file capabilities; capset, needed to drop it, is denied');
  });

  it('where capset(2) is allowed, a packaged daemon that withheld its capabilities runs hooks directly with every set empty but the bounding set', () => {
    const { hookDir, record } = recordingHooks();
    const asPackaged = ['--securebits=+no_setuid_fixup', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+net_admin', '--ambient-caps=+net_admin'];
    const child = spawnSync('setpriv', [...asPackaged, process.execPath, join(__dirname, 'hook-child.js'), hookDir, '', 'withhold'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.status, 0, child.stderr);
    const daemon = JSON.parse(child.stdout) as { ambient: string; inheritable: string; permitted: string; effective: string; stats: { hookRuns: number; hookFailures: number } };
    assert.deepEqual([daemon.ambient, daemon.inheritable, daemon.permitted, daemon.effective], ['0', '0', '1000', '1000']);
    assert.deepEqual([daemon.stats.hookRuns, daemon.stats.hookFailures], [1, 0]);
    const got = fields(readFileSync(record, 'utf8'));
    assert.deepEqual([got.Uid, got.CapInh, got.CapPrm, got.CapEff, got.CapAmb], ['65534', ZERO, ZERO, ZERO, ZERO], JSON.stringify(got));
  });

  it('a non-root daemon asked to run hooks as another user refuses with a configuration error', () => {
    const { hookDir } = recordingHooks();
    const child = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, join(__dirname, 'hook-child.js'), hookDir, 'root'],
      { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.status, 1);
    assert.match(child.stderr, /the daemon runs as uid 65534 without CAP_SETUID and CAP_SETGID, so it cannot run hooks as root/);
  });
});

describe('mnedcd-client with [discovery] hook_user', { skip: skipUnlessRoot }, () => {
  const CLIENT = join(__dirname, '..', '..', 'bin', 'mnedcd-client.js');

  function startClient(hookUser: string, asUser: string[]): { status: number | null; stderr: string; config: string } {
    const dir = tempDir();
    const config = join(dir, 'client.ini');
    const key = Buffer.alloc(32, 7).toString('base64url');
    writeFileSync(config, `[client]\nserver = 127.0.0.1:9\njoin = mnedc1.${key}.${key}\ndevice_id = hook-user-test\nstate_dir = ${dir}/state\n` +
      `[control]\nsocket =\n[discovery]\nhook_dir = ${dir}/peer.d\npeers_file =\nhosts_file =\nhook_user = ${hookUser}\n`);
    chmodSync(config, 0o644);
    const result = spawnSync('setpriv', [...asUser, process.execPath, CLIENT, '--config', config], { encoding: 'utf8', timeout: 30_000 });
    return { status: result.status, stderr: result.stderr, config };
  }

  it('exits 2 naming the key when the daemon cannot switch to hook_user, before touching the network', () => {
    const denied = startClient('root', ['--reuid=65534', '--regid=65534', '--clear-groups']);
    assert.equal(denied.status, 2, denied.stderr);
    assert.match(denied.stderr, new RegExp(`^mnedcd-client: ${denied.config}: \\[discovery\\] hook_user: the daemon runs as uid 65534 without CAP_SETUID and CAP_SETGID, so it cannot run hooks as root`));
    const unknown = startClient('no-such-user-mnedc', []);
    assert.equal(unknown.status, 2, unknown.stderr);
    assert.equal(unknown.stderr, `mnedcd-client: ${unknown.config}: [discovery] hook_user: no such user no-such-user-mnedc\n`);
  });
});
