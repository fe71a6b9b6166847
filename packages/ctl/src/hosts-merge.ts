/**
 * `mnedcctl sync-hosts` without I/O: which lines of the client's hosts file (/run/mnedc/hosts) go into
 * /etc/hosts, and /etc/hosts with mnedc's block replaced. The merger runs as root while the client that
 * writes its input is an unprivileged daemon reachable by a hostile relay, so nothing in that file is
 * trusted: each line must be one IPv4 address and names under `.mnedc`, or it is skipped.
 */
import { isDnsName, isIpv4 } from '@mnedc/protocol';

export const BLOCK_BEGIN = '# BEGIN mnedc peers (mnedcctl sync-hosts from /run/mnedc/hosts; edits here are overwritten)';
export const BLOCK_END = '# END mnedc peers';
/** Any line starting so opens a block: a later version may word the rest of the line differently. */
const BEGIN_PREFIX = '# BEGIN mnedc peers';

/**
 * The largest source read, and the most entries merged. A /16 overlay could list 65,534 devices, but every
 * lookup of any name on the device scans /etc/hosts, so a hostile relay must not be able to make it
 * megabytes long: 16,384 devices at about 60 bytes a line fit, larger overlays need DNS.
 */
export const MAX_SOURCE_BYTES = 1 << 20;
export const MAX_ENTRIES = 16_384;
/** The renderer writes at most three names a line (`<id>.mnedc <host>.mnedc <host>`). */
const MAX_NAMES_PER_LINE = 4;

/**
 * Only names under `.mnedc`: the bare hostnames the client's file also carries would let any device holding
 * the join string shadow, system-wide, a name the device's DNS search domains resolve (`mail`, `proxy`).
 */
export function isOverlayName(name: string): boolean {
  return name.endsWith('.mnedc') && isDnsName(name);
}

export interface PeerHosts {
  /** Normalised `ip<TAB>name…` lines, in the source's order, each name at most once over all lines. */
  lines: string[];
  /** Lines that were neither blank, a comment, nor a valid entry (each named once in the log). */
  skipped: number;
  /** Names that are no DNS name, dropped from lines that were otherwise taken. */
  badNames: number;
}

/** The entries of the client's hosts file; throws when it is too large to be what the client writes. */
export function parsePeerHosts(text: string): PeerHosts {
  if (Buffer.byteLength(text) > MAX_SOURCE_BYTES) throw new Error(`larger than ${MAX_SOURCE_BYTES} bytes`);
  const lines: string[] = [];
  const seen = new Set<string>();
  let skipped = 0;
  let badNames = 0;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    // Not trimmed: leading whitespace or a comment after the names is not what the renderer writes, so the
    // line is skipped whole. One odd name (a \r, a NUL, an underscore) costs that name, not its device's
    // other names.
    const [ip, ...names] = line.split(/[ \t]+/);
    const ok = isIpv4(ip!) && names.length > 0 && names.length <= MAX_NAMES_PER_LINE && !names.some((n) => n.startsWith('#'));
    const good = ok ? names.filter(isDnsName) : [];
    const fresh = good.filter((n) => isOverlayName(n) && !seen.has(n));
    if (fresh.length === 0 || lines.length >= MAX_ENTRIES) {
      skipped++;
      continue;
    }
    badNames += names.length - good.length;
    for (const n of fresh) seen.add(n);
    lines.push(`${ip}\t${fresh.join(' ')}`);
  }
  return { lines, skipped, badNames };
}

/**
 * /etc/hosts (null: there is none) with every mnedc block removed and, unless `entries` is empty, one block
 * holding them where the first one was, or at the end. Every other line is kept byte for byte; a last line
 * without a newline gets one before an appended block. Throws on a block that is opened and never closed,
 * rather than guess where it ends and drop the administrator's lines.
 */
export function mergeHostsBlock(current: string | null, entries: readonly string[]): string {
  const text = current ?? '';
  // Split keeping terminators, so lines come back exactly as they were ('\r\n' included).
  const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  const kept: string[] = [];
  let at = -1;
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.replace(/\r?\n$/, '').startsWith(BEGIN_PREFIX)) {
      kept.push(lines[i]!);
      continue;
    }
    const end = lines.findIndex((l, j) => j > i && l.replace(/\r?\n$/, '') === BLOCK_END);
    if (end < 0) throw new Error(`line ${i + 1} opens an mnedc block that no "${BLOCK_END}" line closes; remove it by hand`);
    if (at < 0) at = kept.length;
    i = end;
  }
  if (entries.length === 0) return kept.join('');
  const block = [BLOCK_BEGIN, ...entries, BLOCK_END].map((l) => `${l}\n`);
  if (at < 0) {
    at = kept.length;
    if (at > 0 && !kept[at - 1]!.endsWith('\n')) kept[at - 1] += '\n';
  }
  kept.splice(at, 0, ...block);
  return kept.join('');
}
