/**
 * Where a relayed byte's CPU goes: runs iperf3 c → d through the overlay (every packet relayed by the
 * server) with the daemons under the V8 CPU profiler (cpu-prof-hook.ts), then prints throughput, the CPU seconds each daemon
 * spent per GB moved, and each daemon's hottest functions by self time.
 *   node tools/perf/dist/src/relay-profile.js [--seconds N] [--streams N] [--no-profile]
 *        [--client-extra 'INI'] [--server-extra 'INI'] [--c-extra 'INI'] [--d-extra 'INI'] [--out DIR]
 * Root only (network namespaces). Numbers on a shared machine are noisy: compare runs back to back.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cpuSeconds, iperf, Lab, Overlay, type Daemon } from '@mnedc/lab';

function option(name: string): string | undefined {
  const index = process.argv.indexOf(name);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** The `top` functions by self time of a .cpuprofile, as "percent name file:line" lines. */
export function summariseProfile(file: string, top = 25): string[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[] };
  const hits = new Map<number, number>();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const byName = new Map<string, number>();
  for (const node of profile.nodes) {
    const count = hits.get(node.id) ?? 0;
    if (count === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^.*\/(packages|node:)/, '$1')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    byName.set(key, (byName.get(key) ?? 0) + count);
  }
  const total = profile.samples.length;
  return [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([name, count]) => `${((100 * count) / total).toFixed(1).padStart(5)}%  ${name}`);
}

async function stopAndWait(daemon: Daemon): Promise<void> {
  daemon.signal('SIGTERM');
  await daemon.waitExit(10_000).catch(() => daemon.signal('SIGKILL'));
}

async function main(): Promise<void> {
  const seconds = Number(option('--seconds') ?? 5);
  const streams = Number(option('--streams') ?? 1);
  const profile = !process.argv.includes('--no-profile');
  const out = option('--out') ?? path.join(tmpdir(), `mnedc-profile-${Date.now()}`);
  const clientExtra = option('--client-extra') ?? '';
  const lab = await Lab.create();
  let overlay: Overlay | undefined;
  try {
    const env = (name: string) => {
      if (!profile) return process.env;
      const dir = path.join(out, name);
      mkdirSync(dir, { recursive: true });
      return { ...process.env, NODE_OPTIONS: `--require ${path.join(__dirname, 'cpu-prof-hook.js')}`, MNEDC_CPU_PROF_DIR: dir };
    };
    overlay = await Overlay.start(lab, {
      server: { env: env('server'), extra: option('--server-extra') ?? '' },
      clients: {
        c: { env: env('c'), extra: `${clientExtra}\n${option('--c-extra') ?? ''}` },
        d: { env: env('d'), extra: `${clientExtra}\n${option('--d-extra') ?? ''}` },
        a: { extra: clientExtra },
        b: { extra: clientExtra },
      },
    });
    const ips = await overlay.overlayIps();
    const daemons = { server: overlay.server, c: overlay.client('c'), d: overlay.client('d') };
    const cpu = async () => Object.fromEntries(await Promise.all(Object.entries(daemons).map(async ([k, d]) => [k, await cpuSeconds(d.pid())] as const)));
    const before = await cpu();
    const started = Date.now();
    const result = await iperf(lab, 'c', 'd', ips.d, { seconds, streams, port: 5401 });
    const wall = (Date.now() - started) / 1000;
    const afterRun = await cpu();
    const bytes = (result.bitsPerSecond * seconds) / 8;
    const lines = [`relayed c → d, ${streams} stream(s), ${seconds} s: ${(result.bitsPerSecond / 1e6).toFixed(0)} Mbit/s, ` +
      `${result.retransmits} retransmits`];
    for (const name of Object.keys(daemons)) {
      const used = afterRun[name]! - before[name]!;
      lines.push(`  ${name.padEnd(6)} ${used.toFixed(2)} CPU s in ${wall.toFixed(1)} s wall, ${(used / (bytes / 1e9)).toFixed(2)} CPU s/GB`);
    }
    for (const daemon of Object.values(daemons)) await stopAndWait(daemon);
    if (profile) {
      for (const name of Object.keys(daemons)) {
        const dir = path.join(out, name);
        const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
        lines.push('', `${name}: ${files.map((f) => path.join(dir, f)).join(', ') || 'no profile written'}`);
        for (const f of files) lines.push(...summariseProfile(path.join(dir, f)).map((l) => `  ${l}`));
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await lab.destroy();
    overlay?.dispose();
  }
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`relay-profile failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
