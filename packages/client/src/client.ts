import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { performance } from 'node:perf_hooks';
import { formatHostPort, RateLimitedWarning, type Logger } from '@mnedc/common';
import {
  CAPABILITY_GSO, checkOffloadPacket, encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, frameName, GSO_HEADER_BYTES,
  HANDSHAKE_TIMEOUT_MS, HEADER_BYTES, MAX_GSO_PAYLOAD, MIN_IPV4_PACKET, parseGoodbye, parsePeerUpdate, parseReject,
  inSubnet, ipv4ToInt, isIpv4, parseWelcome, PING_BYTES, PROTOCOL_VERSION, ProtocolError, subnetOf, toDataFrames, type Hello,
  type HostNetworks, type Subnet, type Welcome,
} from '@mnedc/protocol';
import { PacketBatch, type TunDevice } from '@mnedc/tun';
import { RetryPolicy, type FailureKind } from './backoff';
import type { ClientConfig } from './config';
import { describeSocketError, rejectKind } from './failure';
import { leaseOverlap } from './lease-overlap';
import { PeerTable, type PeerChanges } from './peer-table';
import { openTunnel, proveIdentity, serverMismatch, type Credentials } from './secure';

export type ClientState = 'connecting' | 'connected' | 'waiting' | 'stopped';

export interface ClientDeps {
  config: ClientConfig;
  log: Logger;
  deviceId: string;
  hostname: string;
  /** Underlay addresses to report, read at each connect (they change with DHCP). */
  underlay: () => string[];
  device: TunDevice;
  credentials: Credentials;
  /** The virtual IP from the last session, to ask for again. */
  previousIp?: string;
  /** Called when the lease changes, to persist it. */
  onLease?: (welcome: Welcome) => void;
  /** When to try again after a failed attempt; default: short for outages, long for operator mistakes. */
  retry?: RetryPolicy;
  /** How the connection is made; default openTunnel (secure.ts). A seam for tests that play the relay without a network. */
  openTunnel?: typeof openTunnel;
  /** This host's addresses and routes, read at each WELCOME to refuse a subnet that overlaps them; absent: no check. */
  localNetworks?: () => HostNetworks;
}

export interface ClientCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** TUN packets dropped because there was no connection to send them on. */
  dropsOffline: number;
  /** TUN packets whose virtio header or lengths did not hold (never expected from the kernel). */
  dropsMalformed: number;
  /** DATA_GSO from the relay whose virtio header or lengths did not hold: never written to the TUN. */
  dropsFromRelay: number;
  /** IPv6 packets read from the TUN: the overlay carries IPv4 only, so they never leave this device. */
  dropsIpv6: number;
  /** Sessions established again after an earlier one ended: real reconnections, not attempts. */
  reconnects: number;
  /** Connection attempts that ended without a session (relay unreachable, refused, rejected). */
  failedAttempts: number;
}

/**
 * One device's link to the relay: connect, handshake, shuttle TUN ⇄ socket, reconnect forever.
 *
 * The TUN stays up with its address while the connection is down, so the kernel keeps applications' TCP
 * connections alive and they resume once the client is back with the same IP.
 *
 * Events: 'state' (ClientState) on every transition; 'peers' (PeerChanges) when peers come or go.
 */
export class RelayClient extends EventEmitter {
  private current: ClientState = 'connecting';
  /** Epoch ms of the last state change. */
  stateSince = Date.now();
  /** While waiting: the delay before the next attempt. */
  retryInMs = 0;
  lease: Welcome | null = null;
  lastError = '';
  rttMs = -1;
  readonly counters: ClientCounters = {
    txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, dropsOffline: 0, dropsMalformed: 0, dropsFromRelay: 0, dropsIpv6: 0, reconnects: 0, failedAttempts: 0,
  };
  readonly peers: PeerTable;
  private socket: TLSSocket | null = null;
  private decoder = new FrameDecoder();
  private readonly retry: RetryPolicy;
  /** How the current attempt failed, once known: the retry schedule, and the one line logged for it. */
  private failure: { kind: FailureKind; line?: string } = { kind: 'outage' };
  /** A session was established before: the next one is a reconnection. */
  private joinedBefore = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private heard = false;
  private silentRounds = 0;
  private retryHintMs: number | null = null;
  private paused = false;
  private configuredAddress = '';
  private readonly toDevice = new PacketBatch();
  private queueLimit: number;
  /** The TUN reads and writes virtio headers. */
  private readonly vnet: boolean;
  /** This session negotiated "gso": DATA_GSO may flow both ways. */
  private gso = false;
  private readonly warnings: RateLimitedWarning;

  constructor(private readonly deps: ClientDeps) {
    super();
    this.peers = new PeerTable(deps.deviceId);
    this.retry = deps.retry ?? new RetryPolicy();
    this.queueLimit = deps.config.client.send_queue_kib * 1024;
    this.vnet = deps.device.vnetHeader === GSO_HEADER_BYTES;
    this.warnings = new RateLimitedWarning(deps.log);
  }

  /** Whether the current (or last) session moves offloaded super-packets. */
  get offloading(): boolean {
    return this.gso;
  }

  get state(): ClientState {
    return this.current;
  }

  /** Every transition is announced as a 'state' event (status reporting and tests wait on it). */
  private set state(next: ClientState) {
    if (next === this.current) return;
    this.current = next;
    this.stateSince = Date.now();
    this.emit('state', next);
  }

  /** SIGHUP may change how much unsent data pauses the TUN. */
  setQueueLimit(kib: number): void {
    this.queueLimit = kib * 1024;
  }

  deviceStats(): object {
    return this.deps.device.stats?.() ?? {};
  }

  /** One line for systemd's STATUS and logs. */
  get statusLine(): string {
    switch (this.state) {
      case 'connected': return `connected to ${this.server} as ${this.lease?.ip}`;
      case 'waiting': return `reconnecting in ${Math.max(1, Math.round(this.retryInMs / 1000))} s: ${this.lastError || 'connection closed'}`;
      case 'connecting': return `connecting to ${this.server}`;
      default: return 'stopped';
    }
  }

  get server(): string {
    return formatHostPort(this.deps.config.client.server);
  }

  start(): void {
    this.deps.device.start((batch, count) => this.onDeviceBatch(batch, count));
    this.connect();
  }

  /** Says GOODBYE so the server frees the session at once; resolves when the socket is closed (≤ 500 ms). */
  stop(): Promise<void> {
    // Before WELCOME a GOODBYE is a protocol error to the relay: an unjoined attempt is just closed.
    const joined = this.state === 'connected';
    this.state = 'stopped';
    this.clearTimers();
    this.deps.device.close();
    const socket = this.socket;
    if (!socket || socket.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => socket.destroy(), 500);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (joined && !socket.writableEnded) socket.end(encodeJsonFrame(FrameType.Goodbye, { code: 'shutdown', reason: 'client shutting down' }));
      else socket.destroy();
    });
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    const { host, port } = this.deps.config.client.server;
    // The chunk is a view of a reused buffer: onChunk consumes it before returning (frames split across
    // chunks are copied by the decoder, and DATA views are written to the TUN at the end of the chunk).
    const socket: TLSSocket = (this.deps.openTunnel ?? openTunnel)(host, port, (chunk) => this.onChunk(socket, chunk));
    this.socket = socket;
    this.decoder = new FrameDecoder();
    this.failure = { kind: 'outage' };
    socket.setNoDelay(true);
    this.handshakeTimer = setTimeout(() => {
      this.fail(socket, `no answer from ${this.server} within ${HANDSHAKE_TIMEOUT_MS} ms`);
    }, HANDSHAKE_TIMEOUT_MS);
    let secured = false;
    socket.on('secureConnect', () => {
      secured = true;
      const mismatch = serverMismatch(socket, this.deps.credentials.join.fingerprint);
      if (mismatch) {
        // Nothing has been sent yet: a wrong server learns neither the device ID nor any proof.
        this.lastError = mismatch;
        this.failure = { kind: 'mistake', line: `Refusing ${this.server}: ${mismatch}` };
        socket.destroy();
        return;
      }
      const hello: Hello = {
        version: PROTOCOL_VERSION,
        deviceId: this.deps.deviceId,
        hostname: this.deps.hostname,
        underlay: this.deps.underlay(),
        capabilities: this.vnet ? [CAPABILITY_GSO] : [],
        software: 'mnedcd-client',
      };
      const previousIp = this.lease?.ip ?? this.deps.previousIp;
      if (previousIp) hello.previousIp = previousIp;
      hello.auth = { ...proveIdentity(socket, this.deps.credentials, this.deps.deviceId) };
      socket.write(encodeJsonFrame(FrameType.Hello, hello));
    });
    socket.on('drain', () => {
      if (this.paused && socket === this.socket) {
        this.paused = false;
        this.deps.device.resume();
      }
    });
    socket.on('error', (err) => {
      // After the relay's REJECT or GOODBYE (our side ended), that is the reason, not how the socket went.
      if (socket !== this.socket || socket.writableEnded) return;
      const failure = describeSocketError(err, secured);
      this.lastError = failure.text;
      this.failure = { kind: failure.kind };
    });
    socket.on('close', () => this.onClose(socket));
  }

  private onChunk(socket: TLSSocket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    this.heard = true;
    try {
      this.decoder.push(chunk, (frame) => this.onFrame(socket, frame));
    } catch (err) {
      // Bytes behind a refused WELCOME: the connection is already over, and the refusal is its reason.
      if (socket.destroyed) return;
      if (err instanceof ProtocolError) this.fail(socket, `protocol error from ${this.server}: ${err.message}`);
      // Anything else (the TUN refusing an address, a bug) costs this connection, never the daemon.
      else this.fail(socket, `cannot handle what ${this.server} sent: ${(err as Error).message}`, err as Error);
    } finally {
      try {
        this.toDevice.flush(this.deps.device);
      } catch (err) {
        this.fail(socket, `cannot write to ${this.deps.device.name}: ${(err as Error).message}`, err as Error);
      }
    }
  }

  private onFrame(socket: TLSSocket, frame: Buffer): void {
    // Frames behind a refused WELCOME in the same chunk: the connection is over, its reason already set.
    if (socket.destroyed) return;
    const type = frame[0]!;
    const payload = frame.subarray(HEADER_BYTES);
    if (this.state === 'connected') {
      switch (type) {
        case FrameType.Data:
          this.counters.rxPackets++;
          this.counters.rxBytes += payload.length;
          this.toDevice.push(payload, false);
          return;
        case FrameType.DataGso:
          if (!this.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
          if (!this.offloadHolds(frame)) return;
          this.counters.rxPackets++;
          this.counters.rxBytes += payload.length - GSO_HEADER_BYTES;
          this.toDevice.push(payload, true);
          return;
        case FrameType.Ping:
          // Not after a GOODBYE ended our side: a write after end() errors the socket and buries the reason.
          if (!socket.writableEnded) socket.write(encodeFrame(FrameType.Pong, payload));
          return;
        case FrameType.Pong:
          this.rttMs = performance.now() - payload.readDoubleBE(0);
          return;
        case FrameType.Peers:
          this.onPeerChanges(this.peers.apply(parsePeerUpdate(payload), this.overlay()));
          return;
        case FrameType.Goodbye: {
          const goodbye = parseGoodbye(payload);
          this.retryHintMs = goodbye.reconnectMs ?? null;
          this.deps.log.warn({ code: goodbye.code, reason: goodbye.reason }, `Server closed the session: ${goodbye.reason}`);
          this.lastError = `server: ${goodbye.reason}`;
          socket.end();
          return;
        }
        default:
          throw new ProtocolError('unexpected', `${frameName(type)} from the server`);
      }
    }
    if (type === FrameType.Welcome) {
      const welcome = this.checkedWelcome(payload, socket);
      if (welcome) this.onWelcome(socket, welcome);
      else socket.destroy();
    }
    else if (type === FrameType.Reject) {
      const reject = parseReject(payload);
      this.retryHintMs = reject.retryAfterMs ?? null;
      this.lastError = `rejected (${reject.code}): ${reject.reason}`;
      this.failure = { kind: rejectKind(reject.code), line: `Server ${this.server} rejected this device: ${reject.reason}` };
      socket.end();
    } else throw new ProtocolError('unexpected', `${frameName(type)} before WELCOME`);
  }

  /**
   * The lease as the relay offers it, or null, refused, when acting on it would be unsafe: parseWelcome's
   * rules, a subnet that would route the relay itself into the tunnel, or one that overlaps this device's
   * own networks. A refusal is an operator's to fix (or a hostile relay's doing): one error line per
   * attempt, in status too, and retries on the slow schedule rather than every second.
   */
  private checkedWelcome(payload: Buffer, socket: TLSSocket): Welcome | null {
    let welcome: Welcome;
    try {
      welcome = parseWelcome(payload);
      const relay = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
      const { network } = subnetOf(ipv4ToInt(welcome.ip), welcome.prefix);
      if (isIpv4(relay) && inSubnet(ipv4ToInt(relay), network, welcome.prefix)) {
        throw new ProtocolError('bad-message', `WELCOME: ${welcome.ip}/${welcome.prefix} covers the relay's own address ${relay}, ` +
          'so the route to the relay would lead into the tunnel');
      }
      const overlap = this.deps.localNetworks ? leaseOverlap(welcome, this.deps.localNetworks(), this.deps.device.name,
        this.deps.config.client.allow_overlap, { address: relay, source: (socket.localAddress ?? '').replace(/^::ffff:/, '') }, this.deps.log) : '';
      if (overlap) throw new ProtocolError('bad-message', `WELCOME: ${overlap}`);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.lastError = `refused the lease: ${err.message}`;
      this.failure = { kind: 'mistake', line: `Refusing the lease ${this.server} offered: ${err.message}` };
      return null;
    }
    return welcome;
  }

  private onWelcome(socket: TLSSocket, welcome: Welcome): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    const address = `${welcome.ip}/${welcome.prefix}@${welcome.mtu}`;
    if (address !== this.configuredAddress) {
      // Reconfigure only on change: re-adding the same address would flush the kernel's routes and
      // sockets bound to it, which is exactly what surviving a reconnect must avoid.
      this.deps.device.configure({ address: welcome.ip, prefix: welcome.prefix, mtu: welcome.mtu, up: true });
      if (this.configuredAddress) {
        this.deps.log.warn({ ip: welcome.ip }, `The server gave a new address ${welcome.ip} (was ${this.lease?.ip}); connections on the old one are lost`);
      }
      this.configuredAddress = address;
    }
    this.setOffloading(welcome.capabilities.includes(CAPABILITY_GSO));
    const changed = this.lease?.ip !== welcome.ip;
    this.lease = welcome;
    this.state = 'connected';
    this.lastError = '';
    this.retry.reset();
    this.retryHintMs = null;
    if (this.joinedBefore) this.counters.reconnects++;
    this.joinedBefore = true;
    if (changed) this.deps.onLease?.(welcome);
    this.startKeepalive(socket, welcome);
    this.deps.log.info({ server: this.server, ip: welcome.ip, prefix: welcome.prefix, interface: this.deps.device.name },
      `Connected to ${this.server} as ${welcome.ip}/${welcome.prefix} on ${this.deps.device.name}`);
  }

  /**
   * With a server that takes no super-packets (an older version) the kernel is asked to segment and
   * checksum again, which it does faster than JS could; packets already queued are converted here.
   */
  private setOffloading(granted: boolean): void {
    const gso = this.vnet && granted;
    const device = this.deps.device;
    if (this.vnet && device.setOffload && device.enableOffloads) {
      if (!gso && device.offloads !== 0) {
        device.setOffload(0);
        this.deps.log.info({ server: this.server }, `${this.server} does not take offloaded packets; ${device.name} segments in the kernel`);
      } else if (gso && device.offloads === 0) {
        device.enableOffloads();
      }
    }
    this.gso = gso;
  }

  /** The leased subnet, which every peer's address must be a host of. */
  private overlay(): Subnet | null {
    return this.lease ? subnetOf(ipv4ToInt(this.lease.ip), this.lease.prefix) : null;
  }

  private onPeerChanges(changes: PeerChanges): void {
    if (changes.offOverlay) {
      this.warnings.warn('peer-off-overlay', () => ({
        fields: { server: this.server, ignored: changes.offOverlay },
        message: `Ignored peers ${this.server} announced at addresses outside the overlay subnet ${this.lease?.ip}/${this.lease?.prefix}`,
      }));
    }
    for (const peer of changes.up) {
      this.deps.log.info({ peer: peer.deviceId, ip: peer.ip, hostname: peer.hostname }, `Peer ${peer.deviceId} (${peer.hostname || 'no hostname'}) is up at ${peer.ip}`);
    }
    for (const peer of changes.down) {
      this.deps.log.info({ peer: peer.deviceId, ip: peer.ip }, `Peer ${peer.deviceId} (${peer.ip}) is down`);
    }
    if (changes.up.length + changes.down.length > 0) {
      this.emit('peers', changes);
    }
  }

  private startKeepalive(socket: TLSSocket, welcome: Welcome): void {
    this.heard = true;
    this.silentRounds = 0;
    this.keepaliveTimer = setInterval(() => {
      if (this.heard) {
        this.heard = false;
        this.silentRounds = 0;
      } else if (++this.silentRounds * welcome.keepaliveMs >= welcome.deadAfterMs) {
        this.fail(socket, `no word from ${this.server} for ${welcome.deadAfterMs} ms`);
        return;
      }
      const ping = Buffer.allocUnsafe(PING_BYTES);
      ping.writeDoubleBE(performance.now());
      socket.write(encodeFrame(FrameType.Ping, ping));
    }, welcome.keepaliveMs);
  }

  /** Ends a connection on purpose; with `err` (something went wrong on our side) it is logged as an error. */
  private fail(socket: TLSSocket, why: string, err?: Error): void {
    if (socket !== this.socket) return;
    this.lastError = why;
    if (err) this.deps.log.error({ server: this.server, err }, `Dropping the connection: ${why}`);
    else this.deps.log.warn({ server: this.server }, `Dropping the connection: ${why}`);
    socket.destroy();
  }

  private onClose(socket: TLSSocket): void {
    if (socket !== this.socket) return;
    this.socket = null;
    this.clearTimers();
    if (this.paused) {
      this.paused = false;
      this.deps.device.resume();
    }
    if (this.state === 'stopped') return;
    const wasConnected = this.state === 'connected';
    const { kind, line } = this.failure;
    const delay = this.retry.next(kind, this.retryHintMs);
    this.retryHintMs = null;
    this.retryInMs = delay;
    if (!wasConnected) this.counters.failedAttempts++;
    this.state = 'waiting';
    const why = this.lastError || 'connection closed';
    const fields = { server: this.server, delayMs: delay, failure: kind };
    if (wasConnected) {
      this.deps.log.warn(fields, `Lost ${this.server} (${why}); reconnecting in ${delay} ms, keeping ${this.lease?.ip} on ${this.deps.device.name}`);
    } else if (kind === 'mistake') {
      // One line per attempt, at one level: an operator has to act, and the waits grow to minutes meanwhile.
      this.deps.log.error(fields, `${line ?? `Cannot join ${this.server}: ${why}`}; retrying in ${delay} ms`);
    } else {
      this.deps.log.warn(fields, `${line ?? `Cannot join ${this.server}: ${why}`}; retrying in ${delay} ms`);
    }
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private clearTimers(): void {
    for (const timer of [this.retryTimer, this.keepaliveTimer, this.handshakeTimer]) if (timer) clearTimeout(timer);
    this.retryTimer = this.keepaliveTimer = this.handshakeTimer = null;
  }

  /**
   * TUN → server. The batch's [u32 length][packet] records become DATA frames by setting their type
   * byte — DATA_GSO with offloads, the record then holding [virtio header][packet] — so the whole batch
   * goes out in one write without copying.
   */
  private onDeviceBatch(batch: Buffer, count: number): void {
    const socket = this.socket;
    if (this.state !== 'connected' || !socket) {
      this.counters.dropsOffline += count;
      return;
    }
    if (this.vnet && !this.gso) this.sendConverted(socket, batch, count);
    else {
      const type = this.vnet ? FrameType.DataGso : FrameType.Data;
      const min = this.vnet ? GSO_HEADER_BYTES + MIN_IPV4_PACKET : MIN_IPV4_PACKET;
      const max = this.vnet ? MAX_GSO_PAYLOAD : 0xffff;
      const version = HEADER_BYTES + (this.vnet ? GSO_HEADER_BYTES : 0);
      let offset = 0;
      let valid = true;
      for (let i = 0; i < count; i++) {
        const length = batch.readUInt32BE(offset);
        if (length < min || length > max || batch[offset + version]! >> 4 !== 4) valid = false;
        batch[offset] = type;
        offset += HEADER_BYTES + length;
      }
      if (valid) {
        this.counters.txPackets += count;
        this.counters.txBytes += offset - count * version;
        socket.write(batch.subarray(0, offset));
      } else {
        socket.write(this.withoutRunts(batch, count, min, max, version));
      }
    }
    if (socket.writableLength > this.queueLimit && !this.paused) {
      // Let the kernel's TUN queue absorb and drop, as a congested link would, rather than buffering here.
      this.paused = true;
      this.deps.device.pause();
    }
  }

  /** Offloading TUN, server without "gso": each record becomes plain DATA frames (in place when it can). */
  private sendConverted(socket: TLSSocket, batch: Buffer, count: number): void {
    socket.cork();
    let offset = 0;
    for (let i = 0; i < count; i++) {
      const length = batch.readUInt32BE(offset);
      const start = offset + HEADER_BYTES;
      offset = start + length;
      if (batch[start + GSO_HEADER_BYTES]! >> 4 === 6) {
        this.counters.dropsIpv6++;
        continue;
      }
      const problem = checkOffloadPacket(batch, start, offset);
      if (problem !== null) {
        this.dropMalformed(problem);
        continue;
      }
      const frames = toDataFrames(batch, start, offset);
      this.counters.txPackets++;
      this.counters.txBytes += length - GSO_HEADER_BYTES;
      socket.write(frames);
    }
    socket.uncork();
  }

  /**
   * The relay is not trusted with the kernel either: a virtio header goes to the TUN only if it holds
   * what the relay checks of its senders (gso.ts), else the packet is dropped and counted.
   */
  private offloadHolds(frame: Buffer): boolean {
    const problem = checkOffloadPacket(frame, HEADER_BYTES, frame.length);
    if (problem === null) return true;
    this.counters.dropsFromRelay++;
    this.warnings.warn('relay-malformed', () => ({
      fields: { server: this.server, problem },
      message: `Dropped packets from ${this.server} that ${this.deps.device.name} must not be given, e.g.: ${problem}`,
    }));
    return false;
  }

  private dropMalformed(problem: string): void {
    this.counters.dropsMalformed++;
    this.warnings.warn('tun-malformed', () => ({
      fields: { interface: this.deps.device.name, problem },
      message: `Dropped packets from ${this.deps.device.name} that cannot be relayed, e.g.: ${problem}`,
    }));
  }

  /**
   * The records that can be frames, copied together; the others are counted and dropped: IPv6 (the
   * overlay carries IPv4 only), other non-IPv4 and runts. `version`: where a record's IP version is.
   */
  private withoutRunts(batch: Buffer, count: number, min: number, max: number, version: number): Buffer {
    const kept: Buffer[] = [];
    let offset = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const length = batch.readUInt32BE(offset) & 0xffffff;
      const ip = length >= min && length <= max ? batch[offset + version]! >> 4 : -1;
      if (ip === 4) {
        kept.push(batch.subarray(offset, offset + HEADER_BYTES + length));
        bytes += HEADER_BYTES + length - version;
      } else if (ip === 6) this.counters.dropsIpv6++;
      else this.dropMalformed(ip < 0 ? `a record of ${length} bytes` : `an IP version ${ip} packet`);
      offset += HEADER_BYTES + length;
    }
    this.counters.txPackets += kept.length;
    this.counters.txBytes += bytes;
    return Buffer.concat(kept);
  }
}
