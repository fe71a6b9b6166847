/**
 * Host names as RFC 1123 allows them: labels of a-z, 0-9 and '-', neither starting nor ending with '-',
 * at most 63 characters each, joined by dots, at most 253 characters in all. A peer's self-chosen hostname
 * is reduced to this form where it enters (HELLO, PEERS), so no control character, escape sequence or
 * hosts(5) syntax can ride on it into files, logs, hook environments or terminals.
 */

export const MAX_DNS_LABEL = 63;
export const MAX_DNS_NAME = 253;

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** True for one lowercase RFC 1123 label. */
export function isDnsLabel(text: string): boolean {
  return LABEL.test(text);
}

/** True for a lowercase RFC 1123 name: one or more labels joined by dots, at most 253 characters. */
export function isDnsName(text: string): boolean {
  return text.length > 0 && text.length <= MAX_DNS_NAME && text.split('.').every(isDnsLabel);
}

/**
 * One DNS label from free text: lowercase, ASCII letters/digits/hyphens (diacritics stripped, runs of
 * anything else, dots included, become one '-'), no leading or trailing '-', at most 63 characters;
 * '' if nothing is left.
 */
export function dnsLabel(text: string): string {
  let label = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (label.length > MAX_DNS_LABEL) label = label.slice(0, MAX_DNS_LABEL).replace(/-+$/, '');
  return label;
}

/**
 * A hostname reduced to RFC 1123 form: each dot-separated part becomes a label as dnsLabel() makes it,
 * empty labels are dropped, and whole labels are dropped from the end while the name is longer than
 * 253 characters. '' when nothing usable is left.
 */
export function sanitizeHostname(text: string): string {
  const labels = text.split('.').map(dnsLabel).filter((label) => label !== '');
  let name = labels.join('.');
  while (name.length > MAX_DNS_NAME) {
    labels.pop();
    name = labels.join('.');
  }
  return name;
}

/**
 * Names no device may take by its hostname: the loopback names resolvers and Debian's /etc/hosts already
 * use, which programs on every device rely on.
 */
const RESERVED_HOSTNAMES = new Set([
  'localhost', 'localhost6', 'ip6-localhost', 'ip6-loopback', 'ip6-localnet', 'ip6-mcastprefix', 'ip6-allnodes',
  'ip6-allrouters', 'broadcasthost',
]);

/** Claims on a name, strongest (lowest) first. */
export const Rank = {
  /** `<id>.mnedc` of a device ID already in DNS form: that device's alone. */
  CanonicalId: 0,
  /** `<sanitised id>.mnedc` of any other device ID, unless a canonical ID or another device claims it too. */
  SanitisedId: 1,
  /** `<host>.mnedc` and the bare `<host>`, where no ID claims them and no other device's hostname does. */
  Hostname: 2,
} as const;
export type Rank = (typeof Rank)[keyof typeof Rank];

/** The name a device ID gives (without the domain) and how strong its claim is; null when it gives none. */
export function deviceIdName(deviceId: string): { name: string; rank: Rank } | null {
  if (isDnsName(deviceId)) return { name: deviceId, rank: Rank.CanonicalId };
  const name = sanitizeHostname(deviceId);
  return name ? { name, rank: Rank.SanitisedId } : null;
}

/**
 * The one label a hostname may give, or '': the first label of its RFC 1123 form (a host called
 * `kitchen.example.org` is `kitchen` on the overlay), never a reserved loopback name and never all digits
 * (a bare `10` reads as an address to inet_aton).
 */
export function hostnameLabel(hostname: string): string {
  const label = sanitizeHostname(hostname).split('.')[0]!;
  return RESERVED_HOSTNAMES.has(label) || /^[0-9]*$/.test(label) ? '' : label;
}

