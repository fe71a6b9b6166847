import { inSubnet, intToIpv4, ipv4ToInt, isIpv4, isUnicast, prefixMask } from './ipv4';
import { MULTICAST_GROUPS, type MulticastGroup } from './multicast';
import { formatIpv6, parseIpv6 } from './ipv6';
import { isDnsName, MAX_DNS_NAME, sanitizeHostname } from './names';
import { ProtocolError } from './wire';

/** Limits on what a peer may claim about itself; they bound memory per session and per peer entry. */
export const LIMITS = {
  deviceIdLength: 128,
  hostnameLength: 253,
  underlayAddresses: 16,
  addressLength: 45,
  reasonLength: 512,
  capabilities: 32,
  capabilityLength: 64,
} as const;

export const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;

export interface Hello {
  version: number;
  deviceId: string;
  /** Reduced to RFC 1123 form by the parser (names.ts sanitizeHostname); '' when nothing usable was sent. */
  hostname: string;
  /** The device's own (private, possibly duplicated across NATs) underlay addresses, for discovery. */
  underlay: string[];
  /** The virtual IP the device had before, which the server gives back when it is free. */
  previousIp?: string;
  /** Reserved for the authentication layer; opaque here. */
  auth?: Record<string, unknown>;
  software?: string;
  capabilities: string[];
  /** Which peer push the device wants (wire.ts, DISCOVERY); absent (older clients) = 'full'. */
  discovery?: DiscoveryRequest;
}

/** What a client asks for: 'auto' lets the relay choose by the size of its network. */
export type DiscoveryRequest = 'auto' | DiscoveryMode;
/** What the relay grants: the peer list pushed (full), none (names: DNS on the overlay; off). */
export type DiscoveryMode = 'full' | 'names' | 'off';
export const DISCOVERY_REQUESTS: readonly DiscoveryRequest[] = ['auto', 'full', 'names', 'off'];
export const DISCOVERY_MODES: readonly DiscoveryMode[] = ['full', 'names', 'off'];

export interface Welcome {
  ip: string;
  prefix: number;
  mtu: number;
  serverIp: string;
  keepaliveMs: number;
  deadAfterMs: number;
  /** What the server takes from HELLO.capabilities (wire.ts, OFFLOADS); absent from older servers. */
  capabilities: string[];
  /**
   * The domain the relay answers DNS for on serverIp (port 53), RFC 1123 form; absent when it answers
   * none (no interface, [dns] enabled = no, or a relay older than DNS).
   */
  dnsDomain?: string;
  /** The peer push the relay granted; absent from older relays (which push the full list to everyone). */
  discovery?: DiscoveryMode;
  /**
   * The relays of the cluster now, host:port (IPv6 as [addr]:port), at most MAX_WELCOME_RELAYS: where the
   * device may go when this relay is lost. Absent from a single relay.
   */
  relays?: string[];
  /** The groups the relay fans out (multicast.ts); absent: none (off, or a relay older than multicast). */
  multicast?: MulticastGroup[];
  /**
   * The device's IPv6 address in the network's unique local /64 (ipv6.ts), its interface ID the IPv4
   * lease; absent: no IPv6 (ipv6 = no, or an older relay).
   */
  ip6?: string;
}

export const MAX_WELCOME_RELAYS = 32;
/** host:port as relays advertise it: a name or IPv4 address, or [IPv6]; a port 1..65535 checked by the reader. */
export const RELAY_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;
/** A DNS name of 255 characters, a colon and a port. */
export const MAX_RELAY_ADDRESS = 261;

/** Whether a relay may name `text` in WELCOME.relays. */
export function isRelayAddress(text: string): boolean {
  return text.length <= MAX_RELAY_ADDRESS && RELAY_ADDRESS.test(text);
}

export type RejectCode = 'version' | 'bad-hello' | 'pool-full' | 'auth' | 'busy' | 'forbidden';

export interface Reject {
  code: RejectCode;
  reason: string;
  /** A hint for the client's next attempt; absent means its normal backoff. */
  retryAfterMs?: number;
}

export interface PeerInfo {
  deviceId: string;
  ip: string;
  /** As in Hello: RFC 1123 form or ''. */
  hostname: string;
  underlay: string[];
  /** Epoch milliseconds since which the peer is connected. */
  since: number;
}

export interface PeerUpdate {
  /** True on the first frame of a snapshot: forget every peer known so far, then apply. */
  reset: boolean;
  /** True while further frames of the same snapshot follow. */
  more: boolean;
  up: PeerInfo[];
  /** Device IDs that left. */
  down: string[];
}

export type GoodbyeCode = 'shutdown' | 'replaced' | 'kicked' | 'dead' | 'protocol';

export interface Goodbye {
  code: GoodbyeCode;
  reason: string;
  /** When the sender expects to be back (server restart), so clients reconnect promptly. */
  reconnectMs?: number;
}

export function decodeJson(payload: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new ProtocolError('bad-json', `${what}: payload is not JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('bad-json', `${what}: payload is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Field readers that throw a ProtocolError naming the message and the field. */
export class Fields {
  constructor(private readonly what: string, private readonly obj: Record<string, unknown>) {}

  fail(field: string, problem: string): never {
    throw new ProtocolError('bad-message', `${this.what}.${field}: ${problem}`);
  }

  has(field: string): boolean {
    return this.obj[field] !== undefined && this.obj[field] !== null;
  }

  string(field: string, max: number, pattern?: RegExp): string {
    const v = this.obj[field];
    if (typeof v !== 'string') this.fail(field, 'must be a string');
    if (v.length > max) this.fail(field, `longer than ${max} characters`);
    if (pattern && !pattern.test(v)) this.fail(field, `invalid value ${JSON.stringify(v.slice(0, 40))}`);
    return v;
  }

  int(field: string, min: number, max: number): number {
    const v = this.obj[field];
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, 'must be an integer');
    if (v < min || v > max) this.fail(field, `${v} is outside ${min}..${max}`);
    return v;
  }

  bool(field: string): boolean {
    const v = this.obj[field];
    if (typeof v !== 'boolean') this.fail(field, 'must be true or false');
    return v;
  }

  ipv4(field: string): string {
    const v = this.string(field, 15);
    if (!isIpv4(v)) this.fail(field, `${JSON.stringify(v)} is not an IPv4 address`);
    return v;
  }

  stringList(field: string, maxItems: number, maxLength: number, pattern?: RegExp): string[] {
    const v = this.has(field) ? this.obj[field] : [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    if (v.length > maxItems) this.fail(field, `more than ${maxItems} entries`);
    return v.map((item, i) => {
      if (typeof item !== 'string' || item.length > maxLength || (pattern && !pattern.test(item))) {
        this.fail(`${field}[${i}]`, 'invalid entry');
      }
      return item;
    });
  }

  list(field: string): unknown[] {
    const v = this.has(field) ? this.obj[field] : [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }

  object(field: string): Record<string, unknown> {
    const v = this.obj[field];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'must be an object');
    return v as Record<string, unknown>;
  }
}

const ADDRESS = /^[0-9A-Fa-f.:]+$/;

/** An underlay address as HELLO and PEERS may carry it (IPv4 or IPv6 text, at most LIMITS.addressLength). */
export function isUnderlayAddress(text: string): boolean {
  return text.length > 0 && text.length <= LIMITS.addressLength && ADDRESS.test(text);
}
export const CAPABILITY = /^[a-z0-9-]+$/;

export function parseHello(payload: Buffer): Hello {
  const f = new Fields('HELLO', decodeJson(payload, 'HELLO'));
  const hello: Hello = {
    version: f.int('version', 0, 0xffff),
    deviceId: f.string('deviceId', LIMITS.deviceIdLength, DEVICE_ID),
    hostname: f.has('hostname') ? sanitizeHostname(f.string('hostname', LIMITS.hostnameLength)) : '',
    underlay: f.stringList('underlay', LIMITS.underlayAddresses, LIMITS.addressLength, ADDRESS),
    capabilities: f.stringList('capabilities', LIMITS.capabilities, LIMITS.capabilityLength, CAPABILITY),
  };
  if (f.has('previousIp')) hello.previousIp = f.ipv4('previousIp');
  if (f.has('auth')) hello.auth = f.object('auth');
  if (f.has('software')) hello.software = f.string('software', 128);
  if (f.has('discovery')) {
    const mode = f.string('discovery', 16);
    if (!(DISCOVERY_REQUESTS as readonly string[]).includes(mode)) f.fail('discovery', `${JSON.stringify(mode)} is not one of ${DISCOVERY_REQUESTS.join(', ')}`);
    hello.discovery = mode as DiscoveryRequest;
  }
  return hello;
}

/** Overlay prefix lengths a relay may use and a client accepts: a /16 holds 65,533 devices, a /30 one. */
export const OVERLAY_PREFIX = { min: 16, max: 30 } as const;

/**
 * The client acts on a WELCOME as root would: it puts the address and its prefix route on the TUN. So a
 * WELCOME is held to what a relay can legitimately say: a subnet the relay could be configured with, the
 * device and the relay as two distinct host addresses inside it, timers a session can live with.
 */
export function parseWelcome(payload: Buffer): Welcome {
  const f = new Fields('WELCOME', decodeJson(payload, 'WELCOME'));
  const welcome: Welcome = {
    ip: f.ipv4('ip'),
    prefix: f.int('prefix', OVERLAY_PREFIX.min, OVERLAY_PREFIX.max),
    mtu: f.int('mtu', 576, 65535),
    serverIp: f.ipv4('serverIp'),
    keepaliveMs: f.int('keepaliveMs', 100, 600_000),
    deadAfterMs: f.int('deadAfterMs', 200, 3_600_000),
    capabilities: f.stringList('capabilities', LIMITS.capabilities, LIMITS.capabilityLength, CAPABILITY),
  };
  if (f.has('dnsDomain')) {
    // The client hands it to resolved as a routing domain: only a plain name may get there.
    const domain = f.string('dnsDomain', MAX_DNS_NAME);
    if (!isDnsName(domain)) f.fail('dnsDomain', `${JSON.stringify(domain.slice(0, 64))} is not a lowercase DNS name`);
    welcome.dnsDomain = domain;
  }
  if (f.has('relays')) welcome.relays = f.stringList('relays', MAX_WELCOME_RELAYS, MAX_RELAY_ADDRESS, RELAY_ADDRESS);
  // Groups a newer relay may add are left out: the device then routes only what it knows.
  if (f.has('multicast')) {
    const groups = f.stringList('multicast', LIMITS.capabilities, LIMITS.capabilityLength, CAPABILITY);
    welcome.multicast = MULTICAST_GROUPS.filter((group) => groups.includes(group));
  }
  // A mode this version does not know (a newer relay) is left out: the client then takes PEERS as they come.
  if (f.has('discovery')) {
    const mode = f.string('discovery', 16);
    if ((DISCOVERY_MODES as readonly string[]).includes(mode)) welcome.discovery = mode as DiscoveryMode;
  }
  const ip = ipv4ToInt(welcome.ip);
  if (f.has('ip6')) {
    // Put on the TUN as root would: only a unique local address that maps to the lease itself.
    const text = f.string('ip6', 45);
    const address = parseIpv6(text);
    if (address === null || address[0] !== 0xfd || address.readUInt32BE(8) !== 0 || address.readUInt32BE(12) !== ip) {
      return f.fail('ip6', `${JSON.stringify(text)} is not the address in fd00::/8 that carries ${welcome.ip} in its last 32 bits`);
    }
    welcome.ip6 = formatIpv6(address);
  }
  const mask = prefixMask(welcome.prefix);
  const network = (ip & mask) >>> 0;
  const broadcast = (network | ~mask) >>> 0;
  const subnet = `${intToIpv4(network)}/${welcome.prefix}`;
  if (!isUnicast(ip)) f.fail('ip', `${welcome.ip} is not a unicast address`);
  if (ip === network || ip === broadcast) f.fail('ip', `${welcome.ip} is the network or broadcast address of ${subnet}`);
  const server = ipv4ToInt(welcome.serverIp);
  if (!inSubnet(server, network, welcome.prefix)) f.fail('serverIp', `${welcome.serverIp} is outside the announced subnet ${subnet}`);
  if (server === network || server === broadcast || server === ip) f.fail('serverIp', `${welcome.serverIp} cannot be the relay's address in ${subnet} next to ${welcome.ip}`);
  if (welcome.deadAfterMs < 2 * welcome.keepaliveMs) f.fail('deadAfterMs', `${welcome.deadAfterMs} is less than twice keepaliveMs (${welcome.keepaliveMs})`);
  return welcome;
}

const REJECT_CODES: readonly RejectCode[] = ['version', 'bad-hello', 'pool-full', 'auth', 'busy', 'forbidden'];

export function parseReject(payload: Buffer): Reject {
  const f = new Fields('REJECT', decodeJson(payload, 'REJECT'));
  const code = f.string('code', 32);
  const reject: Reject = {
    // A code this version does not know still carries a reason worth showing.
    code: (REJECT_CODES as readonly string[]).includes(code) ? (code as RejectCode) : 'forbidden',
    reason: f.string('reason', LIMITS.reasonLength),
  };
  if (f.has('retryAfterMs')) reject.retryAfterMs = f.int('retryAfterMs', 0, 3_600_000);
  return reject;
}

function parsePeer(value: unknown, index: number): PeerInfo {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('bad-message', `PEERS.up[${index}]: must be an object`);
  }
  const f = new Fields(`PEERS.up[${index}]`, value as Record<string, unknown>);
  return {
    deviceId: f.string('deviceId', LIMITS.deviceIdLength, DEVICE_ID),
    ip: f.ipv4('ip'),
    hostname: f.has('hostname') ? sanitizeHostname(f.string('hostname', LIMITS.hostnameLength)) : '',
    underlay: f.stringList('underlay', LIMITS.underlayAddresses, LIMITS.addressLength, ADDRESS),
    since: f.int('since', 0, Number.MAX_SAFE_INTEGER),
  };
}

export function parsePeerUpdate(payload: Buffer): PeerUpdate {
  const f = new Fields('PEERS', decodeJson(payload, 'PEERS'));
  return {
    reset: f.has('reset') ? f.bool('reset') : false,
    more: f.has('more') ? f.bool('more') : false,
    up: f.list('up').map(parsePeer),
    down: f.stringList('down', Number.MAX_SAFE_INTEGER, LIMITS.deviceIdLength, DEVICE_ID),
  };
}

const GOODBYE_CODES: readonly GoodbyeCode[] = ['shutdown', 'replaced', 'kicked', 'dead', 'protocol'];

export function parseGoodbye(payload: Buffer): Goodbye {
  const f = new Fields('GOODBYE', decodeJson(payload, 'GOODBYE'));
  const code = f.string('code', 32);
  const goodbye: Goodbye = {
    code: (GOODBYE_CODES as readonly string[]).includes(code) ? (code as GoodbyeCode) : 'shutdown',
    reason: f.string('reason', LIMITS.reasonLength),
  };
  if (f.has('reconnectMs')) goodbye.reconnectMs = f.int('reconnectMs', 0, 3_600_000);
  return goodbye;
}

export function isValidDeviceId(id: string): boolean {
  return id.length > 0 && id.length <= LIMITS.deviceIdLength && DEVICE_ID.test(id);
}
