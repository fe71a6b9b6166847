/**
 * A step of the Debian system test (apt-install.test.ts): names resolved through systemd-resolved and the
 * relay's DNS on the overlay, by a real application (libc's NSS with nss-resolve, nothing from /etc/hosts).
 */
import { strict as assert } from 'node:assert';
import type { Container } from '@mnedc/lab';

type Box = Record<'srv' | 'c' | 'd', Container>;
type Ips = Record<'c' | 'd', string>;

const MINUTE = 60_000;
const escape = (text: string) => text.replace(/\./g, '\\.');

/**
 * Installs systemd-resolved, nss-resolve and polkitd on the clients (the package suggests them; its polkit
 * rule lets the user mnedc set its link's DNS), restarts the clients, and resolves each other's names.
 */
export async function dnsThroughResolved(box: Box, ips: Ips): Promise<void> {
  const { srv, c, d } = box;
  // The packaged relay (user mnedc, CAP_NET_BIND_SERVICE) listens on port 53 of its overlay address.
  assert.match(await srv.run('journalctl -u mnedcd-server -q --no-pager -o cat'), /^Answering DNS for mnedc on [\d.]+:53 /m);
  await Promise.all([c, d].map(async (node) => {
    await node.run('apt-get install -y -qq systemd-resolved libnss-resolve polkitd >/dev/null', 10 * MINUTE);
    const journal = node.follow('exec journalctl -u mnedcd-client -f -n 0 -o cat');
    await node.run('systemctl restart mnedcd-client');
    await journal.waitForRaw(/^Names in mnedc resolve through the relay's DNS at [\d.]+ \(systemd-resolved, link mnedc0\)/, 60_000);
  }));
  assert.match(await c.run('resolvectl domain mnedc0'), /~mnedc/);
  const deviceId = (JSON.parse(await d.run('mnedcctl status --json')) as { deviceId: string }).deviceId;
  // Only nss-resolve answers here (-s): the hosts file cannot.
  for (const name of [`${deviceId}.mnedc`, 'd.mnedc']) {
    const found = await c.exec(`getent -s hosts:resolve hosts ${name}`, 20_000);
    assert.match(found.stdout, new RegExp(`^${escape(ips.d)}\\s`), `${name} from c: ${found.stdout}${found.stderr}`);
  }
  const query = await d.run('resolvectl query c.mnedc', 20_000);
  assert.match(query, new RegExp(`c\\.mnedc: ${escape(ips.c)}\\s+-- link: mnedc0`), query);
  // Names outside the domain do not go to the relay (a routing-only domain): it would refuse them.
  assert.equal((await c.exec('getent -s hosts:resolve hosts nothing.example', 20_000)).stdout, '');
  assert.match(await srv.run('mnedcctl stats --json'), /"dns":\{"queries":[1-9]/);
}
