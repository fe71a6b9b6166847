/**
 * `npm run test:system`, issue 16: a cluster of three relays as an operator builds it from the README —
 * Debian 12 containers booted in the lab, each relay with Debian's etcd-server as one member of a 3-member
 * etcd, mnedcd-server from the apt repository, the second and third relay endorsed with the first's key
 * (mnedcd-server --endorse) — and three clients behind the lab's NATs, each preferring another relay.
 * Every client reaches every other; a relay killed with SIGKILL costs its device a move to another relay
 * with the same address, while a real ssh session and iperf3 cross it; systemd restarts the relay, which
 * rejoins the mesh and takes its device back.
 *
 * Runs after apt-install.test.ts, whose repository (dist/apt) it installs from (built here if missing).
 */
import { strict as assert } from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Container, Lab, REPO_ROOT, runCommand, UNDERLAY, type Daemon, type LabNodeName } from '@mnedc/lab';
import { withJournals } from './diagnostics';

const skip = process.getuid?.() !== 0 ? 'needs root (debootstrap, systemd-nspawn, network namespaces)' : false;
const REPO = path.join(REPO_ROOT, 'dist/apt');
const RUNTIME_REPO = path.join(REPO_ROOT, '.cache/debian-runtime');
const ROOTFS = path.join(REPO_ROOT, '.cache/rootfs-bookworm');
const MINUTE = 60_000;
const PORT = 3334;

/** The relays: srv and a on the main LAN, and r3, the router d sits behind (its WAN side is on the main LAN). */
const RELAYS = ['srv', 'a', 'r3'] as const;
const CLIENTS = ['b', 'c', 'd'] as const;
type Relay = (typeof RELAYS)[number];
type Client = (typeof CLIENTS)[number];
const address = (relay: Relay): string => (relay === 'r3' ? '192.168.0.3' : UNDERLAY[relay]);
/** Each client prefers another relay: b → a, c → srv, d → r3. */
const PREFERRED: Record<Client, Relay> = { b: 'a', c: 'srv', d: 'r3' };

interface ClientStatus { state: string; ip: string; server: string; relays?: string[] }

describe('a cluster of three relays on Debian etcd, installed with apt in containers, clients behind the NATs', { skip }, () => {
  let lab: Lab | undefined;
  const box = {} as Record<Relay | Client, Container>;
  const ips = {} as Record<Client, string>;
  let broken = '';

  function step(name: string, timeoutMs: number, body: () => Promise<void>): void {
    it(name, { timeout: timeoutMs }, async (t) => {
      if (broken) return t.skip(`it builds on the failed step "${broken}"`);
      try {
        await withJournals(box, 'journalctl -u "mnedc*" -u etcd -n 30 --no-pager -o short-monotonic', body);
      } catch (e) {
        broken = name;
        throw e;
      }
    });
  }

  const status = async (node: Client): Promise<ClientStatus> => JSON.parse(await box[node].run('mnedcctl status --json')) as ClientStatus;

  after(async () => {
    await lab?.destroy();
  });

  step('boots six Debian 12 containers: relays on srv, a and r3 (main LAN), clients on b, c and d behind the NATs', 25 * MINUTE, async () => {
    if (!fs.existsSync(path.join(REPO, 'Packages'))) {
      const built = await runCommand('bash', ['-c', `cd ${REPO_ROOT} && bash scripts/build-deb.sh 2>&1`], 30 * MINUTE);
      assert.equal(built.code, 0, `npm run deb failed:\n${built.stdout.slice(-4000)}`);
    }
    const rootfs = await runCommand('bash', [path.join(REPO_ROOT, 'scripts/system-rootfs.sh')], 15 * MINUTE);
    assert.equal(rootfs.code, 0, `system-rootfs.sh failed:\n${rootfs.stdout}${rootfs.stderr}`);
    lab = await Lab.create();
    const boot = (node: LabNodeName) => Container.boot(lab!, node, {
      rootfs: ROOTFS,
      bindReadOnly: { [REPO]: '/srv/mnedc-apt', [RUNTIME_REPO]: '/srv/debian-runtime' },
      files: {
        '/etc/apt/sources.list': 'deb [trusted=yes] file:/srv/debian-runtime ./\n',
        '/etc/apt/sources.list.d/local.list': 'deb [trusted=yes] file:/srv/mnedc-apt ./\n',
        '/etc/tmpfiles.d/tun-mode.conf': 'z /dev/net/tun 0666 - - -\n',
      },
    });
    const booted = await Promise.all([...RELAYS, ...CLIENTS].map((node) => boot(node)));
    [...RELAYS, ...CLIENTS].forEach((node, i) => { box[node] = booted[i]!; });
  });

  step('apt installs etcd-server and mnedcd-server on the relays; the three etcd members form one cluster (the README\'s /etc/default/etcd)', 20 * MINUTE, async () => {
    const initial = RELAYS.map((r) => `etcd-${r}=http://${address(r)}:2380`).join(',');
    await Promise.all(RELAYS.map(async (relay) => {
      const me = address(relay);
      await box[relay].run('apt-get update -qq && apt-get install -y -qq etcd-server etcd-client mnedcd-server >/dev/null', 10 * MINUTE);
      // Debian's etcd starts as a member of its own; this one joins the three instead (a fresh data directory).
      await box[relay].run('systemctl stop etcd && rm -rf /var/lib/etcd/*');
      await box[relay].run(`cat > /etc/default/etcd <<'EOF'
ETCD_NAME=etcd-${relay}
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=http://${me}:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://${me}:2380
ETCD_LISTEN_CLIENT_URLS=http://${me}:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://${me}:2379
ETCD_INITIAL_CLUSTER=${initial}
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_AUTO_COMPACTION_MODE=revision
ETCD_AUTO_COMPACTION_RETENTION=1000
ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL=10s
EOF
systemctl start --no-block etcd`);
    }));
    for (const relay of RELAYS) {
      await box[relay].run('for i in $(seq 60); do etcdctl endpoint health >/dev/null 2>&1 && exit 0; sleep 1; done; etcdctl endpoint health', 2 * MINUTE);
    }
    const members = await box.srv.run('etcdctl member list');
    assert.equal(members.trim().split('\n').length, 3, members);
  });

  step('the relays join one network: srv\'s key is the network\'s, a and r3 are endorsed with it; their mesh links come up', 10 * MINUTE, async () => {
    // The conffile's own [cluster] keys, set as an operator would.
    const cluster = (relay: Relay) => `sed -i -e 's|^;etcd =.*|etcd = ${RELAYS.map((r) => `http://${address(r)}:2379`).join(', ')}|' ` +
      `-e 's|^;network =.*|network = systest|' -e 's|^;advertise =.*|advertise = ${address(relay)}:${PORT}|' /etc/mnedc/server.ini`;
    await box.srv.run(`${cluster('srv')} && systemctl enable --now mnedcd-server`);
    const join = (await box.srv.run('mnedcctl join')).trim();
    const secret = await box.srv.run('cat /var/lib/mnedc/join.secret');
    for (const relay of ['a', 'r3'] as const) {
      // As the README says: start it once for its certificate, endorse that on the first relay, put the endorsement in place.
      await box[relay].run('mnedcd-server --print-join >/dev/null; systemctl stop mnedcd-server || true');
      const certificate = await box[relay].run('cat /var/lib/mnedc/server.crt');
      await box.srv.run(`cat > /tmp/${relay}.crt <<'EOF'\n${certificate}EOF`);
      const endorsement = await box.srv.run(`mnedcd-server --endorse /tmp/${relay}.crt --relay-id relay-${relay} --days 30`);
      await box[relay].run(`cat > /var/lib/mnedc/network.endorsement <<'EOF'\n${endorsement}EOF
cat > /var/lib/mnedc/join.secret <<'EOF'\n${secret}EOF
chown mnedc:mnedc /var/lib/mnedc/* && chmod 600 /var/lib/mnedc/join.secret
${cluster(relay)} && systemctl enable --now mnedcd-server`);
      assert.equal((await box[relay].run('mnedcctl join')).trim(), join, `${relay} gives the network's join string`);
    }
    for (const relay of RELAYS) {
      await box[relay].run(`for i in $(seq 60); do [ "$(mnedcctl cluster --json | grep -Eo '"link": *"up"' | wc -l)" = 2 ] && exit 0; sleep 1; done; mnedcctl cluster; exit 1`, 2 * MINUTE);
    }
    process.stdout.write(`# ${(await box.srv.run('mnedcctl cluster')).replace(/\n/g, '\n# ')}\n`);
  });

  step('apt installs the clients (and openssh-server, iperf3); each prefers another relay; every client pings every other', 20 * MINUTE, async () => {
    const join = (await box.srv.run('mnedcctl join')).trim();
    await Promise.all(CLIENTS.map(async (node) => {
      const order = [PREFERRED[node], ...RELAYS.filter((r) => r !== PREFERRED[node])].map((r) => `${address(r)}:${PORT}`).join(', ');
      await box[node].run('apt-get update -qq && apt-get install -y -qq mnedcd-client openssh-server iperf3 >/dev/null', 10 * MINUTE);
      await box[node].run(`sed -i -e 's|^;server =.*|server = ${order}|' -e 's|^;join =.*|join = ${join}|' /etc/mnedc/client.ini && systemctl enable --now mnedcd-client`);
      await box[node].run('for i in $(seq 30); do mnedcctl status --json | grep -Eq \'"state": *"connected"\' && exit 0; sleep 1; done; mnedcctl status; exit 1', MINUTE);
      const s = await status(node);
      assert.equal(s.server, `${address(PREFERRED[node])}:${PORT}`, `${node} on its preferred relay`);
      assert.equal(s.relays?.length, 3, `${node} knows the three relays`);
      ips[node] = s.ip;
    }));
    for (const from of CLIENTS) {
      for (const to of CLIENTS) {
        if (from !== to) await box[from].run(`ping -c 2 -i 0.2 -W 2 ${ips[to]}`, 30_000);
      }
    }
  });

  step('kill -9 of c\'s relay under an ssh session d → c and iperf3 b → c: c is on another relay with its address within 5 s, both go on; systemd restarts the relay, it rejoins the mesh and takes c back', 15 * MINUTE, async () => {
    await box.d.run('ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519');
    const key = await box.d.run('cat /root/.ssh/id_ed25519.pub');
    await box.c.run(`mkdir -p /root/.ssh && echo '${key.trim()}' >> /root/.ssh/authorized_keys && chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys`);
    // An interactive session: a line every 200 ms from c over one ssh connection.
    const ssh: Daemon = box.d.follow(`exec ssh -T -o StrictHostKeyChecking=no -o BatchMode=yes root@${ips.c} 'while :; do echo tick; sleep 0.2; done'`);
    await ssh.waitForRaw(/^tick$/, 30_000);
    const iperfServer = box.c.follow('exec iperf3 -s -1 --forceflush');
    await iperfServer.waitForRaw(/Server listening/, 30_000);
    const iperf = box.b.run(`iperf3 -c ${ips.c} -t 12 -i 1 -J --connect-timeout 3000`, 2 * MINUTE);
    await box.b.run('sleep 3');
    const before = await box.c.run('mnedcctl status --json');
    assert.equal((JSON.parse(before) as ClientStatus).state, 'connected');
    const journal = box.c.follow('exec journalctl -u mnedcd-client -f -n 0 -o cat');
    await box.c.run('sleep 1');
    const killedAt = Date.now();
    // kill -9 on the daemon itself (systemctl kill also signals the cgroup, which this host's cgroup v1 refuses in a container).
    await box.srv.run('kill -KILL "$(systemctl show -p MainPID --value mnedcd-server)"');
    await journal.waitForRaw(/^Connected to /, 10_000);
    const moved = Date.now() - killedAt;
    const after = await status('c');
    assert.equal(after.ip, ips.c, 'c keeps its address');
    assert.notEqual(after.server, `${address('srv')}:${PORT}`, 'c is on another relay');
    assert.ok(moved < 5_000, `c on ${after.server} ${moved} ms after the kill`);
    // Five more lines on the same connection: the session went on through the move.
    const ticks = ssh.raw.length;
    const deadline = Date.now() + 10_000;
    while (ssh.raw.length < ticks + 5 && ssh.exited === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(ssh.raw.length >= ticks + 5 && ssh.exited === null, `the ssh session goes on: ${ssh.tail()}`);
    const report = JSON.parse(await iperf) as { intervals: Array<{ sum: { start: number; bits_per_second: number } }> };
    const rates = report.intervals.map((i) => Math.round(i.sum.bits_per_second / 1e6));
    process.stdout.write(`# c moved to ${after.server} ${moved} ms after the kill; iperf3 b → c per second: ${rates.join(' ')} Mbit/s\n`);
    assert.ok(report.intervals.filter((i) => i.sum.start >= 8).every((i) => i.sum.bits_per_second > 1e6), `iperf3 resumed: ${rates.join(' ')}`);

    // systemd brings the relay back (Restart=on-failure); it links to the others and takes c when c restarts.
    await box.srv.run(`for i in $(seq 60); do [ "$(mnedcctl cluster --json 2>/dev/null | grep -Eo '"link": *"up"' | wc -l)" = 2 ] && exit 0; sleep 1; done; mnedcctl cluster; exit 1`, 2 * MINUTE);
    await box.c.run('systemctl restart mnedcd-client');
    await box.c.run(`for i in $(seq 30); do mnedcctl status --json | grep -Eq '"server": *"${address('srv')}:${PORT}"' && mnedcctl status --json | grep -Eq '"state": *"connected"' && exit 0; sleep 1; done; mnedcctl status; exit 1`, MINUTE);
    assert.equal((await status('c')).ip, ips.c);
    await box.b.run(`ping -c 2 -i 0.2 -W 2 ${ips.c}`, 30_000);
    ssh.child.kill();
  });
});
