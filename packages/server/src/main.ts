import { readFileSync } from 'node:fs';
import {
  ControlServer, createLogger, EXIT_CONFIG, loadConfigOrExit, machineDeviceId, parseDaemonArgs, readHostState, reloadConfig,
  serveMetricsOrExit, SystemdNotifier, type Logger,
} from '@mnedc/common';
import { findOverlaps, formatIpv6, hostNetworks, intToIpv4, ipv4ToInt, linkLocalAddress, OVERLAY_PREFIX6 } from '@mnedc/protocol';
import { explainTakenName, Tun } from '@mnedc/tun';
import { DEFAULT_CONFIG_PATH, parseServerConfig, SERVER_LIVE_KEYS, type ServerConfig } from './config';
import { serverMethods } from './control-api';
import { LeaseStateError } from './stores/lease-store';
import { ClusterConfigError } from './cluster/cluster';
import { endorseRelay } from './stores/endorsement-file';
import { IdentityError } from './stores/identity';
import { limitsFromConfig, RelayServer } from './server';

const PROGRAM = 'mnedcd-server';
const VERSION: string = (require('../../package.json') as { version: string }).version;

function serverDeviceId(): string {
  try {
    return `server-${machineDeviceId().slice(0, 12)}`;
  } catch {
    return 'server';
  }
}

function statusLine(server: RelayServer): string {
  const clients = server.connected().length;
  return `${clients} client${clients === 1 ? '' : 's'}, ${server.pool.size}/${server.pool.capacity} leases`;
}

/**
 * The subnet's connected route would shadow any host network it overlaps (a LAN address on the TUN can
 * cut the host off its gateway), so the relay refuses to start unless [server] allow_overlap accepts it.
 * Without a TUN the relay adds nothing to the host's routing, so there is nothing to check.
 */
function checkSubnetFree(config: ServerConfig, configPath: string, log: Logger): void {
  const { subnet, interface: name, allow_overlap: allowed } = config.server;
  if (!name) return;
  const state = readHostState();
  if (state.routesProblem) log.warn(`Checking [server] subnet against this host's addresses only: ${state.routesProblem}`);
  const report = findOverlaps(subnet, hostNetworks(state), { ownInterface: name, allowed });
  for (const overlap of report.allowed) log.warn(`Starting although the ${overlap} ([server] allow_overlap)`);
  if (report.refused.length === 0) return;
  log.fatal({ subnet: `${intToIpv4(subnet.network)}/${subnet.prefix}` },
    `${configPath}: [server] subnet: refusing to start: the ${report.refused.join('; the ')}. ` +
    'Choose a subnet this host does not use, or accept these networks in [server] allow_overlap');
  process.exit(EXIT_CONFIG);
}

/** What a SIGHUP can change on the running relay; everything else keeps its running value. */
function applyLive(server: RelayServer, current: ServerConfig, next: ServerConfig): ServerConfig {
  server.setLimits(limitsFromConfig(next));
  return {
    ...current,
    log: next.log,
    limits: next.limits,
    server: { ...current.server, send_queue_kib: next.server.send_queue_kib, lease_lifetime_days: next.server.lease_lifetime_days, keepalive_ms: next.server.keepalive_ms, dead_after_ms: next.server.dead_after_ms,
      discovery_full_max: next.server.discovery_full_max },
  };
}

async function main(): Promise<void> {
  const args = parseDaemonArgs(PROGRAM, process.argv.slice(2), DEFAULT_CONFIG_PATH, VERSION, {
    allowPrintJoin: true,
    allowEndorse: true,
    extraUsage: '  --print-join         print the join string for clients (server identity + join secret) and exit\n' +
      '  --endorse FILE --relay-id ID [--days N]\n' +
      '                       on the network\'s first relay: print the endorsement (for the new relay\'s\n' +
      '                       state_dir/network.endorsement) of the relay whose server.crt is FILE, valid\n' +
      '                       N days (default 365), and exit\n',
  });
  let config = loadConfigOrExit(PROGRAM, args.configPath, parseServerConfig);
  if (args.endorse) {
    const { certificateFile, relayId, days } = args.endorse;
    try {
      process.stdout.write(endorseRelay(config.server.state_dir, readFileSync(certificateFile, 'utf8'), relayId, days, Date.now()));
      process.exit(0);
    } catch (err) {
      process.stderr.write(`${PROGRAM}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? `cannot read ${certificateFile}` : (err as Error).message}\n`);
      process.exit(EXIT_CONFIG);
    }
  }
  // With --print-join stdout carries only the join string, so a script can capture it.
  const log = createLogger(PROGRAM, config.log.level, args.logFormat, args.printJoin ? 2 : 1);
  const notifier = new SystemdNotifier(log);
  let server: RelayServer;
  try {
    server = new RelayServer({
      config,
      log,
      serverDeviceId: serverDeviceId(),
      openDevice: (name, address, prefix, mtu, ipv6Address) => {
        // Offloads: the server's own traffic moves in super-packets like any offloading client's.
        let tun: Tun;
        try {
          tun = Tun.open(name, { offload: true });
        } catch (err) {
          const taken = explainTakenName(err, name, `[server] interface in ${args.configPath}`);
          throw taken ? new Error(taken) : err;
        }
        // IPv6 only as the overlay gives it (no address of the kernel's making), or none at all: no router
        // solicitations or MLD of the kernel's own into the overlay.
        const ipv6 = ipv6Address ? tun.enableIpv6() : null;
        if (ipv6) log.warn({ interface: tun.name }, `No IPv6 address on ${tun.name} (${ipv6}); devices still reach each other over IPv6`);
        const on = ipv6Address !== undefined && ipv6 === null;
        if (!on) {
          const off = tun.disableIpv6();
          if (off) log.warn({ interface: tun.name }, `IPv6 stays on for ${tun.name} (${off}); the relay drops its IPv6 and counts it as drops.ipv6`);
        }
        tun.configure({ address, prefix, mtu, up: true, ...(on ? { address6: ipv6Address, prefix6: OVERLAY_PREFIX6, linkLocal6: formatIpv6(linkLocalAddress(ipv4ToInt(address))) } : {}) });
        log.debug({ interface: tun.name, offloads: tun.offloads }, `TUN ${tun.name} offloads 0x${tun.offloads.toString(16)}`);
        return tun;
      },
    });
  } catch (err) {
    if (!(err instanceof LeaseStateError) && !(err instanceof IdentityError) && !(err instanceof ClusterConfigError)) throw err;
    log.fatal(err.message);
    process.exit(EXIT_CONFIG);
  }
  if (args.printJoin) {
    // The string carries the join secret: it goes to stdout for the operator, never to the log.
    process.stdout.write(`${server.joinString}\n`);
    process.exit(0);
  }
  checkSubnetFree(config, args.configPath, log);
  let control: ControlServer | null = null;
  const methods = serverMethods(server, () => config, VERSION);
  try {
    await server.start();
    if (config.control.socket) {
      control = await ControlServer.listen(config.control.socket, methods);
      log.info({ socket: config.control.socket }, `mnedcctl can connect to ${config.control.socket}`);
    }
  } catch (err) {
    log.fatal({ err }, `Cannot start: ${(err as Error).message}`);
    process.exit(1);
  }
  const metrics = await serveMetricsOrExit(args.configPath, config.metrics.listen, 'server', methods, log);
  notifier.ready(statusLine(server));
  notifier.startWatchdog();
  let statusTimer: NodeJS.Timeout | null = null;
  server.on('sessions', () => {
    // A thousand joins in a burst are one STATUS update, not a thousand datagrams.
    statusTimer ??= setTimeout(() => {
      statusTimer = null;
      notifier.status(statusLine(server));
    }, 250);
  });

  process.on('SIGHUP', () => {
    notifier.reloading();
    config = reloadConfig(args.configPath, config, parseServerConfig, SERVER_LIVE_KEYS, log, (next) => applyLive(server, config, next));
    notifier.reloaded();
    notifier.status(statusLine(server));
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    notifier.stopping();
    log.info({ signal }, `Received ${signal}: telling devices and saving leases`);
    Promise.all([server.stop(), control?.close(), metrics?.close()]).then(() => process.exit(0), (err: Error) => {
      log.error({ err }, `Error while stopping: ${err.message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
