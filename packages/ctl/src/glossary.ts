/*
 * Every column and field of mnedcctl's human output, with what it means. The renderers take their labels
 * from here, `<command> --help` prints the entries of its command, and man/mnedcctl.8 repeats them (a test
 * holds the three together), so an operator can look up any word on the screen.
 *
 * Counters are keyed by their JSON name: a counter a newer daemon adds still shows, under a label made
 * from its name, until it is given a term here.
 */

import { CUT_TERMS, DISCOVERY_TERMS, DNS_TERMS, DROP_TERMS, MULTICAST_TERMS, REFUSAL_TERMS, SESSION_TERMS, term, TUNNEL_TERMS, type Term } from '@mnedc/common';

export { CUT_TERMS, DISCOVERY_TERMS, DNS_TERMS, DROP_TERMS, MULTICAST_TERMS, REFUSAL_TERMS, SESSION_TERMS, TUNNEL_TERMS, type Term };

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
      term('ip6', 'this device\'s IPv6 address in the overlay (the network\'s unique local /64, the IPv4 address as its last 32 bits)'),
      term('interface', 'the TUN interface carrying the overlay'),
      term('offload', 'whether segmentation offload is in use with the relay (on) or the kernel segments (off)'),
      term('discovery', 'the peer push the relay granted: full (the peer list), names or off (no list: peers is empty)'),
      term('multicast', 'the link-local multicast and broadcast the relay fans out between devices: mdns, ssdp, broadcast'),
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
      term('RTT', 'round-trip time of the relay\'s last timed keepalive (one every 8 rounds at most)'),
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
      term('dns', 'the relay\'s DNS responder on the overlay:'),
      ...indented(DNS_TERMS),
      term('discovery', 'the peer list pushed to devices that get it:'),
      ...indented(DISCOVERY_TERMS),
      term('multicast', 'link-local multicast and broadcast fanned out to every other device, one row per group carried ([server] multicast):'),
      term('  GROUP', 'the group, named as [server] multicast names it:'),
      term('  mdns', 'mDNS, UDP to 224.0.0.251 (service discovery: avahi, Bonjour)'),
      term('  ssdp', 'SSDP, UDP to 239.255.255.250 (UPnP and DLNA discovery)'),
      term('  broadcast', 'UDP to the subnet\'s broadcast address or 255.255.255.255'),
      ...indented(MULTICAST_TERMS),
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
