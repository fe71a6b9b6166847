/**
 * Steps of the Debian system test (apt-install.test.ts) for the units around the client: boot order
 * (mnedc-online.target, mnedcd-client-wait-online.service) and peer names in /etc/hosts
 * (mnedcd-client-hosts.service, a watcher). Each takes the booted containers and the clients' overlay addresses.
 */
import { strict as assert } from 'node:assert';
import type { Container, Daemon } from '@mnedc/lab';

type Box = Record<'srv' | 'c' | 'd', Container>;
type Ips = Record<'c' | 'd', string>;

/** A service that needs the overlay: it binds c's overlay address, and fails (not retried) if that is not there. */
export const BOUND_UNIT = 'overlay-echo.service';
const BOUND_PORT = 7777;

function boundUnit(ip: string): string {
  const script = `require('net').createServer((s) => s.end('hello from c')).listen(${BOUND_PORT}, process.argv[1], () => console.log('listening on ' + process.argv[1]))`;
  return [
    '[Unit]',
    'Description=a service bound to the overlay address (system test)',
    'Wants=mnedc-online.target',
    'After=mnedc-online.target',
    '[Service]',
    `ExecStart=/usr/bin/node -e "${script}" ${ip}`,
    'Restart=no',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

const escape = (ip: string) => ip.replace(/\./g, '\\.');

/** What merged the client's names into /etc/hosts last said, as a follower of its journal. */
function followMerges(node: Container, fromStart: boolean): Daemon {
  return node.follow(`exec journalctl -u mnedcd-client-hosts.service -f -n ${fromStart ? 'all' : '0'} -o cat`);
}

/** /etc/hosts inside, or null when there is none. */
async function hostsFile(node: Container): Promise<string | null> {
  const result = await node.exec('cat /etc/hosts');
  return result.code === 0 ? result.stdout : null;
}

/** The entries of the mnedc block of a hosts file's text, in order; [] when there is no block. */
function blockOf(text: string | null): string[] {
  const match = /^# BEGIN mnedc peers[^\n]*\n([^]*?)^# END mnedc peers$/m.exec(text ?? '');
  return match ? match[1]!.split('\n').filter(Boolean) : [];
}

/** What the merger makes of a client's hosts file: each line with its names under .mnedc only. */
function expectedBlock(source: string): string[] {
  return source.split('\n').filter((line) => line !== '' && !line.startsWith('#')).flatMap((line) => {
    const [ip, ...names] = line.split(/\s+/);
    const kept = names.filter((n) => n.endsWith('.mnedc'));
    return kept.length > 0 ? [`${ip}\t${kept.join(' ')}`] : [];
  });
}

/**
 * Waits, at most `ms`, until the mnedc block of /etc/hosts on `node` is what `expected` says (asked again
 * each time: the client may still be writing); fails showing the last block seen.
 */
async function blockBecomes(node: Container, expected: () => Promise<string[]>, ms: number, what: string): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const [seen, entries] = [blockOf(await hostsFile(node)), await expected()];
    if (JSON.stringify(seen) === JSON.stringify(entries)) return seen;
    if (Date.now() > deadline) assert.deepEqual(seen, entries, `${what}: /etc/hosts did not converge within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** `getent hosts NAME` inside: the address, or null when the name does not resolve (exit 2). */
async function resolve(node: Container, name: string): Promise<string | null> {
  const result = await node.exec(`getent hosts ${name}`);
  if (result.code === 2) return null;
  assert.equal(result.code, 0, `getent hosts ${name}: ${result.stdout}${result.stderr}`);
  return result.stdout.trim().split(/\s+/)[0]!;
}

/**
 * `getent hosts d.mnedc` on c resolves d's overlay address with nothing set up beyond installing and
 * configuring the client; the name goes when d leaves, and comes back when it returns. d's own /etc/hosts
 * loses its block when d's client stops, and keeps every line that was not mnedc's.
 */
export async function namesResolve(box: Box, ips: Ips): Promise<void> {
  const { c, d } = box;
  for (const node of [c, d]) {
    assert.equal((await node.run('systemctl show -p Type --value mnedcd-client-hosts.service')).trim(), 'simple');
    assert.equal((await node.run('systemctl is-active mnedcd-client-hosts.service')).trim(), 'active', 'the merger runs beside the client');
  }
  // Each merger has run for the other's arrival once it lists three devices (c, d and the relay's own).
  await Promise.all([c, d].map((node) => followMerges(node, true).waitForRaw(/^mnedcctl: \/etc\/hosts (now lists|already listed) 3 mnedc devices/, 60_000)));
  const hostsBefore = await hostsFile(d);
  assert.match(hostsBefore ?? '', /^# BEGIN mnedc peers/m, 'd has merged its peers too');
  assert.equal(await resolve(c, 'd.mnedc'), ips.d, 'd.mnedc from c');
  assert.equal(await resolve(d, 'c.mnedc'), ips.c, 'c.mnedc from d');
  const deviceId = (JSON.parse(await d.run('mnedcctl status --json')) as { deviceId: string }).deviceId;
  assert.equal(await resolve(c, `${deviceId}.mnedc`), ips.d, 'd\'s device ID name from c');
  // Only names under .mnedc reach the system's resolver; the bare hostname stays in /run/mnedc/hosts.
  assert.match(await c.run('cat /run/mnedc/hosts'), new RegExp(`^${escape(ips.d)}\\s.*\\bd$`, 'm'));
  assert.doesNotMatch(await c.run('cat /etc/hosts'), new RegExp(`^${escape(ips.d)}\\s.*\\sd$`, 'm'));

  const merges = followMerges(c, false);
  await d.run('systemctl stop mnedcd-client');
  await merges.waitForRaw(/^mnedcctl: \/etc\/hosts now lists 2 mnedc devices/, 60_000);
  assert.equal(await resolve(c, 'd.mnedc'), null, 'd.mnedc still resolves on c after d left');
  assert.equal(await resolve(c, 'c.mnedc'), ips.c);
  // d's own names went with its client: its merger stopped with it (PartOf=), taking the block out.
  await followMerges(d, true).waitForRaw(/^mnedcctl: \/etc\/hosts now lists 0 mnedc devices/, 60_000);
  assert.equal((await d.exec('systemctl is-active mnedcd-client-hosts.service')).stdout.trim(), 'inactive', 'the merger stopped with the client');
  // Debian's minimal root has no /etc/hosts: then there is none again.
  const kept = hostsBefore!.replace(/^# BEGIN mnedc peers[^]*?^# END mnedc peers\n/m, '');
  assert.equal(await hostsFile(d), kept === '' ? null : kept, 'every other line kept');

  const back = followMerges(c, false);
  await d.run('systemctl start mnedcd-client');
  await back.waitForRaw(/^mnedcctl: \/etc\/hosts now lists 3 mnedc devices/, 60_000);
  assert.equal(await resolve(c, 'd.mnedc'), ips.d, 'd.mnedc again after d returned');
}

/**
 * Changes in quick succession, the race the path unit lost (a change made while its oneshot merge was
 * finishing stayed out of /etc/hosts until the next one): eight rewrites of c's hosts file within a
 * second, some dropping every real peer, and /etc/hosts ends with the last; then d leaves and comes back
 * within about a second, and c's /etc/hosts ends with what its client wrote last.
 */
export async function namesFollowBursts(box: Box, ips: Ips): Promise<void> {
  const { c, d } = box;
  const real = await c.run('cat /run/mnedc/hosts');
  assert.match(real, new RegExp(`^${escape(ips.d)}\\s`, 'm'), 'c lists d to begin with');
  // As the client writes it: a temporary file renamed over the old one (root's, until the client's next write).
  await c.run([
    'set -e',
    'real=$(cat /run/mnedc/hosts)',
    'for i in 1 2 3 4 5 6 7 8; do',
    '  if [ $((i % 2)) = 0 ]; then printf \'# Generated\\n\'; else printf \'%s\\n\' "$real"; fi > /run/mnedc/.hosts.burst',
    '  printf \'192.0.2.%s\\tburst%s.mnedc\\n\' "$i" "$i" >> /run/mnedc/.hosts.burst',
    '  [ "$i" = 8 ] && printf \'%s\\n\' "$real" >> /run/mnedc/.hosts.burst',
    '  mv -f /run/mnedc/.hosts.burst /run/mnedc/hosts',
    '  sleep 0.1',
    'done',
  ].join('\n'));
  await blockBecomes(c, async () => ['192.0.2.8\tburst8.mnedc', ...expectedBlock(real)], 30_000, 'the last of eight rewrites within a second');
  assert.equal(await resolve(c, 'burst8.mnedc'), '192.0.2.8');
  assert.equal(await resolve(c, 'burst7.mnedc'), null);

  const journal = c.follow('exec journalctl -u mnedcd-client -f -n 0 -o cat');
  await d.run('systemctl restart mnedcd-client');
  await journal.waitForRaw(new RegExp(`^Peer .* is up at ${escape(ips.d)}( |$)`), 60_000);
  const written = async () => {
    const text = await c.run('cat /run/mnedc/hosts');
    return /burst/.test(text) ? ['(c\'s client has not written its file since the burst)'] : expectedBlock(text);
  };
  const block = await blockBecomes(c, written, 30_000, 'd left and came back');
  assert.ok(block.some((entry) => entry.startsWith(`${ips.d}\t`)), `d in c's block: ${block.join(', ')}`);
  assert.equal(await resolve(c, 'd.mnedc'), ips.d);
  assert.equal(await resolve(c, 'burst8.mnedc'), null);
}

/**
 * Cold start with the relay down: a service ordered after mnedc-online.target is started (pulling in the
 * client through the wait), the client comes up and says READY after its bounded wait without an address,
 * and the service stays queued; once the relay is up it starts, bound to the overlay address. The service
 * is left enabled, so the reboot step checks it at boot too (bootCheck).
 */
export async function bootOrder(box: Box, ips: Ips): Promise<void> {
  const { srv, c } = box;
  await c.run(`cat > /etc/systemd/system/${BOUND_UNIT} <<'EOF'\n${boundUnit(ips.c)}EOF\nsystemctl daemon-reload && systemctl enable ${BOUND_UNIT}`);
  await srv.run('systemctl stop mnedcd-server');
  await c.run('systemctl stop mnedcd-client');
  await c.run(`systemctl start --no-block ${BOUND_UNIT}`);
  // Joins the start job the wait pulled in: returns once the client is READY, within its bounded wait.
  await c.run('systemctl start mnedcd-client', 60_000);
  assert.match(await c.run('systemctl show -p StatusText --value mnedcd-client'), /^reconnecting in /, 'READY without the relay, saying so');
  assert.equal((await c.run(`systemctl is-active ${BOUND_UNIT} || true`)).trim(), 'inactive', `${BOUND_UNIT} started before the overlay was up`);
  const jobs = await c.run('systemctl list-jobs --no-legend --plain');
  assert.match(jobs, new RegExp(`${BOUND_UNIT.replace('.', '\\.')}\\s+start\\s+waiting`), `queued behind the wait:\n${jobs}`);
  assert.match(jobs, /mnedcd-client-wait-online\.service\s+start\s+running/, jobs);
  assert.doesNotMatch(await c.run('ip -4 -o addr show'), new RegExp(`\\s${escape(ips.c)}/`), 'no overlay address yet');

  await srv.run('systemctl start mnedcd-server');
  // Joins the queued job: returns when it has run.
  await c.run(`systemctl start ${BOUND_UNIT}`, 90_000);
  await checkBound(box, ips);
  assert.equal((await c.run('systemctl is-active mnedc-online.target')).trim(), 'active');
}

/** The bound service runs and answers on c's overlay address, from d, across the overlay. */
export async function checkBound(box: Box, ips: Ips): Promise<void> {
  const { c, d } = box;
  // Type=simple is active once forked: the bind is done when the service says so (this boot only).
  await c.follow(`exec journalctl -u ${BOUND_UNIT} -b -f -n all -o cat`).waitForRaw(new RegExp(`^listening on ${escape(ips.c)}$`), 30_000);
  assert.equal((await c.run(`systemctl is-active ${BOUND_UNIT} || true`)).trim(), 'active',
    `${BOUND_UNIT}: ${await c.run(`journalctl -u ${BOUND_UNIT} -b --no-pager -o cat || true`)}`);
  const reply = await d.run(`node -e "require('net').connect(${BOUND_PORT}, '${ips.c}').on('data', (b) => { process.stdout.write(b); process.exit(0); })"`, 30_000);
  assert.equal(reply, 'hello from c');
}
