import { CUT_TERMS, DISCOVERY_TERMS, DNS_TERMS, DROP_TERMS, MULTICAST_TERMS, REFUSAL_TERMS, SESSION_TERMS, TUNNEL_TERMS, type Term } from './counter-terms';
import type { ClientStats, DaemonKind, ServerStats } from './rpc-types';

/*
 * The daemons' `stats` answer in the Prometheus text exposition format (version 0.0.4), hand-rolled: the
 * format is a few lines of text per counter, and prom-client would add a dependency and a registry of
 * its own to mirror counters the daemons already keep.
 *
 * The answer is walked as it is, not through a list of known counters, so a counter the stats RPC gains
 * is exported without a change here (under a name made from its key; the unit test asks for a HELP text).
 */

export const METRIC_PREFIX: Record<DaemonKind, string> = { server: 'mnedc_relay', client: 'mnedc_client' };
/** Ends the HELP of a counter nothing here or in counter-terms.ts explains yet; the unit test looks for it. */
export const UNEXPLAINED = '(no explanation yet)';
/** Device IDs are 1..128 characters; a longer label value can only come from a bug, and is cut. */
const MAX_LABEL_VALUE = 128;

/** A part of the stats answer: the name part its counters get, what they are about, and its own terms. */
interface Scope {
  name: string;
  about: string;
  terms?: Record<string, Term>;
}

const SCOPES: Record<string, Scope> = {
  totals: { name: '', about: 'everything the relay received and sent' },
  local: { name: 'local', about: 'traffic to and from the relay\'s own interface' },
  clients: { name: 'device', about: 'one connected device, since it connected: rx is what came from it, tx what was sent to it' },
  dns: { name: 'dns', about: 'the relay\'s DNS responder on the overlay', terms: DNS_TERMS },
  discovery: { name: 'discovery', about: 'the peer list pushed to devices that get it', terms: DISCOVERY_TERMS },
  tunnel: { name: 'tunnel', about: 'the TUN device: rx is what was read from it, on its way to the relay; tx what was written to it', terms: TUNNEL_TERMS },
  mesh: { name: 'mesh', about: 'the mesh link to one other relay of the cluster: rx is what came from it, tx what was sent to it' },
  multicast: { name: 'multicast', about: 'one multicast group (or broadcast) the relay fans out to every other device', terms: MULTICAST_TERMS },
  session: { name: 'session', about: 'the connection to the relay: rx is what came from the relay, tx what was sent to it', terms: SESSION_TERMS },
};

/** Counter records keyed by reason: one metric with a `reason` label. */
const REASONS: Record<string, { name: string; about: string; terms: Record<string, Term> }> = {
  drops: { name: 'dropped_packets', about: 'Packets the relay dropped', terms: DROP_TERMS },
  refused: { name: 'refused_connections', about: 'Connections the relay turned away', terms: REFUSAL_TERMS },
  cut: { name: 'cut_sessions', about: 'Sessions the relay ended itself', terms: CUT_TERMS },
};

/** Counters every scope has. */
const COMMON_TERMS: Record<string, { name?: string; meaning: string; unscoped?: true }> = {
  rxPackets: { meaning: 'packets received' },
  rxBytes: { meaning: 'bytes received' },
  txPackets: { meaning: 'packets sent' },
  txBytes: { meaning: 'bytes sent' },
  missed: { name: 'missed_packets', meaning: 'packets for the device dropped because its own send queue was full', unscoped: true },
};

/** Values that go up and down; everything else in a stats answer is a counter. */
const GAUGES: Record<string, { name: string; scale: number; meaning: string }> = {
  rttMs: { name: 'rtt_seconds', scale: 1e-3, meaning: 'Round-trip time of the last keepalive to the relay, in seconds (NaN before the first)' },
  up: { name: 'up', scale: 1, meaning: '1 while the mesh link to that relay is up, 0 while it is not' },
};

export type Labels = Record<string, string>;

/** `"`, `\` and line feeds escaped as the format wants; peers choose device IDs, so nothing is trusted. */
export function escapeLabelValue(value: string): string {
  const capped = value.length > MAX_LABEL_VALUE ? value.slice(0, MAX_LABEL_VALUE) : value;
  return capped.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** `dropsOffline` → `drops_offline`; anything outside [a-z0-9_] becomes `_`, so a key cannot break a line. */
export function metricNamePart(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/[^a-z0-9_]/g, '_');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Families in the order first seen, each with its samples together, as the format requires. */
class Exposition {
  private readonly families = new Map<string, { type: 'counter' | 'gauge'; help: string; samples: string[] }>();
  private readonly series = new Set<string>();

  add(name: string, type: 'counter' | 'gauge', help: string, labels: Labels, value: number): void {
    const labelText = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',');
    const sample = labelText ? `${name}{${labelText}}` : name;
    // A repeated series would make Prometheus reject the whole scrape; the first one stands.
    if (this.series.has(sample)) return;
    this.series.add(sample);
    let family = this.families.get(name);
    if (!family) {
      family = { type, help, samples: [] };
      this.families.set(name, family);
    }
    family.samples.push(`${sample} ${formatValue(value)}`);
  }

  text(): string {
    let out = '';
    for (const [name, f] of this.families) out += `# HELP ${name} ${escapeHelp(f.help)}\n# TYPE ${name} ${f.type}\n${f.samples.join('\n')}\n`;
    return out;
  }
}

function counterHelp(scope: Scope | undefined, key: string, path: string): string {
  if (scope?.terms && Object.hasOwn(scope.terms, key)) return capitalised(scope.terms[key]!.meaning);
  const common = Object.hasOwn(COMMON_TERMS, key) ? COMMON_TERMS[key]! : undefined;
  if (!common) return `${path} in the stats answer ${UNEXPLAINED}`;
  // The traffic counters mean what their scope says they count.
  return scope && !common.unscoped ? `${capitalised(common.meaning)} (${scope.about})` : capitalised(common.meaning);
}

function reasonHelp(reasons: (typeof REASONS)[string], scope: Scope | undefined): string {
  const known = Object.entries(reasons.terms).map(([reason, t]) => `${reason}: ${t.meaning}`).join('; ');
  return `${reasons.about}${scope ? ` (${scope.about})` : ''}, by reason. ${known}`;
}

function walk(out: Exposition, prefix: string[], record: object, labels: Labels, scope: Scope | undefined, path: string): void {
  const name = (...parts: string[]) => [...prefix, ...parts].filter(Boolean).join('_');
  for (const [key, value] of Object.entries(record)) {
    const at = path ? `${path}.${key}` : key;
    if (typeof value === 'number') {
      const gauge = Object.hasOwn(GAUGES, key) ? GAUGES[key]! : undefined;
      if (gauge) {
        out.add(name(gauge.name), 'gauge', gauge.meaning, labels, value < 0 ? NaN : value * gauge.scale);
      } else {
        const part = Object.hasOwn(COMMON_TERMS, key) ? COMMON_TERMS[key]!.name ?? metricNamePart(key) : metricNamePart(key);
        out.add(`${name(part)}_total`, 'counter', counterHelp(scope, key, at), labels, value);
      }
    } else if (Array.isArray(value)) {
      const inner = Object.hasOwn(SCOPES, key) ? SCOPES[key] : undefined;
      value.forEach((element: unknown, i) => {
        if (typeof element !== 'object' || element === null) return;
        // A device's counters are labelled by its ID, a mesh link's by the relay at its other end, a multicast group's by its name.
        const { deviceId, relay, group } = element as { deviceId?: unknown; relay?: unknown; group?: unknown };
        const label: Labels = typeof group === 'string' && deviceId === undefined ? { group }
          : typeof relay === 'string' && deviceId === undefined ? { relay } : { device: typeof deviceId === 'string' ? deviceId : String(i) };
        walk(out, [name(inner?.name ?? metricNamePart(key))], element, { ...labels, ...label }, inner, `${at}[]`);
      });
    } else if (typeof value === 'object' && value !== null) {
      const reasons = Object.hasOwn(REASONS, key) ? REASONS[key] : undefined;
      if (reasons) {
        const help = reasonHelp(reasons, scope);
        for (const [reason, count] of Object.entries(value as Record<string, unknown>)) {
          if (typeof count === 'number') out.add(`${name(reasons.name)}_total`, 'counter', help, { ...labels, reason }, count);
        }
      } else {
        const inner = Object.hasOwn(SCOPES, key) ? SCOPES[key] : undefined;
        walk(out, [name(inner ? inner.name : metricNamePart(key))], value, labels, inner, at);
      }
    }
    // Strings (device IDs, addresses) only label the counters beside them.
  }
}

/** The exposition text of one daemon's stats answer. */
export function renderMetrics(daemon: 'server', stats: ServerStats): string;
export function renderMetrics(daemon: 'client', stats: ClientStats): string;
export function renderMetrics(daemon: DaemonKind, stats: ServerStats | ClientStats): string;
export function renderMetrics(daemon: DaemonKind, stats: ServerStats | ClientStats): string {
  const out = new Exposition();
  walk(out, [METRIC_PREFIX[daemon]], stats, {}, undefined, '');
  return out.text();
}
