import { ConfigError, key, LOG_LEVELS, parseConfig, parsers, type ConfigOf } from '@mnedc/common';
import { isDnsName, isUnicast, MULTICAST_GROUPS, OVERLAY_PREFIX, parseSubnet, parseSubnetList, type MulticastGroup, type Subnet } from '@mnedc/protocol';
import { isNetworkName } from './cluster/keys';

export const DEFAULT_CONFIG_PATH = '/etc/mnedc/server.ini';

function overlaySubnet(text: string): Subnet {
  const subnet = parseSubnet(text);
  if (subnet.prefix < OVERLAY_PREFIX.min || subnet.prefix > OVERLAY_PREFIX.max) {
    throw new Error(`/${subnet.prefix} is outside /${OVERLAY_PREFIX.min}../${OVERLAY_PREFIX.max} (a /16 holds 65533 devices, a /30 one)`);
  }
  if (!isUnicast(subnet.network)) throw new Error(`${text} is not unicast address space (clients would refuse it)`);
  return subnet;
}

/** etcd client URLs, comma-separated; empty: no cluster (a single relay with its own files). */
function etcdEndpoints(text: string): string[] {
  if (text === '') return [];
  return text.split(',').map((part) => part.trim()).map((url) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`${JSON.stringify(url)} is not a URL like http://10.1.0.5:2379`);
    }
    if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.pathname !== '/' || parsed.search || parsed.username) {
      throw new Error(`${JSON.stringify(url)}: an etcd client URL is http:// or https://, a host and a port, nothing else`);
    }
    return parsed.origin;
  });
}

function networkName(text: string): string {
  if (!isNetworkName(text)) throw new Error(`${JSON.stringify(text)} is not a network name (1-63 of a-z 0-9 -, starting with a letter or digit)`);
  return text;
}

/** The domain the relay answers for: a plain DNS name, compared case-insensitively, so kept lowercase. */
function dnsDomain(text: string): string {
  const domain = text.toLowerCase().replace(/\.$/, '');
  if (!isDnsName(domain)) throw new Error(`${JSON.stringify(text)} is not a DNS name (labels of a-z 0-9 -, at most 63 each, 253 in all)`);
  if (domain === 'arpa' || domain.endsWith('.arpa')) throw new Error(`${JSON.stringify(text)} is infrastructure space (.arpa), not a name for devices`);
  return domain;
}

/** `mdns, ssdp, broadcast` or a part of it; `off` (or empty) carries none. */
function multicastGroups(text: string): MulticastGroup[] {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed === 'off') return [];
  const groups: MulticastGroup[] = [];
  for (const part of trimmed.split(',').map((p) => p.trim())) {
    if (!(MULTICAST_GROUPS as readonly string[]).includes(part)) {
      throw new Error(`${JSON.stringify(part)} is not a group the relay carries (${MULTICAST_GROUPS.join(', ')}, or off)`);
    }
    if (!groups.includes(part as MulticastGroup)) groups.push(part as MulticastGroup);
  }
  return groups;
}

export const serverSchema = {
  server: {
    listen: key(parsers.listenAddress, '0.0.0.0:3334'),
    subnet: key(overlaySubnet, '10.0.0.0/24'),
    interface: key(parsers.interfaceName, 'mnedc0'),
    mtu: key(parsers.integer(576, 65535), '1400'),
    state_dir: key(parsers.absolutePath, '/var/lib/mnedc'),
    // Every device pings each keepalive_ms and the relay answers: ~60–90 µs of relay CPU per exchange, so
    // 2 s cost 10,000 idle devices a third of a core; 5 s keep that near 15% (OpenVPN's sample uses 10 s,
    // WireGuard's persistent keepalive 25 s). A crashed peer's TCP reset is seen at once regardless.
    keepalive_ms: key(parsers.integer(100, 60_000), '5000'),
    dead_after_ms: key(parsers.integer(300, 600_000), '15000'),
    // 2 MiB: with offloads a packet is up to 64 KB, and 512 KiB (8 of them) made relayed TCP lose whole
    // bursts (tens of thousands of retransmits a second); 2 MiB measured none at 2 Gbit/s.
    // At least 128: the data share of the budget must hold a 64 KB super-packet.
    send_queue_kib: key(parsers.integer(128, 65_536), '2048'),
    /** An offline device's address is never given to another device until it has been gone this long. */
    lease_lifetime_days: key(parsers.integer(1, 36_500), '30'),
    /**
     * Host networks (CIDRs) the subnet may overlap; empty = none. A list, not a yes/no: the operator names
     * what they accept losing, and a new collision (another LAN, a VPN route) is still refused.
     */
    allow_overlap: key(parseSubnetList, ''),
    /**
     * Devices asking for discovery = auto get the pushed peer list while the network has at most this
     * many devices, and names (no list) above: the list costs every device every peer.
     */
    discovery_full_max: key(parsers.integer(0, 1 << 24), '1000'),
    /**
     * Link-local multicast and broadcast fanned out to every other device, so unmodified applications
     * find each other across the NATs: mDNS (224.0.0.251), SSDP (239.255.255.250), the subnet's broadcast.
     */
    multicast: key(multicastGroups, MULTICAST_GROUPS.join(', ')),
    /**
     * IPv6 inside the overlay: each device also gets an address in the network's unique local /64
     * (fd.., derived from the network's identity), its IPv4 lease as interface ID.
     */
    ipv6: key(parsers.oneOf('yes', 'no'), 'yes'),
  },
  limits: {
    /** From TCP accept to HELLO, TLS handshake included (slowloris). */
    handshake_timeout_ms: key(parsers.integer(500, 120_000), '10000'),
    max_handshakes: key(parsers.integer(1, 1_000_000), '1024'),
    /** Per underlay source address; behind a NAT that is a whole LAN. */
    max_handshakes_per_source: key(parsers.integer(1, 1_000_000), '64'),
    connections_per_source_per_second: key(parsers.integer(1, 1_000_000), '20'),
    connection_burst_per_source: key(parsers.integer(1, 1_000_000), '64'),
    /** Connected devices at once; 0 = as many as the subnet has addresses. */
    max_clients: key(parsers.integer(0, 1 << 24), '0'),
    /** Devices bound to a key (known to the relay, online or not); 0 = four per address of the subnet. */
    max_devices: key(parsers.integer(0, 1 << 24), '0'),
    /** New device IDs (first joins) per minute, and the burst above that rate; anyone with the join string can mint them. */
    new_devices_per_minute: key(parsers.integer(1, 1_000_000), '60'),
    new_device_burst: key(parsers.integer(1, 1_000_000), '100'),
    /** Joins of one device per minute, and the burst: every join costs a lease lookup and a peer snapshot. */
    device_joins_per_minute: key(parsers.integer(1, 1_000_000), '12'),
    device_join_burst: key(parsers.integer(1, 1_000_000), '12'),
    /**
     * Multicast and broadcast packets per second one device may have fanned out, and the burst above that
     * rate: each costs a copy to every other device. mDNS and SSDP send a few a second at most.
     */
    multicast_per_device_per_second: key(parsers.integer(1, 100_000), '50'),
    multicast_burst: key(parsers.integer(1, 100_000), '100'),
    /**
     * Copies of multicast and broadcast packets the relay makes per second at most, all devices together;
     * each device's share is an equal part, so on a large network each may send less than the rate above.
     * A copy costs about 20 µs of relay CPU when copies are sparse (npm run bench:multicast): 50,000 a
     * second is most of a core at worst.
     */
    multicast_copies_per_second: key(parsers.integer(1, 100_000_000), '50000'),
  },
  dns: {
    /** Answer DNS on the overlay (port 53 of the server's overlay address); needs [server] interface. */
    enabled: key(parsers.oneOf('yes', 'no'), 'yes'),
    domain: key(dnsDomain, 'mnedc'),
  },
  cluster: {
    /** etcd client URLs shared by the relays of one network; empty (the default): a single relay with local files. */
    etcd: key(etcdEndpoints, ''),
    /** The network's name: its state lives under /mnedc/<network>/ in etcd, so one etcd can serve several. */
    network: key(networkName, 'mnedc'),
    /** host:port devices and the other relays reach this relay at; empty: the listen address. */
    advertise: key(parsers.optionalListenAddress, ''),
    /** PEM files: the CA of https:// members, and a client certificate and key for members that ask for one. */
    etcd_ca: key(parsers.optionalPath, ''),
    etcd_cert: key(parsers.optionalPath, ''),
    etcd_key: key(parsers.optionalPath, ''),
    /** An etcd user, and a file holding its password (kept out of this world-readable file). */
    etcd_user: key((text: string) => text, ''),
    etcd_password_file: key(parsers.optionalPath, ''),
  },
  control: {
    /** JSON-RPC for mnedcctl; empty disables it. */
    socket: key(parsers.optionalPath, '/run/mnedc/server.sock'),
  },
  metrics: {
    /** Prometheus metrics over HTTP (host:port, unauthenticated); empty disables them. */
    listen: key(parsers.optionalListenAddress, ''),
  },
  log: {
    level: key(parsers.oneOf(...LOG_LEVELS), 'info'),
  },
};

/** Keys a SIGHUP applies to the running server; a change to any other key needs a restart. */
export const SERVER_LIVE_KEYS = ['[log] level', '[server] send_queue_kib', '[server] lease_lifetime_days', '[server] keepalive_ms', '[server] dead_after_ms',
  '[server] discovery_full_max', '[limits] handshake_timeout_ms', '[limits] max_handshakes', '[limits] max_handshakes_per_source',
  '[limits] connections_per_source_per_second', '[limits] connection_burst_per_source', '[limits] max_clients', '[limits] max_devices',
  '[limits] new_devices_per_minute', '[limits] new_device_burst', '[limits] device_joins_per_minute', '[limits] device_join_burst',
  '[limits] multicast_per_device_per_second', '[limits] multicast_burst', '[limits] multicast_copies_per_second'];

export type ServerConfig = ConfigOf<typeof serverSchema>;

export function parseServerConfig(text: string, file: string): ServerConfig {
  const config = parseConfig(serverSchema, text, file);
  const { keepalive_ms: keepalive, dead_after_ms: deadAfter } = config.server;
  if (deadAfter < 2 * keepalive) {
    throw new ConfigError(file, 'invalid',
      `${deadAfter} must be at least twice keepalive_ms (${keepalive}), or one lost ping kills a session`, 'server', 'dead_after_ms');
  }
  const cluster = config.cluster;
  if ((cluster.etcd_cert === '') !== (cluster.etcd_key === '')) {
    throw new ConfigError(file, 'invalid', 'etcd_cert and etcd_key go together (a client certificate and its key)', 'cluster', cluster.etcd_cert ? 'etcd_key' : 'etcd_cert');
  }
  if ((cluster.etcd_user === '') !== (cluster.etcd_password_file === '')) {
    throw new ConfigError(file, 'invalid', 'etcd_user and etcd_password_file go together', 'cluster', cluster.etcd_user ? 'etcd_password_file' : 'etcd_user');
  }
  return config;
}
