/*
 * What each counter of the daemons' `stats` answer means, keyed by its JSON name: mnedcctl's glossary
 * labels its columns with these and the Prometheus metrics (metrics.ts) take their HELP text from them,
 * so an operator reads the same explanation in both.
 */

export interface Term {
  label: string;
  meaning: string;
}

export const term = (label: string, meaning: string): Term => ({ label, meaning });

/** Why the relay dropped a packet (`drops` in stats and peers). */
export const DROP_TERMS: Record<string, Term> = {
  noRoute: term('NO ROUTE', 'packets to an overlay address no connected device holds (answered with ICMP host unreachable)'),
  spoofed: term('SPOOFED', 'packets whose source address is not the sending device\'s own'),
  malformed: term('MALFORMED', 'packets that are not well-formed IPv4 or IPv6, or whose offload header does not hold'),
  queueFull: term('QUEUE FULL', 'packets from the device dropped because the destination\'s send queue was full'),
  multicast: term('MULTICAST', 'packets to multicast groups the relay does not carry ([server] multicast; IGMP, other groups): never answered with ICMP'),
  broadcast: term('BROADCAST', 'broadcasts the relay does not carry ([server] multicast without broadcast; the subnet\'s network address): never answered with ICMP'),
  ipv6: term('IPV6', 'IPv6 packets a relay with [server] ipv6 = no dropped'),
  relayDown: term('RELAY DOWN', 'packets for a device on another relay of the cluster while this relay has no mesh link to it'),
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
  clusterUnavailable: term('cluster unavailable', 'devices told to retry while the cluster\'s shared state (etcd) could not be read'),
};

/** Sessions the relay ended itself (`cut` in stats). */
export const CUT_TERMS: Record<string, Term> = {
  overBudget: term('over budget', 'devices disconnected because their control frames overflowed their send budget'),
};

/** The relay's DNS responder on the overlay (`dns` in stats). */
export const DNS_TERMS: Record<string, Term> = {
  queries: term('queries', 'DNS messages received on the overlay address, UDP and TCP'),
  answers: term('answers', 'NOERROR answers: an address, a name, or none of the type asked (NODATA)'),
  nxdomain: term('nxdomain', 'names in the domain no connected device has'),
  formerr: term('formerr', 'malformed queries, answered FORMERR'),
  refused: term('refused', 'names outside the domain and the overlay\'s reverse names (no recursion), answered REFUSED'),
  notimp: term('notimp', 'queries with another opcode than QUERY, answered NOTIMP'),
  dropped: term('dropped', 'messages not answered: unreadable header, a response, a source outside the overlay, too many answers unsent'),
  rateLimited: term('rate limited', 'UDP queries beyond a source\'s rate (100 a second, bursts of 200), not answered'),
  tcpRefused: term('tcp refused', 'TCP connections closed at once: 64 were open already, or the source is outside the overlay'),
};

/** The peer list pushed to devices granted discovery "full" (`discovery` in stats). */
export const DISCOVERY_TERMS: Record<string, Term> = {
  framesSent: term('frames sent', 'PEERS and PEERS_BIN frames queued to devices that get the peer list'),
  resyncs: term('resyncs', 'times a device\'s queue was too full for its discovery deltas: they were dropped, and a fresh snapshot sent once it drained'),
};

/** Multicast and broadcast fanned out to every other device (`multicast` in stats), per group. */
export const MULTICAST_TERMS: Record<string, Term> = {
  received: term('RECEIVED', 'packets to the group taken in, from this relay\'s devices and from peer relays'),
  delivered: term('DELIVERED', 'copies sent, to devices and to peer relays'),
  rateLimited: term('RATE LIMITED', 'packets over their sender\'s rate ([limits] multicast_per_device_per_second), not sent on'),
  duplicate: term('DUPLICATE', 'a datagram sent again by another device within a second (a reflector\'s echo), not sent on'),
  queueFull: term('QUEUE FULL', 'copies not sent because the receiver\'s send queue was full'),
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
  dropsIpv6: term('ipv6 drops', 'IPv6 packets read from the TUN, dropped there: the relay gives this device no IPv6'),
  reconnects: term('reconnects', 'sessions established again after an earlier one ended'),
  failedAttempts: term('failed attempts', 'connection attempts that ended without a session (relay unreachable, refused, rejected)'),
};
