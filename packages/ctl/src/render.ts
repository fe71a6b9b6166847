import type {
  ClientPeer, ClientStats, ClientStatus, Counters, DaemonKind, Drops, ForgetResult, JoinResult, KickResult, Lease, PeerEvent, ReleaseResult, ServerPeer,
  ServerStats, ServerStatus, Status,
} from './api';
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

export function renderServerStatus(s: ServerStatus): string {
  const leases = s.leases ?? { used: NaN, free: NaN, capacity: NaN };
  return formatFields([
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
  ]);
}

export function renderClientStatus(s: ClientStatus, now: number): string {
  return formatFields([
    ['daemon', 'client'],
    ['version', orDash(s.version)],
    ['pid', formatCount(s.pid)],
    ['uptime', formatDuration(s.uptimeSec)],
    ['state', `${orDash(s.state)}${since(s.since, now)}`],
    ['server', orDash(s.server)],
    ['device', orDash(s.deviceId)],
    ['ip', s.ip ? (s.prefix ? `${s.ip}/${s.prefix}` : s.ip) : '-'],
    ['interface', orDash(s.interface)],
    ['reconnects', formatCount(s.reconnects)],
    ['last error', orDash(s.lastError)],
  ]);
}

export function renderStatus(status: Status, now: number): string {
  return status.daemon === 'server' ? renderServerStatus(status) : renderClientStatus(status, now);
}

function totalDrops(drops: Drops | undefined): number {
  if (!drops) return NaN;
  return drops.noRoute + drops.spoofed + drops.malformed + drops.queueFull;
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

export function renderClientPeers(peers: ClientPeer[], now: number): string {
  if (peers.length === 0) return 'no peers\n';
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

export function renderServerStats(stats: ServerStats): string {
  const headers = ['DEVICE', 'IP', 'RX PKTS', 'RX BYTES', 'TX PKTS', 'TX BYTES', 'NO ROUTE', 'SPOOFED', 'MALFORMED', 'QUEUE FULL', 'MISSED'];
  const align: Align[] = ['left', 'left', ...Array<Align>(9).fill('right')];
  const row = (name: string, ip: string, c: Counters, missed: string) => {
    const d: Partial<Drops> = c.drops ?? {};
    return [name, ip, formatCount(c.rxPackets), formatBytes(c.rxBytes), formatCount(c.txPackets), formatBytes(c.txBytes),
      formatCount(d.noRoute ?? NaN), formatCount(d.spoofed ?? NaN), formatCount(d.malformed ?? NaN), formatCount(d.queueFull ?? NaN), missed];
  };
  return formatTable(headers, [
    row('(total)', '-', stats.totals, '-'),
    row('(local)', '-', stats.local, '-'),
    ...stats.clients.map((c) => row(c.deviceId, orDash(c.ip), c, formatCount(c.missed))),
  ], align);
}

export function renderClientStats(stats: ClientStats): string {
  const { tunnel: t, session: s } = stats;
  const align: Align[] = ['left', 'right', 'right', 'right', 'right'];
  const table = formatTable(['', 'RX PKTS', 'RX BYTES', 'TX PKTS', 'TX BYTES'], [
    ['tunnel', formatCount(t.rxPackets), formatBytes(t.rxBytes), formatCount(t.txPackets), formatBytes(t.txBytes)],
    ['session', formatCount(s.rxPackets), formatBytes(s.rxBytes), formatCount(s.txPackets), formatBytes(s.txBytes)],
  ], align);
  return `${table}\n${formatFields([
    ['tunnel tx drops', formatCount(t.txDrops)],
    ['tunnel rx errors', formatCount(t.rxErrors)],
    ['tunnel rx batches', formatCount(t.rxBatches)],
    ['offline drops', formatCount(s.dropsOffline)],
    ['reconnects', formatCount(s.reconnects)],
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

export type QueryCommand = 'status' | 'peers' | 'leases' | 'stats' | 'kick' | 'release' | 'forget' | 'join' | 'rotate-join';

/** The human text for one daemon's answer to one command. */
export function renderResult(command: QueryCommand, daemon: DaemonKind, result: unknown, now: number): string {
  switch (command) {
    case 'status': return renderStatus(result as Status, now);
    case 'peers': return daemon === 'server' ? renderServerPeers(result as ServerPeer[], now) : renderClientPeers(result as ClientPeer[], now);
    case 'stats': return daemon === 'server' ? renderServerStats(result as ServerStats) : renderClientStats(result as ClientStats);
    case 'leases': return renderLeases(result as Lease[], now);
    case 'kick': return renderKick(result as KickResult);
    case 'release': return renderRelease(result as ReleaseResult);
    case 'forget': return renderForget(result as ForgetResult);
    case 'join':
    case 'rotate-join': return renderJoin(result as JoinResult);
  }
}
