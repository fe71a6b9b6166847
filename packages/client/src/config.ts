import { ConfigError, key, LOG_LEVELS, parseConfig, parseHostPort, parsers, type ConfigOf, type HostPort } from '@mnedc/common';
import { DISCOVERY_REQUESTS, isValidDeviceId, parseJoin, parseSubnetList } from '@mnedc/protocol';
import { isUserName } from './hook-runner';

export const DEFAULT_CONFIG_PATH = '/etc/mnedc/client.ini';

function deviceId(text: string): string {
  if (text !== '' && !isValidDeviceId(text)) {
    throw new Error(`${JSON.stringify(text)} is not a device ID (1..128 of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit)`);
  }
  return text;
}

/** Relays a device may be told to try, configured: more than a cluster has relays to spare. */
const MAX_SERVERS = 16;

/** One relay or several (a cluster), comma-separated host:port; the first is the preferred one. */
function serverList(text: string): HostPort[] {
  const entries = text.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (entries.length === 0) throw new Error('names no relay (host:port, or several separated by commas)');
  if (entries.length > MAX_SERVERS) throw new Error(`names ${entries.length} relays; at most ${MAX_SERVERS}`);
  const relays: HostPort[] = [];
  for (const entry of entries) {
    const relay = parseHostPort(entry);
    if (relays.some((r) => r.host === relay.host && r.port === relay.port)) throw new Error(`names ${entry} twice`);
    relays.push(relay);
  }
  return relays;
}

/** Whether the user exists and the daemon may switch to it is checked at start (hook-runner.ts). */
function hookUser(text: string): string {
  if (text !== '' && !isUserName(text)) throw new Error(`${JSON.stringify(text)} is not a user name or number`);
  return text;
}

export const clientSchema = {
  client: {
    /**
     * Required: there is no sensible default for where the relay is. Several (a cluster's relays),
     * comma-separated: the first is preferred, the others are where the device goes when it is lost.
     */
    server: key(serverList),
    /** Required: the server's fingerprint and join secret, from mnedcd-server --print-join. */
    /** parseJoin's messages never echo the value: it is a secret. */
    join: key(parseJoin),
    device_id: key(deviceId, ''),
    interface: key(parsers.interfaceName, 'mnedc0'),
    state_dir: key(parsers.absolutePath, '/var/lib/mnedc'),
    send_queue_kib: key(parsers.integer(16, 65_536), '1024'),
    /** TUN offloads (virtio-net header, TSO/USO): 64 KB super-packets instead of MTU-sized ones. */
    offload: key(parsers.oneOf('on', 'off'), 'on'),
    /** Local networks (CIDRs) a leased subnet may overlap; empty = none (see [server] allow_overlap). */
    allow_overlap: key(parseSubnetList, ''),
    /** auto: point systemd-resolved's DNS for the TUN at the relay when both are there; off: never. */
    dns: key(parsers.oneOf('auto', 'off'), 'auto'),
    /**
     * The peer list pushed by the relay: full (peers file, hosts file, hooks), names (no list: peers by
     * name on the overlay), off (nothing), auto (the relay decides by its size, [server] discovery_full_max).
     */
    discovery: key(parsers.oneOf(...DISCOVERY_REQUESTS), 'auto'),
    /**
     * yes: route the multicast groups the relay carries (mDNS 224.0.0.251, SSDP 239.255.255.250) into the
     * TUN, so applications that pick no interface reach the overlay; no: only those that pick it do.
     */
    multicast_routes: key(parsers.oneOf('yes', 'no'), 'yes'),
  },
  control: {
    /** JSON-RPC for mnedcctl; empty disables it. */
    socket: key(parsers.optionalPath, '/run/mnedc/client.sock'),
  },
  metrics: {
    /** Prometheus metrics over HTTP (host:port, unauthenticated); empty disables them. */
    listen: key(parsers.optionalListenAddress, ''),
  },
  discovery: {
    /** Executables run on every peer up/down event (run-parts style); empty disables hooks. */
    hook_dir: key(parsers.optionalPath, '/etc/mnedc/peer.d'),
    hook_timeout_ms: key(parsers.integer(100, 3_600_000), '10000'),
    /** Hooks run as this user (its groups too); empty: the daemon's own. Never with the daemon's capabilities. */
    hook_user: key(hookUser, ''),
    /** The current peer list as JSON, rewritten atomically on every change; empty disables it. */
    peers_file: key(parsers.optionalPath, '/run/mnedc/peers.json'),
    /** hosts(5) lines for the peers, for a resolver to include; empty disables it. */
    hosts_file: key(parsers.optionalPath, '/run/mnedc/hosts'),
  },
  log: {
    level: key(parsers.oneOf(...LOG_LEVELS), 'info'),
  },
};

/** Keys a SIGHUP applies to the running client; a change to any other key needs a restart. */
export const CLIENT_LIVE_KEYS = ['[log] level', '[client] send_queue_kib', '[discovery] hook_dir', '[discovery] hook_timeout_ms',
  '[discovery] hook_user', '[discovery] peers_file', '[discovery] hosts_file'];

export type ClientConfig = ConfigOf<typeof clientSchema>;

export function parseClientConfig(text: string, file: string): ClientConfig {
  const config = parseConfig(clientSchema, text, file);
  if (config.client.interface === '') {
    throw new ConfigError(file, 'invalid', 'must name the TUN interface; the client has no use without one', 'client', 'interface');
  }
  return config;
}
