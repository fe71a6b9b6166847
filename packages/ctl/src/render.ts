import type {
  ClientPeer, ClientStats, ClientStatus, ClusterInfo, Counters, DaemonKind, Drops, ForgetResult, JoinResult, KickResult, Lease, PeerEvent, ReleaseResult, ServerPeer,
  ServerStats, ServerStatus, Status,
} from './api';
import { counterLabel, CUT_TERMS, DISCOVERY_TERMS, DNS_TERMS, labelFromKey, DROP_TERMS, MULTICAST_TERMS, REFUSAL_TERMS, SESSION_TERMS, TUNNEL_TERMS, type Term } from './glossary';
import {
  formatAgo, formatBytes, formatClock, formatCount, formatDuration, formatFields, formatRate, formatRtt, formatTable,
  orDash, printable, type Align,
} from './format';

/*
 * Human output per command. Rows come in the daemon's order: the daemons already list them in a
 * meaningful order, and sorting here would make the text disagree with --json. Every string from a daemon
 * is shown through printable() (formatTable and formatFields do it for their cells).
 */

function since(at: number, now: number): string {
  return at > 0 ? ` (since ${formatAgo(at, now)})` : '';
}

/** Status fields shown under another key's line (startedAt is what uptime says; prefix is in ip, since in state). */
const STATUS_SHOWN_WITH: Record<string, string> = { uptimeSec: 'uptime', startedAt: 'uptime', serverIp: 'server ip', boundDevices: 'bound devices',
  deviceId: 'device', prefix: 'ip', since: 'state', lastError: 'last error' };

/** The label a status field appears under. */
export function statusLabel(key: string): string {
  return STATUS_SHOWN_WITH[key] ?? labelFromKey(key);
}

/** The known fields, then any field a newer daemon added, so human status never hides what --json shows. */
function withUnknownFields(status: object, fields: Array<[string, string]>): string {
  const shown = new Set(fields.map(([label]) => label));
  for (const [key, value] of Object.entries(status)) {
    const label = statusLabel(key);
    if (shown.has(label)) continue;
    shown.add(label);
    fields.push([printable(label), typeof value === 'string' ? orDash(value) : typeof value === 'number' ? formatCount(value) : printable(value)]);
  }
  return formatFields(fields);
}

export function renderServerStatus(s: ServerStatus): string {
  const leases = s.leases ?? { used: NaN, free: NaN, capacity: NaN };
  return withUnknownFields(s, [
    ['daemon', 'server'],
    ['version', orDash(s.version)],
    ['pid', formatCount(s.pid)],
    ['uptime', formatDuration(s.uptimeSec)],
    ['listen', orDash(s.listen)],
    ['subnet', orDash(s.subnet)],
    ['server ip', orDash(s.serverIp)],
    ['interface', orDash(s.interface)],
    ['clients', formatCount(s.clients)],
    ['leases', `${formatCount(leases.used)} used, ${formatCount(leases.free)} free of ${formatCount(leases.capacity)}`],
    ['bound devices', s.boundDevices === undefined ? '-' : formatCount(s.boundDevices)],
    ['fingerprint', orDash(s.fingerprint)],
  ]);
}

export function renderClientStatus(s: ClientStatus, now: number): string {
  // Every relay the device may use, in the order it tries them (one: the server line again).
  const { relays, ...rest } = s;
  return withUnknownFields(rest, [
    ['daemon', 'client'],
    ['version', orDash(s.version)],
    ['pid', formatCount(s.pid)],
    ['uptime', formatDuration(s.uptimeSec)],
    ['state', `${orDash(s.state)}${since(s.since, now)}`],
    ['server', orDash(s.server)],
    ...(relays ? [['relays', relays.map(printable).join(', ')] as [string, string]] : []),
    ['device', orDash(s.deviceId)],
    ['ip', s.ip ? (s.prefix ? `${s.ip}/${s.prefix}` : s.ip) : '-'],
    ...(s.ip6 ? [['ip6', `${printable(s.ip6)}/64`] as [string, string]] : []),
    ['interface', orDash(s.interface)],
    ['offload', s.offload === undefined ? '-' : s.offload ? 'on' : 'off'],
    ['discovery', orDash(s.discovery)],
    ...(s.multicast ? [['multicast', s.multicast.length > 0 ? s.multicast.map(printable).join(', ') : 'none (the relay carries none)'] as [string, string]] : []),
    ['reconnects', formatCount(s.reconnects)],
    ['failed attempts', s.failedAttempts === undefined ? '-' : formatCount(s.failedAttempts)],
    ['last error', orDash(s.lastError)],
  ]);
}

export function renderStatus(status: Status, now: number): string {
  return status.daemon === 'server' ? renderServerStatus(status) : renderClientStatus(status, now);
}

function totalDrops(drops: Drops | undefined): number {
  if (!drops) return NaN;
  return Object.values(drops).reduce((sum, n) => sum + n, 0);
}

/** The keys of these counter records, the known ones (in `terms` order) first, then any a newer daemon added. */
function counterKeys(terms: Record<string, Term>, records: Array<Record<string, unknown> | undefined>): string[] {
  const keys = new Set(Object.keys(terms));
  for (const record of records) for (const key of Object.keys(record ?? {})) keys.add(key);
  return [...keys];
}

/** A counter by its JSON name: bytes in binary units, everything else as a plain count. */
function formatCounter(key: string, value: number | undefined): string {
  if (value === undefined) return '-';
  return /Bytes$/.test(key) ? formatBytes(value) : formatCount(value);
}

/** One "label  value" line per counter, every key the daemon sent included. */
function counterFields(terms: Record<string, Term>, record: Record<string, number> | undefined, skip: readonly string[] = []): Array<[string, string]> {
  if (!record) return [];
  return counterKeys(terms, [record]).filter((key) => !skip.includes(key))
    .map((key) => [printable(counterLabel(terms, key)), formatCounter(key, record[key])]);
}

function list(values: string[] | undefined): string {
  return values && values.length > 0 ? values.join(',') : '-';
}

export function renderServerPeers(peers: ServerPeer[], now: number): string {
  if (peers.length === 0) return 'no devices connected\n';
  const headers = ['DEVICE', 'IP', 'HOSTNAME', 'REMOTE', 'SINCE', 'RX', 'TX', 'RX RATE', 'TX RATE', 'QUEUE', 'RTT', 'DROPS', 'MISSED'];
  const align: Align[] = ['left', 'left', 'left', 'left', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'];
  return formatTable(headers, peers.map((p) => [
    p.deviceId, orDash(p.ip), orDash(p.hostname), orDash(p.remote), formatAgo(p.since, now),
    formatBytes(p.rxBytes), formatBytes(p.txBytes), formatRate(p.rxPps, p.rxBps), formatRate(p.txPps, p.txBps),
    formatBytes(p.queueBytes), formatRtt(p.rttMs), formatCount(totalDrops(p.drops)), formatCount(p.missed),
  ]), align);
}

/** `discovery`: what the client's status says its relay granted; without the list, why it is empty. */
export function renderClientPeers(peers: ClientPeer[], now: number, discovery?: string): string {
  if (peers.length === 0) {
    if (discovery === 'names' || discovery === 'off') {
      return `no peer list: discovery is ${discovery}, the relay sends this device no peers` +
        `${discovery === 'names' ? ' (reach them by name on the overlay)' : ''}; [client] discovery = full asks for the list\n`;
    }
    return 'no peers\n';
  }
  return formatTable(['DEVICE', 'IP', 'HOSTNAME', 'SINCE', 'UNDERLAY'], peers.map((p) => [
    p.deviceId, orDash(p.ip), orDash(p.hostname), formatAgo(p.since, now), list(p.underlay),
  ]));
}

export function renderLeases(leases: Lease[], now: number): string {
  if (leases.length === 0) return 'no leases\n';
  return formatTable(['DEVICE', 'IP', 'HOSTNAME', 'STATE', 'LAST SEEN', 'CREATED', 'REMOTE', 'UNDERLAY'], leases.map((l) => [
    l.deviceId, orDash(l.ip), orDash(l.hostname), l.connected ? 'online' : 'offline',
    l.connected ? 'now' : formatAgo(l.lastSeen, now), formatAgo(l.createdAt, now), orDash(l.remote), list(l.underlay),
  ]));
}

/**
 * The traffic table (one drop column per reason, including reasons this mnedcctl does not know yet), then
 * every refusal and cut counter, zeros included: an operator looking for a reason should find it listed.
 */
export function renderServerStats(stats: ServerStats): string {
  const mesh = stats.mesh ?? [];
  const counters: Counters[] = [stats.totals, stats.local, ...stats.clients, ...mesh];
  const dropKeys = counterKeys(DROP_TERMS, counters.map((c) => c.drops));
  const headers = ['DEVICE', 'IP', 'RX PKTS', 'RX BYTES', 'TX PKTS', 'TX BYTES',
    ...dropKeys.map((key) => printable(counterLabel(DROP_TERMS, key, true))), 'MISSED'];
  const align: Align[] = ['left', 'left', ...Array<Align>(headers.length - 2).fill('right')];
  const row = (name: string, ip: string, c: Counters, missed: string) => {
    const d: Partial<Drops> = c.drops ?? {};
    return [name, ip, formatCount(c.rxPackets), formatBytes(c.rxBytes), formatCount(c.txPackets), formatBytes(c.txBytes),
      ...dropKeys.map((key) => formatCount(d[key] ?? NaN)), missed];
  };
  const table = formatTable(headers, [
    row('(total)', '-', stats.totals, '-'),
    row('(local)', '-', stats.local, '-'),
    ...stats.clients.map((c) => row(c.deviceId, orDash(c.ip), c, formatCount(c.missed))),
    // The cluster's other relays: what crossed the mesh link to each (rx: from it), drops of what came over it.
    ...mesh.map((m) => row(`(relay ${printable(m.relay)})`, '-', m, '-')),
  ], align);
  const sections = [
    ['refused (connections turned away)', counterFields(REFUSAL_TERMS, stats.refused)],
    ['cut (sessions the relay ended)', counterFields(CUT_TERMS, stats.cut)],
    ['dns (the overlay\'s DNS responder)', counterFields(DNS_TERMS, stats.dns)],
    ['discovery (the pushed peer list)', counterFields(DISCOVERY_TERMS, stats.discovery)],
  ] as const;
  return table + sections.filter(([, fields]) => fields.length > 0)
    .map(([title, fields]) => `\n${title}:\n${formatFields(fields.map(([label, value]) => [`  ${label}`, value]))}`).join('') +
    renderMulticast(stats.multicast);
}

/** One row per group the relay carries; a relay that carries none (or predates multicast) says so. */
function renderMulticast(groups: ServerStats['multicast']): string {
  if (groups === undefined) return '';
  if (groups.length === 0) return '\nmulticast: none carried ([server] multicast = off)\n';
  const keys = ['received', 'delivered', 'rateLimited', 'duplicate', 'queueFull'] as const;
  const align: Align[] = ['left', ...Array<Align>(keys.length).fill('right')];
  return `\nmulticast (fanned out to every other device):\n${formatTable(['GROUP', ...keys.map((k) => counterLabel(MULTICAST_TERMS, k, true))],
    groups.map((g) => [printable(g.group), ...keys.map((k) => formatCount(g[k]))]), align)}`;
}

export function renderClientStats(stats: ClientStats): string {
  const { tunnel: t, session: s } = stats;
  const align: Align[] = ['left', 'right', 'right', 'right', 'right'];
  const table = formatTable(['', 'RX PKTS', 'RX BYTES', 'TX PKTS', 'TX BYTES'], [
    ['tunnel', formatCount(t.rxPackets), formatBytes(t.rxBytes), formatCount(t.txPackets), formatBytes(t.txBytes)],
    ['session', formatCount(s.rxPackets), formatBytes(s.rxBytes), formatCount(s.txPackets), formatBytes(s.txBytes)],
  ], align);
  const traffic = ['rxPackets', 'rxBytes', 'txPackets', 'txBytes'];
  return `${table}\n${formatFields([
    ...counterFields(TUNNEL_TERMS, t, traffic).map(([label, value]): [string, string] =>
      [label.startsWith('tunnel ') ? label : `tunnel ${label}`, value]),
    ...counterFields(SESSION_TERMS, s, traffic),
    ['rtt', formatRtt(stats.rttMs)],
  ])}`;
}

export function renderKick(result: KickResult): string {
  return `kicked ${printable(result.deviceId)}\n`;
}

export function renderRelease(result: ReleaseResult): string {
  return `released ${printable(result.deviceId)} (${printable(orDash(result.ip))})\n`;
}

export function renderForget(result: ForgetResult): string {
  const what = [result.ip ? `lease ${result.ip}` : '', result.binding ? 'key binding' : ''].filter(Boolean).join(' and ');
  return `forgot ${printable(result.deviceId)}${what ? ` (${printable(what)})` : ''}\n`;
}

export function renderJoin(result: JoinResult): string {
  return `${printable(result.join)}\n`;
}

export function renderCluster(c: ClusterInfo, now: number): string {
  if (c.network === null || c.etcd === null) return `not a cluster: a single relay (${printable(c.relay)}) with its own files ([cluster] etcd is empty)\n`;
  const e = c.etcd;
  const etcd = e.reachable
    ? `etcd ${printable(e.endpoint)}: v${printable(e.version)}, ${e.leader === '0' ? 'no leader' : 'has a leader'}, revision ${e.revision}`
    : `etcd ${printable(e.endpoint)}: unreachable (${printable(e.error)})`;
  const state = c.stateReadable ? '' : '; shared state not read yet: new devices are told to retry';
  const head = `network ${printable(c.network)}, ${etcd}${state}\n`;
  const table = formatTable(['RELAY', 'ADVERTISE', 'STARTED', 'DEVICES', 'MESH', 'RTT', 'SENT', 'RECEIVED'], c.relays.map((r) => [
    `${r.id}${r.self ? ' (this)' : ''}`, orDash(r.advertise), formatAgo(r.since, now), formatCount(r.devices),
    r.self ? '-' : printable(r.link), r.self ? '-' : formatRtt(r.rttMs), r.self ? '-' : formatBytes(r.txBytes), r.self ? '-' : formatBytes(r.rxBytes),
  ]), ['left', 'left', 'left', 'right', 'left', 'right', 'right', 'right']);
  // Why a link is not up, where an operator reads on from the table.
  const problems = c.relays.filter((r) => !r.self && r.link !== 'up' && r.problem).map((r) => `${printable(r.id)}: ${printable(r.problem)}\n`);
  return head + table + problems.join('');
}

/** One watch line: "12:03:04 up   device-b 10.0.0.3 hostname"; `label` tells daemons apart when watching two. */
export function renderNotification(method: string, params: unknown, now: number, label?: string): string {
  const prefix = label ? ` [${label}]` : '';
  if (method === 'peer' && params !== null && typeof params === 'object') {
    const e = params as PeerEvent;
    const at = typeof e.at === 'number' ? e.at : now;
    return `${formatClock(at)}${prefix} ${printable(String(e.event)).padEnd(4)} ${printable(e.deviceId)} ${printable(orDash(e.ip))} ${printable(orDash(e.hostname))}\n`;
  }
  // Notifications a newer daemon may send: show them rather than drop them.
  return `${formatClock(now)}${prefix} ${printable(method)} ${printable(JSON.stringify(params ?? null))}\n`;
}

export type QueryCommand = 'status' | 'peers' | 'leases' | 'stats' | 'kick' | 'release' | 'forget' | 'join' | 'rotate-join' | 'cluster';

/** The human text for one daemon's answer to one command. */
export function renderResult(command: QueryCommand, daemon: DaemonKind, result: unknown, now: number, status?: Status): string {
  switch (command) {
    case 'status': return renderStatus(result as Status, now);
    case 'peers': return daemon === 'server' ? renderServerPeers(result as ServerPeer[], now) : renderClientPeers(result as ClientPeer[], now, status?.daemon === 'client' ? status.discovery : undefined);
    case 'stats': return daemon === 'server' ? renderServerStats(result as ServerStats) : renderClientStats(result as ClientStats);
    case 'leases': return renderLeases(result as Lease[], now);
    case 'kick': return renderKick(result as KickResult);
    case 'release': return renderRelease(result as ReleaseResult);
    case 'forget': return renderForget(result as ForgetResult);
    case 'join':
    case 'rotate-join': return renderJoin(result as JoinResult);
    case 'cluster': return renderCluster(result as ClusterInfo, now);
  }
}
