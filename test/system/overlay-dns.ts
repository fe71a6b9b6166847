/**
 * A step of the Debian system test (apt-install.test.ts): names resolved through systemd-resolved and the
 * relay's DNS on the overlay by real applications (getent through NSS and nss-resolve; resolvectl).
 */
import { strict as assert } from 'node:assert';
import type { Container } from '@mnedc/lab';

type Box = Record<'srv' | 'c' | 'd', Container>;
type Ips = Record<'c' | 'd', string>;

const MINUTE = 60_000;
const escape = (text: string) => text.replace(/\./g, '\\.');
/**
 * Not .mnedc: the hosts merger puts the .mnedc names in /etc/hosts, which NSS and resolved both read, so
 * only a domain of its own proves an answer came from the relay's DNS.
 */
const DOMAIN = 'overlay.test';

/**
 * The relay answers for DOMAIN; the clients get systemd-resolved, nss-resolve and polkitd (which the
 * package suggests; its polkit rule lets the user mnedc set its link's DNS) and resolve each other.
 */
export async function dnsThroughResolved(box: Box, ips: Ips): Promise<void> {
  const { srv, c, d } = box;
  // The packaged relay (user mnedc, CAP_NET_BIND_SERVICE) listens on port 53 of its overlay address.
  assert.match(await srv.run('journalctl -u mnedcd-server -q --no-pager -o cat'), /^Answering DNS for mnedc on [\d.]+:53 /m);
  await srv.run(`sed -i 's/^;domain = mnedc$/domain = ${DOMAIN}/' /etc/mnedc/server.ini && grep -q '^domain = ${DOMAIN}$' /etc/mnedc/server.ini`);
  const relay = srv.follow('exec journalctl -u mnedcd-server -f -n 0 -o cat');
  await srv.run('systemctl restart mnedcd-server');
  await relay.waitForRaw(new RegExp(`^Answering DNS for ${escape(DOMAIN)} on [\\d.]+:53 `), 60_000);
  await Promise.all([c, d].map(async (node) => {
    await node.run('apt-get install -y -qq systemd-resolved libnss-resolve polkitd >/dev/null', 10 * MINUTE);
    // Installed on a running system, resolved starts before dbus-daemon has read its bus policy, so it never
    // gets its name and every resolvectl call times out (found by hand in a container like these); a boot
    // would order them, here a reload and a restart do.
    await node.run('systemctl reload dbus && systemctl restart systemd-resolved && busctl status org.freedesktop.resolve1 >/dev/null', MINUTE);
    const journal = node.follow('exec journalctl -u mnedcd-client -f -n 0 -o cat');
    // The client looks for resolved at start.
    await node.run('systemctl restart mnedcd-client');
    await journal.waitForRaw(new RegExp(`^Names in ${escape(DOMAIN)} resolve through the relay's DNS at [\\d.]+ \\(systemd-resolved, link mnedc0\\)`), 60_000);
  }));
  assert.match(await c.run('resolvectl domain mnedc0'), new RegExp(`~${escape(DOMAIN)}`));
  const { deviceId, ip6 } = JSON.parse(await d.run('mnedcctl status --json')) as { deviceId: string; ip6: string };
  for (const name of [`${deviceId}.${DOMAIN}`, `d.${DOMAIN}`]) {
    // The relay answers A and AAAA; getent hosts asks for IPv6 first, as applications' getaddrinfo prefers it.
    const found = await c.exec(`getent ahostsv4 ${name} && getent hosts ${name}`, 20_000);
    assert.match(found.stdout, new RegExp(`^${escape(ips.d)}\\s+STREAM`, 'm'), `${name} from c: ${found.stdout}${found.stderr}`);
    assert.match(found.stdout, new RegExp(`^${escape(ip6)}\\s`, 'm'), `${name} from c: ${found.stdout}${found.stderr}`);
  }
  const c6 = (JSON.parse(await c.run('mnedcctl status --json')) as { ip6: string }).ip6;
  const query = await d.run(`resolvectl query --synthesize=no --cache=no c.${DOMAIN}`, 20_000);
  assert.match(query, new RegExp(`c\\.${escape(DOMAIN)}: ${escape(ips.c)}\\s+-- link: mnedc0`), query);
  // resolved asks a link for AAAA by itself only where it sees IPv6 connectivity; asked for it, the relay has it.
  const query6 = await d.run(`resolvectl query --synthesize=no --cache=no -t AAAA c.${DOMAIN}`, 20_000);
  assert.match(query6, new RegExp(`\\bAAAA\\s+${escape(c6)}\\s`), query6);
  // NXDOMAIN from the relay: getent says "not found" (2) at once.
  assert.equal((await c.exec(`getent hosts nobody.${DOMAIN}`, 20_000)).code, 2);
  const stats = JSON.parse(await srv.run('mnedcctl stats --json')) as { dns: Record<string, number> };
  assert.ok(stats.dns.answers! >= 3 && stats.dns.nxdomain! >= 1, JSON.stringify(stats.dns));
}
