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
