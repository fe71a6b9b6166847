import { existsSync, readFileSync, rmSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import {
  ControlServer, createLogger, EXIT_CONFIG, EXIT_USAGE, loadConfigOrExit, machineDeviceId, parseDaemonArgs, readHostState, reloadConfig,
  serveMetricsOrExit, startupError, SystemdNotifier,
} from '@mnedc/common';
import { hostNetworks } from '@mnedc/protocol';
import { explainTakenName, Tun } from '@mnedc/tun';
import { RelayClient } from './client';
import { CLIENT_LIVE_KEYS, DEFAULT_CONFIG_PATH, parseClientConfig, type ClientConfig } from './config';
import { clientMethods } from './control-api';
import { DiscoveryHandoff, type DiscoveryConfig } from './discovery';
import { HookUserError, withholdCapabilitiesFromChildren } from './hook-runner';
import type { PeerChanges } from './peer-table';
import { checkSecretFile } from './secret-file';
import { loadOrCreateDeviceKey, type Credentials } from './secure';
import { loadClientState, saveClientState, statePath } from './state';
import { avahiProblem, routeGroups } from './multicast';
import { parseHostIpv6 } from './ipv6';
import { linkDnsFor, linkDnsOf } from './resolved';

const PROGRAM = 'mnedcd-client';
/** The longest a start waits for the first lease before the daemon says READY anyway. */
const READY_WAIT_MS = 10_000;
const VERSION: string = (require('../../package.json') as { version: string }).version;

function fatal(message: string, status: number): never {
  startupError(`${PROGRAM}: ${message}`);
  process.exit(status);
}

/** Private addresses peers may use to find a shorter path; never the overlay's own. */
function underlayAddresses(exclude: string): string[] {
  const found: string[] = [];
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (name === exclude) continue;
    for (const a of addresses ?? []) {
      if (a.internal || a.address.startsWith('fe80:')) continue;
      found.push(a.address);
    }
  }
  return found.slice(0, 16);
}

function discoveryConfig(config: ClientConfig): DiscoveryConfig {
  const d = config.discovery;
  return { hookDir: d.hook_dir, hookTimeoutMs: d.hook_timeout_ms, hookUser: d.hook_user, peersFile: d.peers_file, hostsFile: d.hosts_file };
}

/** What a SIGHUP can change on the running client; everything else keeps its running value. */
function applyLive(client: RelayClient, discovery: DiscoveryHandoff, current: ClientConfig, next: ClientConfig): ClientConfig {
  client.setQueueLimit(next.client.send_queue_kib);
  discovery.reconfigure(discoveryConfig(next));
  return { ...current, log: next.log, discovery: next.discovery, client: { ...current.client, send_queue_kib: next.client.send_queue_kib } };
}

/** A /proc file's text, or '' where there is none (a kernel without IPv6). */
function readOrEmpty(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

const AVAHI_CONF = '/etc/avahi/avahi-daemon.conf';
const AVAHI_PID = '/run/avahi-daemon/pid';

/**
 * What keeps this host's avahi-daemon off the overlay, read from its configuration; null when nothing
 * does, or when no avahi-daemon runs (installed and stopped is someone's choice, not a mistake).
 */
function avahiConfProblem(interfaceName: string): string | null {
  if (!existsSync(AVAHI_PID)) return null;
  let conf: string;
  try {
    conf = readFileSync(AVAHI_CONF, 'utf8');
  } catch {
    return null;
  }
  return avahiProblem(conf, interfaceName);
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  const args = parseDaemonArgs(PROGRAM, process.argv.slice(2), DEFAULT_CONFIG_PATH, VERSION);
  let config = loadConfigOrExit(PROGRAM, args.configPath, parseClientConfig);
  const log = createLogger(PROGRAM, config.log.level, args.logFormat);
  // Before any hook or other child: they are to get none of the CAP_NET_ADMIN this daemon keeps for its TUN.
  withholdCapabilitiesFromChildren(log);
  const exposure = checkSecretFile(args.configPath);
  if (exposure) log.warn({ path: args.configPath, mode: exposure.mode, owner: exposure.owner, group: exposure.group }, exposure.message);
  let deviceId = config.client.device_id;
  if (!deviceId) {
    try {
      deviceId = machineDeviceId();
    } catch (err) {
      fatal(`${args.configPath}: [client] device_id: not set, and ${(err as Error).message}`, EXIT_CONFIG);
    }
  }
  // Before the TUN: a hook user this daemon cannot switch to is a configuration error, not a silent
  // fallback to running hooks as the daemon's own user.
  let discovery: DiscoveryHandoff;
  try {
    discovery = new DiscoveryHandoff(discoveryConfig(config), log);
  } catch (err) {
    if (!(err instanceof HookUserError)) throw err;
    fatal(`${args.configPath}: [discovery] hook_user: ${err.message}`, EXIT_USAGE);
  }
  const notifier = new SystemdNotifier(log);
  const stateFile = statePath(config.client.state_dir);
  const { state, problem } = loadClientState(stateFile);
  if (problem) log.warn({ path: stateFile }, `Ignoring unreadable state ${stateFile} (${problem}); the server may assign a new address`);

  let tun: Tun;
  try {
    tun = Tun.open(config.client.interface, { offload: config.client.offload === 'on' });
  } catch (err) {
    const taken = explainTakenName(err, config.client.interface, `[client] interface in ${args.configPath}`);
    log.fatal({ err }, `Cannot create TUN interface ${config.client.interface}: ${taken ?? (err as Error).message}`);
    process.exit(1);
  }
  // IPv6 off until a WELCOME gives an address (ipv6.ts); what IPv6 still comes (e.g. where this is refused) is dropped and counted.
  const ipv6 = tun.disableIpv6();
  if (ipv6) log.warn({ interface: tun.name }, `IPv6 stays on for ${tun.name} (${ipv6}); its IPv6 packets are dropped here and counted as dropsIpv6`);
  let credentials: Credentials;
  try {
    const { key, created } = loadOrCreateDeviceKey(config.client.state_dir);
    if (created) log.info({ path: config.client.state_dir }, `Created this device's key in ${config.client.state_dir}/device.key`);
    credentials = { join: config.client.join, deviceKey: key };
  } catch (err) {
    fatal(`cannot load or create the device key: ${(err as Error).message}`, EXIT_CONFIG);
  }
  let routesProblem = '';
  const save = () => {
    try {
      saveClientState(stateFile, state);
    } catch (err) {
      log.error({ err, path: stateFile }, `Cannot save state to ${stateFile}: ${(err as Error).message}`);
    }
  };
  const client = new RelayClient({
    config,
    log,
    deviceId,
    hostname: hostname(),
    underlay: () => underlayAddresses(tun.name),
    device: tun,
    credentials,
    ...(state.lastIp ? { previousIp: state.lastIp } : {}),
    localNetworks: () => {
      const host = readHostState();
      if (host.routesProblem && host.routesProblem !== routesProblem) {
        log.warn(`Checking leases against this device's addresses only: ${host.routesProblem}`);
      }
      routesProblem = host.routesProblem;
      return hostNetworks(host);
    },
    hostIpv6: () => parseHostIpv6(readOrEmpty('/proc/net/if_inet6'), readOrEmpty('/proc/net/ipv6_route')),
    ...(state.relays ? { learnedRelays: state.relays } : {}),
    onLease: (welcome) => {
      // The files list this device too, so they change with its address even when no peer did.
      discovery.update({ deviceId, ip: welcome.ip, hostname: hostname() }, client.peers.list(), { up: [], down: [] });
      state.lastIp = welcome.ip;
      state.server = client.server;
      save();
    },
    onRelays: (relays) => {
      state.relays = relays;
      save();
    },
  });
  let avahiChecked = false;
  client.on('state', (next: string) => {
    if (next !== 'connected' || !client.lease?.multicast) return;
    const groups = client.lease.multicast;
    if (config.client.multicast_routes === 'yes') routeGroups(tun, groups, log);
    if (!avahiChecked && groups.includes('mdns')) {
      avahiChecked = true;
      const problem = avahiConfProblem(tun.name);
      if (problem) log.warn({ interface: tun.name }, `mDNS crosses the overlay, but ${problem}`);
    }
  });
  const self = () => (client.lease ? { deviceId, ip: client.lease.ip, hostname: hostname() } : null);
  client.on('peers', (changes: PeerChanges) => discovery.update(self(), client.peers.list(), changes));
  // READY once the leased address is on the TUN, so units ordered after this one find it; but at the latest
  // READY_WAIT_MS after start, with STATUS saying it is not connected yet. Waiting for the relay without a
  // bound would hang boot, `systemctl start` and apt's postinst on a network problem until the start
  // timeout, then restart a client that was only waiting. Units that need the overlay order themselves after
  // mnedc-online.target, which mnedcctl wait-online holds back until the address is there.
  const readyBound = setTimeout(() => notifier.ready(client.statusLine), READY_WAIT_MS);
  const linkDns = linkDnsFor(config.client.dns, () => tun.name, log);
  client.on('state', (next: string) => {
    if (next === 'connected' && client.lease) void linkDns?.apply(linkDnsOf(client.lease));
    if (next === 'connected') {
      clearTimeout(readyBound);
      notifier.ready(client.statusLine);
    } else {
      notifier.status(client.statusLine);
    }
  });

  let control: ControlServer | null = null;
  const methods = clientMethods(client, { version: VERSION, deviceId, interfaceName: tun.name, startedAt });
  if (config.control.socket) {
    try {
      control = await ControlServer.listen(config.control.socket, methods);
    } catch (err) {
      log.fatal({ err }, `Cannot serve ${config.control.socket}: ${(err as Error).message}`);
      process.exit(1);
    }
  }
  const metrics = await serveMetricsOrExit(args.configPath, config.metrics.listen, 'client', methods, log);
  log.info({ deviceId, server: client.server, interface: tun.name, offloads: tun.offloads },
    `Device ${deviceId} joining ${client.server} on ${tun.name}` + (tun.vnetHeader ? ` (offloads 0x${tun.offloads.toString(16)})` : ' (offloads off)'));
  notifier.status(client.statusLine);
  notifier.startWatchdog();
  client.start();

  process.on('SIGHUP', () => {
    notifier.reloading();
    config = reloadConfig(args.configPath, config, parseClientConfig, CLIENT_LIVE_KEYS, log, (next) => applyLive(client, discovery, config, next));
    notifier.reloaded();
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    clearTimeout(readyBound);
    notifier.stopping();
    log.info({ signal }, `Received ${signal}: leaving the overlay`);
    // Reverted first, while the TUN still exists for resolved to find.
    Promise.resolve(linkDns?.revert()).then(() => Promise.all([client.stop(), control?.close(), metrics?.close(), discovery.close()]))
      // The overlay leaves with this daemon, and so do its names (a sync-hosts --watch still running takes
      // them out of /etc/hosts); a restart writes the file again at its first lease.
      .then(() => { if (config.discovery.hosts_file) rmSync(config.discovery.hosts_file, { force: true }); })
      .then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
