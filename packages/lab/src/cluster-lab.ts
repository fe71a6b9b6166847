/**
 * The lab for a cluster of relays (issue 16), in network namespaces of its own (prefix `mc` + 4 hex + `-`):
 *
 *   hub  — the main router: bridge `lan` 192.168.0.1/24, the network every relay and sub-router is on
 *   rel1..relN  192.168.0.11.. — a relay and an etcd member each
 *   dev1..dev4  192.168.0.21.. — devices on the main LAN
 *   sub1 (192.168.0.2) NATs 192.168.1.0/24: dev5..dev8;  sub2 (192.168.0.3) NATs 192.168.2.0/24: dev9..dev12
 *
 * Devices behind a sub-router reach the main LAN (through its NAT), never the other way round, and the two
 * sub-LANs cannot reach each other: only the relays connect them. Everything is torn down by destroy(),
 * and on process exit or a fatal signal if a test did not get that far.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ExitCleanup } from './exit-cleanup';

export const CLUSTER_LAN = '192.168.0';
export const relayAddress = (i: number): string => `${CLUSTER_LAN}.${11 + i}`;

export interface ClusterDevice {
  name: string;
  /** Its underlay address. */
  address: string;
  /** The router it is behind: hub (main LAN), sub1 or sub2. */
  behind: 'hub' | 'sub1' | 'sub2';
}

const live = new ExitCleanup<ClusterLab>((lab) => lab.destroy());

function ip(args: string[]): void {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr.trim()}`);
}

const NAT_RULES = `flush ruleset
table ip mclab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    iifname "lan" oifname "wan" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
`;

export class ClusterLab {
  readonly prefix = `mc${randomBytes(2).toString('hex')}-`;
  readonly relays: string[];
  readonly devices: ClusterDevice[] = [];
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(relayCount: number, devicesPerLan: number) {
    this.relays = Array.from({ length: relayCount }, (_, i) => `rel${i + 1}`);
    let n = 0;
    for (const [behind, lan] of [['hub', 0], ['sub1', 1], ['sub2', 2]] as const) {
      for (let i = 0; i < devicesPerLan; i++) this.devices.push({ name: `dev${++n}`, address: `192.168.${lan}.${21 + i}`, behind });
    }
  }

  /** Builds the lab; on any failure what was built is removed again. */
  static create(options: { relays?: number; devicesPerLan?: number } = {}): ClusterLab {
    const lab = new ClusterLab(options.relays ?? 3, options.devicesPerLan ?? 4);
    live.add(lab);
    try {
      lab.build();
    } catch (err) {
      lab.destroy();
      throw err;
    }
    return lab;
  }

  ns(node: string): string {
    return `${this.prefix}${node}`;
  }

  private addNamespace(node: string, forwarding: boolean): void {
    ip(['netns', 'add', this.ns(node)]);
    this.namespaces.push(node);
    ip(['-n', this.ns(node), 'link', 'set', 'lo', 'up']);
    const sysctl = spawnSync('ip', ['netns', 'exec', this.ns(node), 'sysctl', '-q', '-w', `net.ipv4.ip_forward=${forwarding ? 1 : 0}`,
      'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    if (sysctl.status !== 0) throw new Error(`sysctl in ${node}: ${sysctl.stderr}`);
  }

  /** `child`'s `ifname` ↔ a port of `router`'s bridge `lan`. */
  private wire(child: string, ifname: string, router: string): void {
    const port = `v-${child}`;
    ip(['link', 'add', ifname, 'netns', this.ns(child), 'type', 'veth', 'peer', 'name', port, 'netns', this.ns(router)]);
    ip(['-n', this.ns(router), 'link', 'set', port, 'master', 'lan', 'up']);
    ip(['-n', this.ns(child), 'link', 'set', ifname, 'up']);
  }

  private build(): void {
    for (const router of ['hub', 'sub1', 'sub2']) this.addNamespace(router, true);
    for (const [router, lan] of [['hub', 0], ['sub1', 1], ['sub2', 2]] as const) {
      ip(['-n', this.ns(router), 'link', 'add', 'lan', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
      ip(['-n', this.ns(router), 'link', 'set', 'lan', 'up']);
      ip(['-n', this.ns(router), 'addr', 'add', `192.168.${lan}.1/24`, 'dev', 'lan']);
    }
    for (const [i, sub] of ['sub1', 'sub2'].entries()) {
      this.wire(sub, 'wan', 'hub');
      ip(['-n', this.ns(sub), 'addr', 'add', `${CLUSTER_LAN}.${2 + i}/24`, 'dev', 'wan']);
      ip(['-n', this.ns(sub), 'route', 'add', 'default', 'via', `${CLUSTER_LAN}.1`]);
      const nft = spawnSync('ip', ['netns', 'exec', this.ns(sub), 'nft', '-f', '-'], { input: NAT_RULES, encoding: 'utf8' });
      if (nft.status !== 0) throw new Error(`nft in ${sub}: ${nft.stderr}`);
    }
    const hosts = [...this.relays.map((name, i) => ({ name, address: relayAddress(i), behind: 'hub' as const })), ...this.devices];
    for (const host of hosts) {
      this.addNamespace(host.name, false);
      this.wire(host.name, 'eth0', host.behind);
      const lan = host.address.split('.').slice(0, 3).join('.');
      ip(['-n', this.ns(host.name), 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
      ip(['-n', this.ns(host.name), 'route', 'add', 'default', 'via', `${lan}.1`]);
    }
  }

  /** A process inside a node's namespace, killed (with its process group) by destroy(). */
  spawn(node: string, argv: string[], options: { pipe?: boolean; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns(node), ...argv], {
      stdio: options.pipe ? ['ignore', 'pipe', 'pipe'] : 'ignore', detached: true, env: options.env ?? process.env,
    });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs a command in a node's namespace to its end (killed after timeoutMs). */
  exec(node: string, argv: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', this.ns(node), ...argv], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Kills everything started in the lab and deletes its namespaces; safe to call twice. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const child of this.children) {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    for (const node of [...this.namespaces].reverse()) {
      // Whatever still runs in it (a daemon's own children) goes with it.
      const pids = spawnSync('ip', ['netns', 'pids', this.ns(node)], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      spawnSync('ip', ['netns', 'del', this.ns(node)]);
    }
  }
}
