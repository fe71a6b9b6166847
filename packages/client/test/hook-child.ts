/**
 * A stand-in daemon for hook-runner.test.ts, which starts it with the privileges of a packaged client
 * (user nobody with CAP_NET_ADMIN as an ambient capability): runs one peer event's hooks from argv[2] as
 * hook user argv[3] (default: its own), then prints its own capability sets and the hand-off's stats.
 * With argv[4] = 'withhold' it first does what mnedcd-client does at start (withholdCapabilitiesFromChildren).
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { DiscoveryHandoff } from '../src/discovery';
import { parseCapabilities, withholdCapabilitiesFromChildren } from '../src/hook-runner';

async function main(): Promise<void> {
  const [hookDir = '', hookUser = '', mode = ''] = process.argv.slice(2);
  const log = pino({ level: 'warn' }, pino.destination(2));
  if (mode === 'withhold') withholdCapabilitiesFromChildren(log);
  const handoff = new DiscoveryHandoff({ hookDir, hookTimeoutMs: 10_000, peersFile: '', hostsFile: '', hookUser }, log);
  handoff.update(null, [], { up: [{ deviceId: 'p', ip: '10.0.0.3', hostname: 'p', underlay: [], since: 1 }], down: [] });
  await handoff.idle();
  await handoff.close();
  const caps = parseCapabilities(readFileSync('/proc/self/status', 'utf8'));
  process.stdout.write(`${JSON.stringify({ uid: process.getuid?.(), ambient: caps.ambient.toString(16), effective: caps.effective.toString(16),
    permitted: caps.permitted.toString(16), inheritable: caps.inheritable.toString(16), stats: handoff.stats() })}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
