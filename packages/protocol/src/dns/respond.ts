import { inSubnet } from '../ipv4';
import { mappedAddress } from '../ipv6';
import {
  DNS_MAX_NAME_WIRE, DnsClass, DnsFormatError, DnsRcode, DnsType, encodeDnsError, encodeDnsReply, parseDnsQuery, readDnsHeader,
  type DnsQuery, type DnsReply,
} from './codec';

/**
 * Five seconds: answers come from memory, so asking again is cheap, while a cached answer outlives a
 * change of the name (a device forgotten and its name or address given to another; a hostname that
 * stops being unique) by up to the TTL. Negative answers carry no SOA, so nobody caches them (RFC 2308
 * §5): a device that joins a moment after a miss resolves at once.
 */
export const DNS_TTL_SECONDS = 5;

/** What the responder answers for: the domain's names and the overlay's reverse names. */
export interface DnsZone {
  /** Lowercase labels of the domain, e.g. ['mnedc']. */
  domain: readonly string[];
  subnet: { network: number; prefix: number };
  /** Address of a name relative to the domain (lowercase, dotted). */
  resolve(name: string): number | undefined;
  /** The relative name of an overlay address. */
  nameOf(ip: number): string | undefined;
  /** The network's IPv6 /64 (8 bytes, ipv6.ts): AAAA answers map each IPv4 lease into it. Absent: no AAAA. */
  prefix6?: Uint8Array;
}

export type DnsOutcome = 'answer' | 'nxdomain' | 'formerr' | 'refused' | 'notimp' | 'dropped';

export interface DnsResult {
  /** Null: no reply at all (the header was unreadable, or it was a response, not a query). */
  reply: Buffer | null;
  outcome: DnsOutcome;
  /** Why a query was malformed, for a debug log. */
  error?: string;
}

const lower = (label: string): string => label.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** Decimal 0..255 without leading zeros, as reverse names write octets. */
const OCTET = /^(?:0|[1-9][0-9]{0,2})$/;

function reverseIp(labels: readonly string[]): number | undefined {
  if (labels.length !== 6 || labels[4] !== 'in-addr' || labels[5] !== 'arpa') return undefined;
  let ip = 0;
  for (let i = 3; i >= 0; i--) {
    const label = labels[i]!;
    if (!OCTET.test(label) || Number(label) > 255) return undefined;
    ip = ip * 256 + Number(label);
  }
  return ip;
}

function decide(query: DnsQuery, zone: DnsZone): DnsReply {
  const { type } = query.question;
  const refused: DnsReply = { rcode: DnsRcode.Refused, aa: false, answers: [], ttl: 0 };
  if (query.question.class !== DnsClass.IN && query.question.class !== DnsClass.ANY) return refused;
  // No zone transfers: the names are not secret, but a transfer is no lookup and costs O(devices).
  if (type === DnsType.AXFR || type === DnsType.IXFR) return refused;
  const labels = query.question.labels.map(lower);
  const { domain } = zone;
  const inDomain = labels.length >= domain.length && domain.every((label, i) => labels[labels.length - domain.length + i] === label);
  if (inDomain) {
    const relative = labels.slice(0, labels.length - domain.length);
    // A label holding a dot can never be a device's name; joining would make it look like one.
    const ip = relative.length === 0 || relative.some((l) => l.includes('.')) ? undefined : zone.resolve(relative.join('.'));
    if (ip === undefined) {
      return { rcode: relative.length === 0 ? DnsRcode.NoError : DnsRcode.NXDomain, aa: true, answers: [], ttl: 0 };
    }
    const answers: DnsReply['answers'] = type === DnsType.A || type === DnsType.ANY ? [{ type: DnsType.A, ip }] : [];
    if (zone.prefix6 && (type === DnsType.AAAA || type === DnsType.ANY)) answers.push({ type: DnsType.AAAA, address: mappedAddress(zone.prefix6, ip) });
    return { rcode: DnsRcode.NoError, aa: true, answers, ttl: DNS_TTL_SECONDS };
  }
  const ip = reverseIp(labels);
  if (ip === undefined || !inSubnet(ip, zone.subnet.network, zone.subnet.prefix)) return refused;
  const name = zone.nameOf(ip);
  const target = name === undefined ? [] : [...name.split('.'), ...domain];
  // A long device name under a long configured domain can pass DNS's 255 octets: no such name can exist.
  if (name === undefined || target.reduce((wire, label) => wire + 1 + label.length, 1) > DNS_MAX_NAME_WIRE) {
    return { rcode: DnsRcode.NXDomain, aa: true, answers: [], ttl: 0 };
  }
  const answers = type === DnsType.PTR || type === DnsType.ANY ? [{ type: DnsType.PTR, target } as const] : [];
  return { rcode: DnsRcode.NoError, aa: true, answers, ttl: DNS_TTL_SECONDS };
}

/**
 * One query in, its answer out. We are no recursive resolver: names outside the zone are REFUSED.
 * `maxBytes`: 512 over UDP without EDNS, the requester's EDNS size (capped) with it, 65,535 over TCP.
 * Never throws: every malformed query past a readable header gets FORMERR.
 */
export function answerDns(packet: Buffer, zone: DnsZone, transport: 'udp' | 'tcp'): DnsResult {
  const header = readDnsHeader(packet);
  // A response (QR) is never answered, so two responders cannot bounce messages between them.
  if (!header || (header.flags & 0x8000) !== 0) return { reply: null, outcome: 'dropped' };
  const opcode = (header.flags >> 11) & 0xf;
  if (opcode !== 0) return { reply: encodeDnsError(header.id, header.flags, DnsRcode.NotImp), outcome: 'notimp' };
  let query: DnsQuery;
  try {
    query = parseDnsQuery(packet);
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw err;
    return { reply: encodeDnsError(header.id, header.flags, DnsRcode.FormErr), outcome: 'formerr', error: err.message };
  }
  const maxBytes = transport === 'tcp' ? 65_535 : Math.min(Math.max(query.edns?.udpSize ?? 512, 512), 1232);
  if (query.edns && query.edns.version > 0) {
    // BADVERS (RFC 6891 6.1.3): upper bits in our OPT record, lower bits (0) in the header.
    return { reply: encodeDnsReply(query, { rcode: DnsRcode.NoError, aa: false, answers: [], ttl: 0 }, maxBytes, true), outcome: 'formerr' };
  }
  const reply = decide(query, zone);
  const outcome: DnsOutcome = reply.rcode === DnsRcode.Refused ? 'refused' : reply.rcode === DnsRcode.NXDomain ? 'nxdomain' : 'answer';
  return { reply: encodeDnsReply(query, reply, maxBytes), outcome };
}
