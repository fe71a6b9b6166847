/**
 * `sudo npm run demo`: the seeds' problem, then mnedc solving it. Builds the nested-NAT lab, shows what
 * cannot reach what, starts the relay and four clients, prints the lease table and a ping matrix over
 * the virtual IPs, and tears everything down on exit or Ctrl-C (`--hold` keeps it up until Ctrl-C).
 */
import { Lab, UNDERLAY, type LabNodeName } from './lab';
import { DEVICES, Overlay } from './overlay';
import { pingStats } from './measure';

const WHERE: Record<string, string> = {
  srv: 'main LAN (server)',
  a: 'main LAN',
  b: 'behind r1',
  c: 'behind r1 → r2 (two NATs deep)',
  d: 'behind r3 (same private IP as b)',
};

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root for network namespaces (sudo npm run demo)\n');
    process.exit(2);
  }
  const hold = process.argv.includes('--hold');
  process.stdout.write('Building the nested-NAT lab…\n');
  const lab = await Lab.create();
  let overlay: Overlay | undefined;
  try {
    const check = await lab.check();
    process.stdout.write(`\nWithout mnedc (underlay only):\n${check.stdout.split('\n').filter((l) => /^(OK|FAIL)/.test(l)).map((l) => `  ${l}`).join('\n')}\n`);
    process.stdout.write('\nStarting mnedcd-server in srv and mnedcd-client in a, b, c, d…\n');
    overlay = await Overlay.start(lab);
    const ips = await overlay.overlayIps();
    const nodes: Array<LabNodeName & (keyof typeof ips)> = ['srv', ...DEVICES];
    process.stdout.write(`\nLeases\n${table([
      ['node', 'device ID', 'where', 'underlay IP', 'virtual IP'],
      ...nodes.map((n) => [n, n === 'srv' ? '(server)' : `device-${n}`, WHERE[n]!, UNDERLAY[n], ips[n]]),
    ])}\n`);
    process.stdout.write('\nPing matrix over the overlay (average RTT of 5 pings, ms; row pings column)\n');
    const cells = await Promise.all(nodes.flatMap((from) => nodes.map(async (to) => {
      if (from === to) return '—';
      const stats = await pingStats(lab, from, ips[to], 5);
      return stats.received === stats.sent ? stats.avgMs.toFixed(2) : `LOSS ${stats.sent - stats.received}/${stats.sent}`;
    })));
    const rows = nodes.map((from, i) => [`${from} ${ips[from]}`, ...cells.slice(i * nodes.length, (i + 1) * nodes.length)]);
    process.stdout.write(`${table([['from \\ to', ...nodes.map((n) => `${n} ${ips[n]}`)], ...rows])}\n`);
    for (const [node, args] of [['srv', ['leases']], ['srv', ['peers']], ['c', ['peers']]] as const) {
      const result = await overlay.ctl(node, [...args]);
      process.stdout.write(`\n$ mnedcctl ${args.join(' ')}    (on ${node === 'srv' ? 'the server' : `device ${node}`})\n${result.stdout}${result.stderr}`);
    }
    const failures = cells.filter((c) => c.startsWith('LOSS')).length;
    process.stdout.write(failures === 0 ? '\nEvery device reaches every other across the NATs.\n' : `\n${failures} pairs lost packets.\n`);
    if (hold) {
      process.stdout.write(`\nLab ${lab.prefix} is up. Try: ip netns exec ${lab.ns('c')} ping ${ips.d}\nCtrl-C tears it down.\n`);
      await new Promise<void>((resolve) => process.once('SIGINT', resolve));
    }
    process.exitCode = failures === 0 ? 0 : 1;
  } finally {
    process.stdout.write('\nTearing down the lab…\n');
    await lab.destroy();
    overlay?.dispose();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`demo failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
