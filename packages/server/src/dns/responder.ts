import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Logger } from '@mnedc/common';
import { answerDns, DNS_HEADER_BYTES, DNS_TCP_MAX, DNS_UDP_MAX, DnsNames, inSubnet, intToIpv4, ipv4ToInt, isIpv4, type DnsOutcome, type DnsZone, type Subnet } from '@mnedc/protocol';
import type { LocalUdpService } from '../dataplane/target';
import { KeyedRate, type Rate } from '../handshake/rate';

export interface DnsCounters {
  /** Messages received, UDP and TCP. */
  queries: number;
  /** NOERROR answers: an address, a name, or none of the type asked (NODATA). */
  answers: number;
  nxdomain: number;
  /** Malformed queries, answered FORMERR. */
  formerr: number;
  /** Names outside the domain and the overlay's reverse names (we are no recursive resolver). */
  refused: number;
  notimp: number;
  /** Not answered: unreadable header, a response, a source outside the overlay, too many answers unsent. */
  dropped: number;
  /** UDP queries over a source's rate. */
  rateLimited: number;
  /** TCP connections closed at once because the cap was reached. */
  tcpRefused: number;
}

export const newDnsCounters = (): DnsCounters => ({
  queries: 0, answers: 0, nxdomain: 0, formerr: 0, refused: 0, notimp: 0, dropped: 0, rateLimited: 0, tcpRefused: 0,
});

export interface DnsLimits {
  /** UDP queries per second per source address, and the burst. */
  perSource: Rate;
  tcpConnections: number;
  tcpIdleMs: number;
  /** UDP answers handed to the kernel but not yet sent; beyond this, queries are dropped. */
  queuedAnswers: number;
}

/** A device's resolver asks a few names a second; a hundred a second is a script, and ten times that a flood. */
export const DNS_LIMITS: DnsLimits = { perSource: { perSecond: 100, burst: 200 }, tcpConnections: 64, tcpIdleMs: 10_000, queuedAnswers: 1024 };

/** What a TCP connection may leave unread before it is closed: a few maximal answers. */
const TCP_UNREAD_MAX = 4 * (DNS_TCP_MAX + 2);

export interface DnsResponderOptions {
  /** The relay's overlay address: the only one it listens on, so the underlay never gets answers. */
  host: string;
  port: number;
  domain: string;
  subnet: Subnet;
  /** The network's IPv6 /64, for AAAA answers; absent without IPv6. */
  prefix6?: Buffer;
  log: Logger;
  limits?: DnsLimits;
}

/**
 * The relay's DNS server on the overlay: UDP and TCP on the relay's overlay address, answering from the
 * names of the devices connected now (`names`, kept current by the caller) and nothing else.
 */
export class DnsResponder implements LocalUdpService {
  readonly names = new DnsNames();
  readonly counters = newDnsCounters();
  private readonly zone: DnsZone;
  private readonly rate: KeyedRate;
  private readonly limits: DnsLimits;
  private udp: UdpSocket | null = null;
  private tcp: TcpServer | null = null;
  private readonly connections = new Set<Socket>();
  private unsent = 0;
  private sweeper: NodeJS.Timeout | null = null;
  /** The UDP port bound, kept: the data plane asks for it on every packet to the relay's address. */
  private boundPort = 0;

  constructor(private readonly options: DnsResponderOptions) {
    this.limits = options.limits ?? DNS_LIMITS;
    this.rate = new KeyedRate(this.limits.perSource);
    const names = this.names;
    this.zone = {
      domain: options.domain.split('.'), subnet: options.subnet,
      resolve: (name) => names.resolve(name), nameOf: (ip) => names.nameOf(ip),
      ...(options.prefix6 ? { prefix6: options.prefix6 } : {}),
    };
  }

  get domain(): string {
    return this.options.domain;
  }

  async start(): Promise<void> {
    const { host, port } = this.options;
    const udp = createSocket({ type: 'udp4' });
    this.udp = udp;
    udp.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo.address, rinfo.port));
    udp.on('error', (err) => this.options.log.warn({ err }, `DNS (UDP): ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind({ address: host, port, exclusive: true }, () => { udp.off('error', reject); resolve(); });
    });
    const tcp = createServer((socket) => this.onConnection(socket));
    this.tcp = tcp;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      // Port 0 (tests): TCP on the port the kernel gave UDP, as resolvers expect both on one port.
      tcp.listen({ host, port: port || udp.address().port, exclusive: true }, () => { tcp.off('error', reject); resolve(); });
    });
    tcp.on('error', (err) => this.options.log.warn({ err }, `DNS (TCP): ${err.message}`));
    this.boundPort = udp.address().port;
    this.sweeper = setInterval(() => this.rate.sweep(), 10_000);
    this.sweeper.unref();
  }

  /** The UDP port bound (tests bind port 0). */
  get port(): number {
    return this.boundPort;
  }

  close(): void {
    this.boundPort = 0;
    if (this.sweeper) clearInterval(this.sweeper);
    this.udp?.close();
    this.udp = null;
    this.tcp?.close();
    this.tcp = null;
    for (const socket of this.connections) socket.destroy();
  }

  /** Queries from outside the overlay are not ours to answer, even when the kernel routes them here. */
  private fromOverlay(address: string): boolean {
    return isIpv4(address) && inSubnet(ipv4ToInt(address), this.options.subnet.network, this.options.subnet.prefix);
  }

  private count(outcome: DnsOutcome): void {
    const key = outcome === 'answer' ? 'answers' : outcome;
    this.counters[key]++;
  }

  private onDatagram(msg: Buffer, address: string, port: number): void {
    // Port 0 (a crafted datagram, fragmented past the data plane's shortcut) cannot be answered: send throws.
    if (this.unsent >= this.limits.queuedAnswers || port === 0) {
      this.counters.queries++;
      this.counters.dropped++;
      return;
    }
    const reply = this.answerUdp(address, msg);
    if (!reply || !this.udp) return;
    this.unsent++;
    try {
      this.udp.send(reply, port, address, () => { this.unsent--; });
    } catch (err) {
      // Whatever a datagram's sender makes send refuse, it must not reach the event loop: that ends the relay.
      this.unsent--;
      this.counters.dropped++;
      this.options.log.debug({ err, address, port }, `DNS (UDP): cannot answer ${address}:${port}: ${(err as Error).message}`);
    }
  }

  /**
   * A query that reached the relay over the overlay without its kernel (DataPlane.serve): the same
   * answer, rate and counters as one on the UDP socket. The reply's payload, or null for none.
   */
  answer(sourceIp: number, query: Buffer): Buffer | null {
    if (this.boundPort === 0) return null;
    return this.answerUdp(intToIpv4(sourceIp), query);
  }

  private answerUdp(address: string, msg: Buffer): Buffer | null {
    this.counters.queries++;
    if (!this.fromOverlay(address)) {
      this.counters.dropped++;
      return null;
    }
    if (!this.rate.take(address).ok) {
      this.counters.rateLimited++;
      return null;
    }
    // A query over 512 bytes is none a stub resolver sends: its header alone is read, and earns FORMERR.
    const result = answerDns(msg.length > DNS_UDP_MAX ? msg.subarray(0, DNS_HEADER_BYTES) : msg, this.zone, 'udp');
    this.count(result.outcome);
    return result.reply;
  }

  private onConnection(socket: Socket): void {
    if (this.connections.size >= this.limits.tcpConnections || !this.fromOverlay(socket.remoteAddress ?? '')) {
      this.counters.tcpRefused++;
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.setTimeout(this.limits.tcpIdleMs, () => socket.destroy());
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const msg = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        this.counters.queries++;
        const result = answerDns(msg, this.zone, 'tcp');
        this.count(result.outcome);
        // An unreadable message leaves no way to answer, or to trust the framing after it.
        if (!result.reply) {
          socket.destroy();
          return;
        }
        const frame = Buffer.alloc(2 + result.reply.length);
        frame.writeUInt16BE(result.reply.length, 0);
        result.reply.copy(frame, 2);
        socket.write(frame);
        if (socket.writableLength > TCP_UNREAD_MAX) {
          socket.destroy();
          return;
        }
      }
      // Copy the remainder out so a slow sender cannot pin every chunk it ever sent.
      if (buffered.length > 0) buffered = Buffer.from(buffered);
    });
  }
}
