/*
 * Every column and field of mnedcctl's human output, with what it means. The renderers take their labels
 * from here, `<command> --help` prints the entries of its command, and man/mnedcctl.8 repeats them (a test
 * holds the three together), so an operator can look up any word on the screen.
 *
 * Counters are keyed by their JSON name: a counter a newer daemon adds still shows, under a label made
 * from its name, until it is given a term here.
 */

export interface Term {
  label: string;
  meaning: string;
}

const term = (label: string, meaning: string): Term => ({ label, meaning });

/** Why the relay dropped a packet (`drops` in stats and peers). */
export const DROP_TERMS: Record<string, Term> = {
  noRoute: term('NO ROUTE', 'packets to an overlay address no connected device holds (answered with ICMP host unreachable)'),
  spoofed: term('SPOOFED', 'packets whose source address is not the sending device\'s own'),
  malformed: term('MALFORMED', 'packets that are not well-formed IPv4, or whose offload header does not hold'),
  queueFull: term('QUEUE FULL', 'packets from the device dropped because the destination\'s send queue was full'),
  multicast: term('MULTICAST', 'packets to multicast addresses (224.0.0.0/4): not carried yet, never answered with ICMP'),
  broadcast: term('BROADCAST', 'packets to 255.255.255.255 or the subnet\'s broadcast or network address: not carried, never answered with ICMP'),
  ipv6: term('IPV6', 'IPv6 packets (the overlay carries IPv4 only; clients of this version drop them themselves)'),
};

/** Connections the relay turned away (`refused` in stats), by reason. */
export const REFUSAL_TERMS: Record<string, Term> = {
  rateLimited: term('rate limited', 'connections from a source address faster than [limits] connections_per_source_per_second allows'),
  tooManyHandshakes: term('too many handshakes', 'connections refused while the handshake table was full of protected ones'),
  tooManyFromSource: term('too many from source', 'connections beyond [limits] max_handshakes_per_source open from one source address'),
  evicted: term('evicted', 'unfinished handshakes closed to make room for newer ones'),
  handshakeTimeout: term('handshake timeout', 'connections that sent no HELLO in time'),
  tlsFailed: term('tls failed', 'TLS handshakes that failed (not TLS 1.3, not an mnedc client, a port scan)'),
  badHello: term('bad hello', 'HELLOs of another protocol version or claiming the relay\'s own device ID'),
  authFailed: term('auth failed', 'devices with a wrong or stale join secret, or a bad key proof'),
  boundToOtherKey: term('bound to other key', 'a device ID used with another key than the one bound to it (see forget)'),
  deviceJoinRate: term('device join rate', 'a device joining again sooner than [limits] device_joins_per_minute allows'),
  maxClients: term('max clients', 'devices beyond [limits] max_clients connected at once'),
  maxDevices: term('max devices', 'new devices beyond [limits] max_devices bound devices'),
  newDeviceRate: term('new device rate', 'new devices beyond [limits] new_devices_per_minute'),
  poolFull: term('pool full', 'devices that found no free address in the subnet'),
};

/** Sessions the relay ended itself (`cut` in stats). */
export const CUT_TERMS: Record<string, Term> = {
  overBudget: term('over budget', 'devices disconnected because their control frames overflowed their send budget'),
};

/** The client's TUN device counters (`tunnel` in stats). */
export const TUNNEL_TERMS: Record<string, Term> = {
  txDrops: term('tunnel tx drops', 'packets the kernel refused when written to the TUN (its queue was full)'),
  rxErrors: term('tunnel rx errors', 'failed reads from the TUN'),
  rxBatches: term('tunnel rx batches', 'reads from the TUN; each brings one or more packets'),
};

/** The client's session counters (`session` in stats). */
export const SESSION_TERMS: Record<string, Term> = {
  dropsOffline: term('offline drops', 'packets from the TUN dropped while not connected to the relay'),
  dropsMalformed: term('malformed drops', 'packets from the TUN that cannot be framed (never expected from the kernel)'),
  dropsFromRelay: term('drops from relay', 'offloaded packets from the relay whose header does not hold: never written to the TUN'),
  dropsIpv6: term('ipv6 drops', 'IPv6 packets read from the TUN, dropped there: the overlay carries IPv4 only'),
  reconnects: term('reconnects', 'sessions established again after an earlier one ended'),
  failedAttempts: term('failed attempts', 'connection attempts that ended without a session (relay unreachable, refused, rejected)'),
};

const DEVICE = term('DEVICE', 'the device ID (each bound to one device key)');
const IP = term('IP', 'the device\'s overlay address');
const HOSTNAME = term('HOSTNAME', 'the host name the device reported');
const MISSED = term('MISSED', 'packets for the device dropped because its own send queue was full');

const DAEMON_FIELDS = [
  term('daemon', 'which daemon answered: server (the relay) or client'),
  term('version', 'the daemon\'s version'),
  term('pid', 'its process ID'),
  term('uptime', 'how long it has been running'),
];

/** Sub-entries under a heading, as the output shows them. */
function indented(terms: Record<string, Term>): Term[] {
  return Object.values(terms).map((t) => term(`  ${t.label}`, t.meaning));
}

export const PACKETS_NOTE = 'Packet counts and pkt/s count packets as framed; an offloaded super-packet (up to 64 KiB) counts as one.';

/** Columns and fields of each command's human output, per daemon, in the order they appear. */
export const OUTPUT_TERMS: Record<'status' | 'peers' | 'leases' | 'stats', { server: Term[]; client: Term[] }> = {
  status: {
    server: [
      ...DAEMON_FIELDS,
      term('listen', 'the address and port devices connect to'),
      term('subnet', 'the overlay subnet addresses are leased from'),
      term('server ip', 'the relay\'s own overlay address, on its interface'),
      term('interface', 'the relay\'s own TUN interface'),
      term('clients', 'devices connected now'),
      term('leases', 'addresses held by devices, connected or not, and how many are left'),
      term('bound devices', 'device IDs bound to a device key (each joined at least once; see forget)'),
      term('fingerprint', 'the relay\'s certificate fingerprint, as in the join string'),
    ],
    client: [
      ...DAEMON_FIELDS,
      term('state', 'connected, connecting, waiting (to retry) or stopped, and since when'),
      term('server', 'the relay this client joins'),
      term('device', 'this device\'s ID'),
      term('ip', 'the overlay address leased to this device, with the subnet\'s prefix'),
      term('interface', 'the TUN interface carrying the overlay'),
      term('offload', 'whether segmentation offload is in use with the relay (on) or the kernel segments (off)'),
      SESSION_TERMS.reconnects!,
      SESSION_TERMS.failedAttempts!,
      term('last error', 'why the last connection or attempt ended'),
    ],
  },
  peers: {
    server: [
      DEVICE, IP, HOSTNAME,
      term('REMOTE', 'the device\'s address and port as the relay sees it (after NAT)'),
      term('SINCE', 'when the device connected'),
      term('RX', 'bytes received from the device'),
      term('TX', 'bytes sent to the device'),
      term('RX RATE', 'packets and bits per second from the device, over the last few seconds'),
      term('TX RATE', 'packets and bits per second to the device'),
      term('QUEUE', 'bytes waiting in the device\'s send queue'),
      term('RTT', 'round-trip time of the last keepalive'),
      term('DROPS', 'packets from the device the relay dropped, all reasons (stats shows each)'),
      MISSED,
    ],
    client: [
      DEVICE, IP, HOSTNAME,
      term('SINCE', 'when the relay announced the peer'),
      term('UNDERLAY', 'the peer\'s own network addresses, as it reported them'),
    ],
  },
  leases: {
    server: [
      DEVICE, IP, HOSTNAME,
      term('STATE', 'online (connected now) or offline'),
      term('LAST SEEN', 'when an offline device was last connected'),
      term('CREATED', 'when the lease was first given'),
      term('REMOTE', 'the address and port of the device\'s connection, when online'),
      term('UNDERLAY', 'the device\'s own network addresses, as it reported them'),
    ],
    client: [],
  },
  stats: {
    server: [
      DEVICE, IP,
      term('(total)', 'everything the relay received and sent'),
      term('(local)', 'traffic to and from the relay\'s own interface'),
      term('RX PKTS', 'packets received (from the device)'),
      term('RX BYTES', 'bytes received'),
      term('TX PKTS', 'packets sent (to the device)'),
      term('TX BYTES', 'bytes sent'),
      ...Object.values(DROP_TERMS),
      MISSED,
      term('refused', 'connections turned away, by reason:'),
      ...indented(REFUSAL_TERMS),
      term('cut', 'sessions the relay ended, by reason:'),
      ...indented(CUT_TERMS),
    ],
    client: [
      term('tunnel', 'the TUN device: RX is what was read from it (on its way to the relay), TX what was written to it'),
      term('session', 'the connection to the relay: RX is what came from the relay, TX what was sent to it'),
      term('RX PKTS', 'packets received, as the row says'),
      term('RX BYTES', 'bytes received'),
      term('TX PKTS', 'packets sent'),
      term('TX BYTES', 'bytes sent'),
      ...Object.values(TUNNEL_TERMS),
      ...Object.values(SESSION_TERMS),
      term('rtt', 'round-trip time to the relay'),
    ],
  },
};

/** A label for a counter no term names yet: `queueFull` → "queue full". */
export function labelFromKey(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
}

/** The label of counter `key` in `terms`, else one made from its name (in capitals for columns). */
export function counterLabel(terms: Record<string, Term>, key: string, column = false): string {
  const known = Object.prototype.hasOwnProperty.call(terms, key) ? terms[key] : undefined;
  if (known) return known.label;
  return column ? labelFromKey(key).toUpperCase() : labelFromKey(key);
}

/** The "Output:" part of `<command> --help`. */
export function outputHelp(command: string): string {
  const terms = (OUTPUT_TERMS as Record<string, { server: Term[]; client: Term[] } | undefined>)[command];
  if (!terms) return '';
  const section = (title: string, list: Term[]) => {
    if (list.length === 0) return '';
    const width = Math.min(24, Math.max(...list.map((t) => t.label.length)));
    return `${title}:\n${list.map((t) => `  ${t.label.padEnd(width)}  ${t.meaning}`).join('\n')}\n`;
  };
  const parts = [section('Server output', terms.server), section('Client output', terms.client)].filter(Boolean);
  if (command === 'peers' || command === 'stats') parts.push(`${PACKETS_NOTE}\n`);
  return parts.join('\n');
}

/** roff text, for man/mnedcctl.8's OUTPUT section (a unit test keeps the page equal to it). */
export function roffOutputTerms(): string {
  const roff = (text: string) => text.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^[.']/, '\\&$&');
  const lines: string[] = [];
  for (const [command, byDaemon] of Object.entries(OUTPUT_TERMS)) {
    for (const daemon of ['server', 'client'] as const) {
      const list = byDaemon[daemon];
      if (list.length === 0) continue;
      lines.push(`.SS "${command} (${daemon})"`);
      let nested = false;
      for (const t of list) {
        const sub = t.label.startsWith('  ');
        if (sub !== nested) lines.push(sub ? '.RS' : '.RE');
        nested = sub;
        lines.push('.TP', `.B ${roff(t.label.trim())}`, roff(t.meaning));
      }
      if (nested) lines.push('.RE');
    }
  }
  lines.push('.PP', roff(PACKETS_NOTE));
  return lines.join('\n') + '\n';
}
