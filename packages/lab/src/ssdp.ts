/**
 * A small SSDP (UPnP Device Architecture 1.1, section 1.3) responder and searcher for the lab: enough of
 * the discovery protocol to see whether M-SEARCH multicast and its unicast answers cross a network (the
 * overlay), nothing of description, control or eventing.
 *
 * It runs as a child process inside a namespace (`ip netns exec NS node ssdp.js …`):
 *
 *   node ssdp.js respond --interface-address 10.213.0.1 --usn uuid:… --location http://10.213.0.1:80/desc.xml
 *   node ssdp.js search  --interface-address 10.213.0.2 --st ssdp:all --timeout-ms 3000
 *   … --ipv6 --interface veth-a    (ff02::c on that interface instead of 239.255.255.250)
 *
 * The responder prints `{"event":"ready",…}` once it listens, then one `{"event":"answered",…}` per answer
 * sent; the searcher prints each distinct answer as one JSON line (SsdpAnswer) and exits after the timeout.
 *
 * Responder: a socket on port 1900 of the wildcard address (multicast datagrams are delivered to sockets
 * bound to the wildcard or the group, not to an interface address), joined to the group on the given
 * interface only (addMembership(group, interfaceAddress)). It answers a well-formed M-SEARCH (MAN
 * "ssdp:discover", MX ≥ 1) whose ST is ssdp:all, upnp:rootdevice, its UUID or its device type (same or
 * lower version), after a random delay under MX seconds (MX capped at 5), with a unicast HTTP/1.1 200 OK to
 * the searcher's address and port: CACHE-CONTROL, DATE, EXT, LOCATION, SERVER, ST, USN, BOOTID.UPNP.ORG,
 * CONFIGID.UPNP.ORG. ssdp:all gets one answer per target (root device, UUID, device type).
 * Searcher: a socket on the interface address (its answers' destination), multicast interface and TTL 2
 * (UDA: "SHOULD default to 2") set, M-SEARCH with MX 1 sent `count` times (default 3) spread over the
 * first half of the timeout; answers are collected until the timeout.
 * Both ignore datagrams over 8 KiB and messages with more than 64 header lines; the responder keeps at
 * most 32 answers pending.
 */
import * as dgram from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';
import * as os from 'node:os';

export const SSDP_PORT = 1900;
export const SSDP_IPV4_GROUP = '239.255.255.250';
/** Link-local scope SSDP group. */
export const SSDP_IPV6_GROUP = 'ff02::c';
export const SSDP_MAX_DATAGRAM = 8192;
const MAX_HEADER_LINES = 64;
const MAX_PENDING_ANSWERS = 32;
const DEFAULT_DEVICE_TYPE = 'urn:schemas-upnp-org:device:Basic:1';
/** This file as compiled (dist/src/ssdp.js): what `node` runs inside a namespace. */
export const SSDP_CLI: string = __filename;

const UUID_RE = /^uuid:[A-Za-z0-9][A-Za-z0-9-]{0,127}$/;
const URN_RE = /^urn:([A-Za-z0-9.-]{1,64}):(device|service):([A-Za-z0-9_-]{1,64}):(\d{1,4})$/;
const IFNAME_RE = /^[A-Za-z0-9_.@:-]{1,15}$/;

// ------------------------------------------------------------------------------------------ messages --

export interface SsdpMessage {
  startLine: string;
  /** Header names lower-cased; a repeated header keeps its first value. */
  headers: Map<string, string>;
}

/** Parses an HTTPU message (start line, headers, blank line); undefined if it is not one or too large. */
export function parseSsdp(data: Buffer): SsdpMessage | undefined {
  if (data.length === 0 || data.length > SSDP_MAX_DATAGRAM) return undefined;
  const text = data.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = end >= 0 ? text.slice(0, end) : text.replace(/\r\n$/, '');
  const lines = head.split('\r\n');
  if (lines.length > MAX_HEADER_LINES + 1) return undefined;
  const startLine = lines[0]!;
  if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(startLine)) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) return undefined;
    if (!headers.has(name)) headers.set(name, line.slice(colon + 1).trim());
  }
  return { startLine, headers };
}

function message(startLine: string, headers: Array<[string, string]>): Buffer {
  return Buffer.from(`${startLine}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1');
}

export function serverString(): string {
  return `${os.type()}/${os.release()} UPnP/1.1 mnedc-lab/0.1`;
}

/** An M-SEARCH for `st` (UDA 1.1 1.3.2): HOST, MAN "ssdp:discover", MX, ST, USER-AGENT. */
export function buildMSearch(st: string, mx: number, ipv6 = false): Buffer {
  return message('M-SEARCH * HTTP/1.1', [
    ['HOST', ipv6 ? '[FF02::C]:1900' : `${SSDP_IPV4_GROUP}:${SSDP_PORT}`],
    ['MAN', '"ssdp:discover"'],
    ['MX', String(mx)],
    ['ST', st],
    ['USER-AGENT', serverString()],
  ]);
}

export interface SearchResponseFields {
  st: string;
  usn: string;
  location: string;
  maxAge?: number;
  bootId?: number;
  configId?: number;
  server?: string;
  date?: Date;
}

/** The unicast answer to an M-SEARCH (UDA 1.1 1.3.3). */
export function buildSearchResponse(f: SearchResponseFields): Buffer {
  return message('HTTP/1.1 200 OK', [
    ['CACHE-CONTROL', `max-age=${f.maxAge ?? 1800}`],
    ['DATE', (f.date ?? new Date()).toUTCString()],
    ['EXT', ''],
    ['LOCATION', f.location],
    ['SERVER', f.server ?? serverString()],
    ['ST', f.st],
    ['USN', f.usn],
    ['BOOTID.UPNP.ORG', String(f.bootId ?? 1)],
    ['CONFIGID.UPNP.ORG', String(f.configId ?? 1)],
  ]);
}

/** Search targets of a root device and the USN each is answered with. */
export function searchTargets(uuid: string, deviceType: string): Array<{ st: string; usn: string }> {
  return [
    { st: 'upnp:rootdevice', usn: `${uuid}::upnp:rootdevice` },
    { st: uuid, usn: uuid },
    { st: deviceType, usn: `${uuid}::${deviceType}` },
  ];
}

/**
 * The answers to a search for `st`: all targets for ssdp:all; else the target it names (a device type
 * matches ours of the same or a higher version, answered with the version asked for, UDA 1.1 1.3.2).
 */
export function answersFor(st: string, uuid: string, deviceType: string): Array<{ st: string; usn: string }> {
  const targets = searchTargets(uuid, deviceType);
  if (st === 'ssdp:all') return targets;
  const exact = targets.filter((t) => t.st === st);
  if (exact.length > 0) return exact;
  const asked = URN_RE.exec(st);
  const ours = URN_RE.exec(deviceType);
  if (asked && ours && asked[1] === ours[1] && asked[2] === ours[2] && asked[3] === ours[3] && Number(asked[4]) <= Number(ours[4])) {
    return [{ st, usn: `${uuid}::${st}` }];
  }
  return [];
}

/** A search's MX per UDA 1.1: an integer ≥ 1, values over 5 treated as 5; undefined when invalid. */
export function parseMx(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,3}$/.test(value)) return undefined;
  const mx = Number(value);
  return mx >= 1 ? Math.min(mx, 5) : undefined;
}

function validSearchTarget(st: string): boolean {
  return st === 'ssdp:all' || st === 'upnp:rootdevice' || UUID_RE.test(st) || URN_RE.test(st);
}

// --------------------------------------------------------------------------------------- responder --

export interface RespondOptions {
  /** IPv4: the interface's address (joins the group there). IPv6: optional. */
  interfaceAddress?: string;
  /** IPv6: the interface name (the group's scope). */
  interface?: string;
  ipv6?: boolean;
  /** `uuid:…` */
  usn: string;
  location: string;
  deviceType?: string;
  port?: number;
  maxAge?: number;
  onAnswer?: (event: { to: string; port: number; st: string; usn: string }) => void;
}

export interface SsdpResponder {
  readonly port: number;
  close(): Promise<void>;
}

function validateRespond(o: RespondOptions): void {
  if (!UUID_RE.test(o.usn)) throw new Error(`ssdp: --usn must be uuid:… (got ${JSON.stringify(o.usn)})`);
  let url: URL;
  try {
    url = new URL(o.location);
  } catch {
    throw new Error(`ssdp: bad --location ${JSON.stringify(o.location)}`);
  }
  if (url.protocol !== 'http:' || o.location.length > 512 || /[\s]/.test(o.location)) throw new Error('ssdp: --location must be an http: URL of at most 512 characters');
  if (o.deviceType !== undefined && !URN_RE.test(o.deviceType)) throw new Error(`ssdp: bad --device-type ${JSON.stringify(o.deviceType)}`);
  validateInterface(o);
}

function validateInterface(o: { interfaceAddress?: string; interface?: string; ipv6?: boolean; port?: number }): void {
  if (o.ipv6) {
    if (o.interface === undefined || !IFNAME_RE.test(o.interface)) throw new Error('ssdp: --ipv6 needs --interface NAME');
    if (o.interfaceAddress !== undefined && !isIPv6(o.interfaceAddress.split('%')[0]!)) throw new Error('ssdp: --interface-address must be IPv6 with --ipv6');
  } else if (o.interfaceAddress === undefined || !isIPv4(o.interfaceAddress)) {
    throw new Error('ssdp: --interface-address must be an IPv4 address (or use --ipv6 --interface NAME)');
  }
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)) throw new Error('ssdp: bad --port');
}

function bind(socket: dgram.Socket, port: number, address?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ port, address, exclusive: false }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

export async function ssdpRespond(o: RespondOptions): Promise<SsdpResponder> {
  validateRespond(o);
  const deviceType = o.deviceType ?? DEFAULT_DEVICE_TYPE;
  const socket = dgram.createSocket({ type: o.ipv6 ? 'udp6' : 'udp4', reuseAddr: true, ipv6Only: o.ipv6 === true });
  const port = o.port ?? SSDP_PORT;
  await bind(socket, port, o.ipv6 ? '::' : '0.0.0.0');
  if (o.ipv6) socket.addMembership(SSDP_IPV6_GROUP, `::%${o.interface!}`);
  else socket.addMembership(SSDP_IPV4_GROUP, o.interfaceAddress!);
  const timers = new Set<NodeJS.Timeout>();
  socket.on('error', () => {
    /* a failed send must not end the responder */
  });
  socket.on('message', (data, rinfo) => {
    if (data.length > SSDP_MAX_DATAGRAM) return;
    const msg = parseSsdp(data);
    if (!msg || msg.startLine !== 'M-SEARCH * HTTP/1.1') return;
    if (msg.headers.get('man')?.toLowerCase() !== '"ssdp:discover"') return;
    const mx = parseMx(msg.headers.get('mx'));
    const st = msg.headers.get('st');
    if (mx === undefined || st === undefined || !validSearchTarget(st)) return;
    const answers = answersFor(st, o.usn, deviceType);
    if (answers.length === 0 || timers.size >= MAX_PENDING_ANSWERS) return;
    // UDA: answers are spread over a random delay under MX seconds.
    const timer = setTimeout(() => {
      timers.delete(timer);
      for (const answer of answers) {
        const reply = buildSearchResponse({ ...answer, location: o.location, maxAge: o.maxAge });
        socket.send(reply, rinfo.port, rinfo.address, (err) => {
          if (!err) o.onAnswer?.({ to: rinfo.address, port: rinfo.port, st: answer.st, usn: answer.usn });
        });
      }
    }, Math.floor(Math.random() * mx * 1000 * 0.9));
    timers.add(timer);
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        socket.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------- searcher --

export interface SearchOptions {
  /** IPv4: the address to send from and receive answers on. IPv6: optional (default: any). */
  interfaceAddress?: string;
  interface?: string;
  ipv6?: boolean;
  st?: string;
  timeoutMs: number;
  /** M-SEARCH transmissions (1 to 10, default 3). */
  count?: number;
  /** The port searched (default 1900). */
  port?: number;
  onAnswer?: (answer: SsdpAnswer) => void;
}

export interface SsdpAnswer {
  /** Who answered (for IPv6 link-local with its `%interface` scope). */
  address: string;
  port: number;
  st: string;
  usn: string;
  location: string;
  server: string;
  cacheControl: string;
  ext: boolean;
  bootId?: string;
}

/** An answer to an M-SEARCH, or undefined if it is not a valid one (UDA: ST, USN, LOCATION, EXT present). */
export function parseSearchResponse(data: Buffer, from: { address: string; port: number }): SsdpAnswer | undefined {
  const msg = parseSsdp(data);
  if (!msg || !/^HTTP\/1\.1 200\b/.test(msg.startLine)) return undefined;
  const h = msg.headers;
  const st = h.get('st');
  const usn = h.get('usn');
  const location = h.get('location');
  if (!st || !usn || !location || !h.has('ext')) return undefined;
  const answer: SsdpAnswer = {
    address: from.address,
    port: from.port,
    st,
    usn,
    location,
    server: h.get('server') ?? '',
    cacheControl: h.get('cache-control') ?? '',
    ext: true,
  };
  const bootId = h.get('bootid.upnp.org');
  if (bootId !== undefined) answer.bootId = bootId;
  return answer;
}

export async function ssdpSearch(o: SearchOptions): Promise<SsdpAnswer[]> {
  validateInterface(o);
  const st = o.st ?? 'ssdp:all';
  if (!validSearchTarget(st)) throw new Error(`ssdp: bad --st ${JSON.stringify(st)}`);
  if (!Number.isInteger(o.timeoutMs) || o.timeoutMs < 100 || o.timeoutMs > 60_000) throw new Error('ssdp: --timeout-ms must be 100 to 60000');
  const count = o.count ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > 10) throw new Error('ssdp: --count must be 1 to 10');
  const port = o.port ?? SSDP_PORT;
  const socket = dgram.createSocket({ type: o.ipv6 ? 'udp6' : 'udp4', ipv6Only: o.ipv6 === true });
  const answers: SsdpAnswer[] = [];
  const seen = new Set<string>();
  const timers: NodeJS.Timeout[] = [];
  try {
    await bind(socket, 0, o.ipv6 ? (o.interfaceAddress ?? '::') : o.interfaceAddress);
    socket.setMulticastInterface(o.ipv6 ? `::%${o.interface!}` : o.interfaceAddress!);
    socket.setMulticastTTL(2);
    socket.on('message', (data, rinfo) => {
      if (data.length > SSDP_MAX_DATAGRAM || answers.length >= 1000) return;
      const answer = parseSearchResponse(data, rinfo);
      if (!answer) return;
      const key = `${answer.address}|${answer.st}|${answer.usn}`;
      if (seen.has(key)) return;
      seen.add(key);
      answers.push(answer);
      o.onAnswer?.(answer);
    });
    const sendErrors: Error[] = [];
    socket.on('error', (e) => sendErrors.push(e));
    const request = buildMSearch(st, 1, o.ipv6);
    const destination = o.ipv6 ? `${SSDP_IPV6_GROUP}%${o.interface!}` : SSDP_IPV4_GROUP;
    const spacing = Math.floor(o.timeoutMs / 2 / count);
    for (let i = 0; i < count; i++) {
      timers.push(setTimeout(() => socket.send(request, port, destination, (err) => err && sendErrors.push(err)), i * spacing));
    }
    await new Promise((resolve) => timers.push(setTimeout(resolve, o.timeoutMs)));
    if (answers.length === 0 && sendErrors.length > 0) throw new Error(`ssdp: sending M-SEARCH failed: ${sendErrors[0]!.message}`);
    return answers;
  } finally {
    timers.forEach(clearTimeout);
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}

// --------------------------------------------------------------------------------------------- CLI --

const USAGE = `usage:
  node ssdp.js respond --interface-address A --usn uuid:… --location http://A:80/desc.xml [--device-type urn:…] [--port N]
  node ssdp.js search  --interface-address A [--st ssdp:all] --timeout-ms N [--count N] [--port N]
  (IPv6: --ipv6 --interface IFNAME [--interface-address ADDR])`;

const VALUE_OPTIONS = new Set(['interface-address', 'interface', 'usn', 'location', 'device-type', 'port', 'st', 'timeout-ms', 'count', 'max-age']);

export function parseArgs(argv: string[]): { command: string; values: Map<string, string>; ipv6: boolean } {
  const [command, ...rest] = argv;
  if (command !== 'respond' && command !== 'search') throw new Error(USAGE);
  const values = new Map<string, string>();
  let ipv6 = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === '--ipv6') {
      ipv6 = true;
      continue;
    }
    const name = arg.startsWith('--') ? arg.slice(2) : '';
    if (!VALUE_OPTIONS.has(name) || i + 1 >= rest.length) throw new Error(`ssdp: bad argument ${JSON.stringify(arg)}\n${USAGE}`);
    if (values.has(name)) throw new Error(`ssdp: --${name} given twice`);
    values.set(name, rest[++i]!);
  }
  return { command, values, ipv6 };
}

function intOption(values: Map<string, string>, name: string): number | undefined {
  const v = values.get(name);
  if (v === undefined) return undefined;
  if (!/^\d{1,6}$/.test(v)) throw new Error(`ssdp: --${name} must be an integer`);
  return Number(v);
}

function print(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

export async function main(argv: string[]): Promise<number> {
  const { command, values, ipv6 } = parseArgs(argv);
  const common = { interfaceAddress: values.get('interface-address'), interface: values.get('interface'), ipv6, port: intOption(values, 'port') };
  if (command === 'respond') {
    const responder = await ssdpRespond({
      ...common,
      usn: values.get('usn') ?? '',
      location: values.get('location') ?? '',
      deviceType: values.get('device-type'),
      maxAge: intOption(values, 'max-age'),
      onAnswer: (e) => print({ event: 'answered', ...e }),
    });
    print({ event: 'ready', port: responder.port, group: ipv6 ? SSDP_IPV6_GROUP : SSDP_IPV4_GROUP, interface: common.interface ?? common.interfaceAddress });
    await new Promise<void>((resolve) => {
      const stop = (): void => resolve();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    await responder.close();
    return 0;
  }
  const timeoutMs = intOption(values, 'timeout-ms');
  if (timeoutMs === undefined) throw new Error('ssdp: search needs --timeout-ms');
  await ssdpSearch({ ...common, st: values.get('st'), timeoutMs, count: intOption(values, 'count'), onAnswer: print });
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: Error) => {
      process.stderr.write(`${e.message}\n`);
      process.exitCode = 2;
    },
  );
}
