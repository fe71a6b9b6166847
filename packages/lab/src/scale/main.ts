/**
 * `npm run bench:scale -- --devices N [--relays R] [--workers W] [--probes P] [--seconds-idle S]`: the real relay (or R of a cluster) and N
 * simulated devices (see run.ts), one table on stdout, JSON in bench-results/scale-N-<time>.json. Root:
 * the relay runs in a network namespace with its TUN.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../lab';
import { runScale } from './run';
import { formatTable, parseScaleArgs } from './stats';

async function main(): Promise<void> {
  let options;
  try {
    options = parseScaleArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench:scale: ${(error as Error).message}\n`);
    process.exit(2);
  }
  const result = await runScale(options, (line) => process.stderr.write(`bench:scale: ${line}\n`));
  const dir = path.join(REPO_ROOT, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `scale-${options.devices}${options.relays > 1 ? `x${options.relays}` : ""}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${formatTable([result])}\n`);
  process.stdout.write(`commit ${result.commit}, ${result.cores} cores, load average ${result.loadavg.start.map((l) => l.toFixed(2)).join(' ')} at the start, ` +
    `${result.loadavg.end.map((l) => l.toFixed(2)).join(' ')} at the end; ${result.workers} workers; ` +
    `the relay had ${result.relay.joinCpuShare?.toFixed(0) ?? '-'}% of a core while joining and waited ` +
    `${result.relay.joinRunQueueSeconds?.toFixed(1) ?? '-'} s for one; in the storm ${result.storm.cpuMsPerDevice?.toFixed(1) ?? '-'} ms of relay CPU ` +
    `per device back, ${result.storm.cpuShare?.toFixed(0) ?? '-'}% of a core, ${result.storm.runQueueSeconds?.toFixed(1) ?? '-'} s waiting for one; idle CPU over ${result.relay.idleSeconds} s; ` +
    `DNS: ${result.dns.answered}/${result.dns.asked} answered within 1 s\n`);
  for (const note of result.notes) process.stdout.write(`note: ${note}\n`);
  process.stdout.write(`JSON: ${path.relative(process.cwd(), file)}\n`);
}

main().catch((error: Error) => {
  process.stderr.write(`bench:scale: ${error.stack ?? error.message}\n`);
  process.exit(1);
});
