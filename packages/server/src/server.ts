import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { RateLimitedWarning, type Logger } from '@mnedc/common';
import {
  buildIcmpUnreachable, CAPABILITY_GSO, checkOffloadPacket, encodeFrame, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_CONTEXT,
  EXPORTER_LABEL, FrameType, frameName, GSO_HEADER_BYTES, HEADER_BYTES, ICMP_HOST_UNREACHABLE, intToIpv4, ipv4ToInt,
  MAX_GSO_PAYLOAD, MIN_IPV4_PACKET, nonUnicastDestination, parseGoodbye, parseHello, PING_BYTES, ProtocolError, segmentCount, showFingerprint,
  toDataFrames, verifyHelloAuth, type Hello, type PeerInfo, type Welcome,
} from '@mnedc/protocol';
import { PacketBatch, type TunDevice } from '@mnedc/tun';
import { Admission, type AdmissionLimits, type Refusal } from './admission';
import {
  identify, JoinLimits, newRefusalCounters, spreadReject, spreadRetry, type JoinLimitSettings, type RefusalCounters, type Turnaway,
} from './join-gate';
import { DeviceBindings, JoinSecret, loadOrCreateIdentity, type ServerIdentity } from './identity';
import type { ServerConfig } from './config';
import { LeasePool, type AcquireResult, type Lease } from './lease-pool';
import { LeaseStore } from './lease-store';
import { PeerDirectory } from './peer-directory';
import { checkFrame, frameDestination, packetOffset, RoutingTable, Verdict, type DropReason } from './router';
import { newCounters, Session } from './session';

/** Capabilities this server grants when a HELLO asks for them. */
const SERVER_CAPABILITIES: readonly string[] = [CAPABILITY_GSO];

export interface ServerDeps {
  config: ServerConfig;
  log: Logger;
  /** Opens and configures the server's TUN; absent when [server] interface is empty. */
  openDevice?: (name: string, address: string, prefix: number, mtu: number) => TunDevice;
  serverDeviceId: string;
}

/** The server's own TUN as a route target. */
interface LocalTarget {
  readonly local: true;
}

type Target = Session | LocalTarget;

const LOCAL: LocalTarget = { local: true };

const REFUSAL_TEXT: Record<Refusal, string> = {
  rateLimited: 'too many new connections per second from this address ([limits] connections_per_source_per_second)',
  tooManyHandshakes: 'too many handshakes in progress ([limits] max_handshakes)',
  tooManyFromSource: 'too many handshakes in progress from this address ([limits] max_handshakes_per_source)',
};
/**
 * How a device's session ended, as the log says it: it said GOODBYE (stopped), it vanished (lost: crash,
 * kill, network), or the relay ended it (left: kicked, replaced, relay stopping, protocol error, …).
 */
type Departure = 'stopped' | 'lost' | 'left';
/** How long a stopping relay waits for its GOODBYEs to be taken before closing connections regardless. */
const STOP_FLUSH_MS = 1_000;
/** Unreachables are a courtesy: a source spraying unknown addresses gets at most this many per second. */
const ICMP_PER_SECOND = 200;
/** IPv6 from a device is an older client's (a current one drops it before sending): worth a line an hour. */
const IPV6_NOTICE_MS = 3_600_000;

export interface PeerEvent {
  event: 'up' | 'down';
  deviceId: string;
  ip: string;
  hostname: string;
  at: number;
}

export interface ServerLimits extends AdmissionLimits, JoinLimitSettings {
  sendQueueKib: number;
  keepaliveMs: number;
  deadAfterMs: number;
  handshakeTimeoutMs: number;
  /** An offline device keeps its address this long after it was last seen, even when the pool is full. */
  leaseLifetimeMs: number;
}

export function limitsFromConfig(config: ServerConfig): ServerLimits {
  const { server, limits } = config;
  return {
    sendQueueKib: server.send_queue_kib,
    keepaliveMs: server.keepalive_ms,
    deadAfterMs: server.dead_after_ms,
    handshakeTimeoutMs: limits.handshake_timeout_ms,
    maxClients: limits.max_clients,
    maxDevices: limits.max_devices,
    leaseLifetimeMs: server.lease_lifetime_days * 86_400_000,
    deviceJoins: { perSecond: limits.device_joins_per_minute / 60, burst: limits.device_join_burst },
    newDevices: { perSecond: limits.new_devices_per_minute / 60, burst: limits.new_device_burst },
    maxHandshakes: limits.max_handshakes,
    maxHandshakesPerSource: limits.max_handshakes_per_source,
    connectionsPerSecond: limits.connections_per_source_per_second,
    connectionBurst: limits.connection_burst_per_source,
  };
}

/**
 * The relay. Events: 'peer' (PeerEvent) when a device joins or leaves — a takeover by the same device
 * is neither — and 'sessions' after any change of the connected set.
 */
export class RelayServer extends EventEmitter {
  readonly pool: LeasePool;
  readonly serverIp: number;
  readonly directory: PeerDirectory;
  /** Everything relayed, including by sessions that have since closed. */
  readonly totals = newCounters();
  /** Traffic of the server's own TUN, which is a sender like any session. */
  readonly local = newCounters();
  private readonly store: LeaseStore;
  private readonly routes = new RoutingTable<Target>();
  private readonly sessions = new Set<Session>();
  private readonly byDevice = new Map<string, Session>();
  private readonly corked: Session[] = [];
  private readonly toDevice = new PacketBatch();
  private device: TunDevice | null = null;
  /** The local TUN takes DATA_GSO payloads as they are. */
  private deviceGso = false;
  private listener: NetServer | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private icmpTokens = ICMP_PER_SECOND;
  private icmpRefill = Date.now();
  /** Drops, protocol errors and refusals, each rate-limited per reason. */
  private readonly warnings: RateLimitedWarning;
  private readonly ipv6Notice: RateLimitedWarning;
  readonly startedAt = Date.now();

  private limits: ServerLimits;
  private address: AddressInfo | null = null;
  readonly identity: ServerIdentity;
  private readonly secureContext: SecureContext;
  private readonly joinSecret: JoinSecret;
  private readonly bindings: DeviceBindings;
  private readonly admission: Admission;
  private readonly joinLimits: JoinLimits;
  /** Sessions the relay closed to protect itself, by reason. */
  readonly cut = { overBudget: 0 };
  readonly refused = newRefusalCounters();

  constructor(private readonly deps: ServerDeps) {
    super();
    const { config, log } = deps;
    this.limits = limitsFromConfig(config);
    const { identity, created } = loadOrCreateIdentity(config.server.state_dir);
    this.identity = identity;
    if (created) log.info({ fingerprint: showFingerprint(identity.fingerprint) }, `Created the server identity ${showFingerprint(identity.fingerprint)} in ${config.server.state_dir}`);
    this.secureContext = createSecureContext({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
    this.joinSecret = new JoinSecret(config.server.state_dir);
    this.bindings = new DeviceBindings(config.server.state_dir, {
      onCompactionError: (err) => log.error({ err }, `Could not compact the device bindings (retried later; nothing is lost): ${err.message}`),
    });
    if (this.bindings.loaded.tornBytes > 0) {
      log.warn(`Dropped a torn final record (${this.bindings.loaded.tornBytes} bytes) of the device bindings journal: ` +
        'the relay stopped mid-write; that binding was never confirmed to its device');
    }
    this.admission = new Admission(this.limits);
    this.joinLimits = new JoinLimits(this.limits);

    this.store = new LeaseStore(config.server.state_dir, log);
    this.pool = this.store.load(config.server.subnet);
    this.serverIp = this.pool.serverIp;
    this.directory = new PeerDirectory({
      schedule: (callback, delayMs) => {
        const timer = setTimeout(callback, delayMs);
        return { cancel: () => clearTimeout(timer) };
      },
    });
    this.warnings = new RateLimitedWarning(log);
    this.ipv6Notice = new RateLimitedWarning(log, IPV6_NOTICE_MS);
  }

  async start(): Promise<AddressInfo> {
    const { server } = this.deps.config;
    if (server.interface && this.deps.openDevice) {
      const device = this.deps.openDevice(server.interface, intToIpv4(this.serverIp), server.subnet.prefix, server.mtu);
      this.device = device;
      this.deviceGso = (device.vnetHeader ?? 0) === GSO_HEADER_BYTES;
      device.start((batch, count) => this.onDeviceBatch(batch, count));
      this.routes.set(this.serverIp, LOCAL);
      this.directory.join({
        deviceId: this.deps.serverDeviceId,
        ip: intToIpv4(this.serverIp),
        hostname: hostname(),
        underlay: [],
        since: this.startedAt,
      });
    }
    const listener = createServer((socket) => this.accept(socket));
    this.listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(server.listen.port, server.listen.host, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    listener.on('error', (err) => this.deps.log.error({ err }, `Listener error: ${err.message}`));
    this.keepaliveTimer = setInterval(() => this.sweep(), this.limits.keepaliveMs);
    const address = listener.address() as AddressInfo;
    this.address = address;
    this.deps.log.info({ listen: `${address.address}:${address.port}`, serverIp: intToIpv4(this.serverIp), leases: this.pool.size },
      `Relay listening on ${address.address}:${address.port}, overlay ${intToIpv4(server.subnet.network)}/${server.subnet.prefix}` +
      (this.device ? ` on ${this.device.name} as ${intToIpv4(this.serverIp)}` : ' (no local interface)'));
    return address;
  }

  /**
   * Tells every device the server is going away so it reconnects promptly, then saves leases. GOODBYE is
   * flushed before the sockets go: each closes once its device took it, and a device that does not read
   * is cut after STOP_FLUSH_MS.
   */
  async stop(): Promise<void> {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    const listenerClosed = new Promise<void>((resolve) => (this.listener ? this.listener.close(() => resolve()) : resolve()));
    const sessions = [...this.sessions];
    for (const session of sessions) {
      if (session.state === 'established') {
        session.goodbye({ code: 'shutdown', reason: 'server shutting down', reconnectMs: spreadRetry(1000) });
        this.detach(session, 'server shutting down');
      } else {
        session.socket.destroy();
      }
    }
    this.store.flush(this.pool);
    await this.bindings.close();
    this.device?.close();
    this.device = null;
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(sessions.map((s) => s.socket.closed || new Promise((resolve) => s.socket.once('close', resolve)))),
      new Promise<void>((resolve) => { deadline = setTimeout(resolve, STOP_FLUSH_MS); }),
    ]);
    clearTimeout(deadline);
    for (const session of this.sessions) session.socket.destroy();
    await listenerClosed;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  sessionList(): Session[] {
    return [...this.sessions];
  }

  /** Established sessions only: what operators call the connected devices. */
  connected(): Session[] {
    return [...this.byDevice.values()];
  }

  session(deviceId: string): Session | undefined {
    return this.byDevice.get(deviceId);
  }

  get listenAddress(): AddressInfo | null {
    return this.address;
  }

  get deviceName(): string {
    return this.device?.name ?? '';
  }

  /** Limits a SIGHUP may change on the running relay; existing sessions adopt the new queue size too. */
  setLimits(limits: ServerLimits): void {
    const keepaliveChanged = limits.keepaliveMs !== this.limits.keepaliveMs;
    this.limits = limits;
    this.admission.limits = limits;
    this.joinLimits.limits = limits;
    for (const session of this.sessions) session.queueLimit = limits.sendQueueKib * 1024;
    if (keepaliveChanged && this.keepaliveTimer) {
      clearInterval(this.keepaliveTimer);
      this.keepaliveTimer = setInterval(() => this.sweep(), limits.keepaliveMs);
    }
  }

  /** Disconnects a device; it will reconnect (and keep its lease) unless the operator also releases it. */
  kick(deviceId: string, reason = 'disconnected by the operator'): boolean {
    const session = this.byDevice.get(deviceId);
    if (!session) return false;
    session.goodbye({ code: 'kicked', reason, reconnectMs: spreadRetry(1000) });
    this.detach(session, reason);
    return true;
  }

  get joinString(): string {
    return this.joinSecret.joinString(this.identity.fingerprint);
  }

  /** A new join secret: join strings handed out before stop working; connected devices stay. */
  rotateJoin(): string {
    this.joinSecret.rotate();
    this.deps.log.warn(`Rotated the join secret: earlier join strings no longer admit devices`);
    return this.joinString;
  }

  get bindingCount(): number {
    return this.bindings.size;
  }

  /** Forgets everything about a device (lease and key binding), so it can join again with a new key. */
  async forget(deviceId: string): Promise<{ lease: Lease | undefined; binding: boolean }> {
    const lease = this.release(deviceId);
    const binding = await this.bindings.forget(deviceId);
    if (binding) this.deps.log.info({ deviceId }, `Forgot the key binding of ${deviceId}; the next key to join with this ID is bound to it`);
    return { lease, binding };
  }

  /** Forgets a device's lease (disconnecting it first), so its address can go to another device. */
  release(deviceId: string): Lease | undefined {
    this.kick(deviceId, 'lease released by the operator');
    const lease = this.pool.release(deviceId);
    if (lease) {
      this.store.changed(this.pool, true);
      this.deps.log.info({ deviceId, ip: intToIpv4(lease.ip) }, `Released the lease of ${deviceId} (${intToIpv4(lease.ip)})`);
    }
    return lease;
  }

  // ---- connection life ----

  private refuse(reason: keyof RefusalCounters, fields: Record<string, unknown>, message: string): void {
    this.refused[reason]++;
    this.warnings.warn(`refused:${reason}`, () => ({ fields: { reason, ...fields }, message }));
  }

  /** Every connection is TLS 1.3 from its first byte; limits apply before any TLS work is spent on it. */
  private accept(raw: Socket): void {
    const source = raw.remoteAddress ?? '?';
    const handshake = this.admission.admit(source, () => {
      this.refuse('evicted', { remote: `${source}:${raw.remotePort ?? 0}` },
        `Closed unfinished handshakes to make room (${this.limits.maxHandshakes} in progress, [limits] max_handshakes), e.g. one from ${source}`);
      raw.destroy();
    });
    if (typeof handshake === 'string') {
      this.refuse(handshake, { source }, `Refused connections from ${source}: ${REFUSAL_TEXT[handshake]}`);
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    const socket = new TLSSocket(raw, { isServer: true, secureContext: this.secureContext });
    const session = new Session(socket, this.limits.sendQueueKib * 1024, (s, needed) => this.cutOverBudget(s, needed));
    session.handshake = handshake;
    this.sessions.add(session);
    session.handshakeTimer = setTimeout(() => {
      this.refuse('handshakeTimeout', { remote: session.remote }, `Closed ${session.remote}: no HELLO within ${this.limits.handshakeTimeoutMs} ms`);
      socket.destroy();
    }, this.limits.handshakeTimeoutMs);
    // The first TLS secret exists once a whole ClientHello arrived: from then on this is no silent slot-filler.
    socket.once('keylog', () => this.admission.started(handshake));
    socket.on('data', (chunk: Buffer) => this.onChunk(session, chunk));
    socket.on('error', (err) => {
      if (!session.tlsReady) this.refuse('tlsFailed', { remote: session.remote }, `TLS handshake with ${session.remote} failed: ${err.message}`);
      else this.deps.log.debug({ err, remote: session.remote }, 'socket error');
    });
    socket.once('secure', () => {
      session.tlsReady = true;
    });
    socket.on('close', () => {
      this.sessions.delete(session);
      this.endHandshake(session);
      this.detach(session, 'connection closed without a goodbye', 'lost');
    });
  }

  /** Frees the handshake slot of a session once, whether it got established or died trying. */
  private endHandshake(session: Session): void {
    if (session.handshakeTimer) clearTimeout(session.handshakeTimer);
    session.handshakeTimer = null;
    if (session.handshake) {
      this.admission.release(session.handshake);
      session.handshake = null;
    }
  }

  private onChunk(session: Session, chunk: Buffer): void {
    if (session.state === 'closed') return;
    session.heard = true;
    try {
      session.decoder.push(chunk, (frame) => this.onFrame(session, frame));
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        // A bug handling one device's input must cost that device its session, not everyone the relay.
        this.deps.log.error({ err, deviceId: session.deviceId || undefined, remote: session.remote },
          `Internal error handling ${session.deviceId || session.remote}; closing its session: ${(err as Error).message}`);
        this.detach(session, 'internal error');
        session.socket.destroy();
        return;
      }
      this.countDrop(session, 'malformed');
      this.warnings.warn('protocol', () => ({
        fields: { remote: session.remote, deviceId: session.deviceId || undefined, code: err.code },
        message: `Closed ${session.deviceId || session.remote}: protocol error: ${err.message}`,
      }));
      session.goodbye({ code: 'protocol', reason: err.message });
      this.detach(session, `protocol error: ${err.message}`);
    } finally {
      this.flushBatch();
    }
  }

  private onFrame(session: Session, frame: Buffer): void {
    const type = frame[0]!;
    if (session.state === 'established') {
      if (type === FrameType.Data) this.forward(session, frame, session.ip);
      else if (type === FrameType.DataGso) {
        if (!session.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
        this.forward(session, frame, session.ip);
      } else if (type === FrameType.Ping) session.sendControl(encodeFrame(FrameType.Pong, frame.subarray(HEADER_BYTES)), this.corked);
      else if (type === FrameType.Pong) session.rttMs = performance.now() - frame.readDoubleBE(HEADER_BYTES);
      else if (type === FrameType.Goodbye) this.onGoodbye(session, frame.subarray(HEADER_BYTES));
      else throw new ProtocolError('unexpected', `${frameName(type)} from a client`);
      return;
    }
    if (session.state === 'closed') return;
    if (session.hello) throw new ProtocolError('unexpected', `${frameName(type)} before WELCOME`);
    if (type !== FrameType.Hello) throw new ProtocolError('unexpected', `${frameName(type)} before HELLO`);
    this.onHello(session, parseHello(frame.subarray(HEADER_BYTES)));
  }

  /** The device leaves on purpose (its daemon stopped): gone for its peers now, not once the socket closed. */
  private onGoodbye(session: Session, payload: Buffer): void {
    const goodbye = parseGoodbye(payload);
    this.detach(session, `said goodbye: ${goodbye.reason}`, 'stopped');
    session.finish();
  }

  /** Turns a session away: counted and logged (rate-limited) under its reason, REJECT sent, connection closed. */
  private turnAway(session: Session, turnaway: Turnaway, fields: Record<string, unknown>): void {
    this.refuse(turnaway.reason, { remote: session.remote, ...fields }, turnaway.message);
    session.reject(spreadReject(turnaway.reject));
  }

  /** The fingerprint of the key the device proved, or null once it has been turned away. */
  private identify(session: Session, hello: Hello): string | null {
    const ekm = (session.socket as TLSSocket).exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const auth = verifyHelloAuth(hello.auth, this.joinSecret.current, ekm, hello.deviceId);
    const verdict = identify(hello, auth, this.bindings.get(hello.deviceId), this.deps.serverDeviceId, session.remote);
    if (typeof verdict !== 'string') {
      this.turnAway(session, verdict, { deviceId: hello.deviceId, ...(auth.ok ? {} : { failure: auth.failure }) });
      return null;
    }
    this.admission.authenticated(session.socket.remoteAddress ?? '?');
    return verdict;
  }

  private overCapacity(session: Session, id: string): boolean {
    const full = this.joinLimits.capacity(id, { connected: this.byDevice.has(id), connectedCount: this.byDevice.size });
    if (full) this.turnAway(session, full, { deviceId: id });
    return full !== null;
  }

  private onHello(session: Session, hello: Hello): void {
    this.endHandshake(session);
    const key = this.identify(session, hello);
    if (key === null) return;
    const limited = this.joinLimits.check(hello.deviceId, {
      known: this.bindings.get(hello.deviceId) === key,
      connected: this.byDevice.has(hello.deviceId),
      connectedCount: this.byDevice.size,
      boundCount: this.bindings.size,
      poolCapacity: this.pool.capacity,
    });
    if (limited) {
      this.turnAway(session, limited, { deviceId: hello.deviceId });
      return;
    }
    const acquired = this.acquire(session, hello);
    if (!acquired) return;
    // No WELCOME before the binding is on disk: a crash after it must not free the ID for another key.
    session.hello = hello;
    const isNew = this.bindings.get(hello.deviceId) === undefined;
    const pending = isNew ? this.bindings.bind(hello.deviceId, key) : this.bindings.pending(hello.deviceId);
    if (!pending) {
      this.establish(session, hello, key, acquired);
      return;
    }
    pending.then(() => {
      if (isNew) this.deps.log.info({ deviceId: hello.deviceId, key }, `Bound device ID ${hello.deviceId} to key ${key}`);
      this.establish(session, hello, key, acquired);
    }, (err: Error) => {
      this.deps.log.error({ err, deviceId: hello.deviceId }, `Rejected ${hello.deviceId}: cannot record its key binding: ${err.message}`);
      if (session.state !== 'closed') {
        session.reject({ code: 'busy', reason: 'the server cannot record device bindings (storage error)', retryAfterMs: spreadRetry(30_000) });
      }
    });
  }

  private acquire(session: Session, hello: Hello): (AcquireResult & { ok: true }) | undefined {
    const result = this.pool.acquire({
      deviceId: hello.deviceId,
      hostname: hello.hostname,
      underlay: hello.underlay,
      requestedIp: hello.previousIp !== undefined ? ipv4ToInt(hello.previousIp) : undefined,
      now: Date.now(),
      leaseLifetimeMs: this.limits.leaseLifetimeMs,
      isConnected: (deviceId) => this.byDevice.has(deviceId),
    });
    if (result.ok) return result;
    this.turnAway(session, { reason: 'poolFull', message: `Rejected ${hello.deviceId}: ${result.reason}`,
      reject: { code: 'pool-full', reason: result.reason, retryAfterMs: 30_000 } }, { deviceId: hello.deviceId });
    return undefined;
  }

  /**
   * The rest of a HELLO, once the device's binding is durable. If that took a write, the world may have
   * moved meanwhile: the connection closed, the operator released or forgot the device, other devices
   * filled max_clients, or the device connected again (the newer connection then takes over this one).
   */
  private establish(session: Session, hello: Hello, key: string, acquired: AcquireResult & { ok: true }): void {
    if (session.state === 'closed') return;
    if (this.bindings.get(hello.deviceId) !== key) {
      session.reject({ code: 'busy', reason: `the binding of device ID ${hello.deviceId} changed while it joined; try again`, retryAfterMs: 1000 });
      return;
    }
    if (this.overCapacity(session, hello.deviceId)) return;
    const result = this.pool.get(hello.deviceId) === acquired.lease ? acquired : this.acquire(session, hello);
    if (!result) return;
    const previous = this.byDevice.get(hello.deviceId);
    if (previous) {
      // The newest connection is the device: the old one is usually a dead TCP session not yet timed out.
      this.deps.log.info({ deviceId: hello.deviceId, old: previous.remote, new: session.remote },
        `Device ${hello.deviceId} reconnected from ${session.remote}; closing its previous session from ${previous.remote}`);
      previous.goodbye({ code: 'replaced', reason: `replaced by a new connection from ${session.remote}` });
      this.detach(previous, 'replaced');
    }
    const now = Date.now();
    const { lease } = result;
    if (result.reclaimedFrom) {
      this.deps.log.warn({ deviceId: hello.deviceId, ip: intToIpv4(lease.ip), from: result.reclaimedFrom.deviceId },
        `Pool exhausted: gave ${intToIpv4(lease.ip)} of ${result.reclaimedFrom.deviceId} (offline the longest, its lease expired) to ${hello.deviceId}`);
    }
    this.pool.touch(hello.deviceId, now);
    this.store.changed(this.pool, result.isNew);
    session.state = 'established';
    session.establishedAt = now;
    session.deviceId = hello.deviceId;
    session.ip = lease.ip;
    session.hello = hello;
    const capabilities = SERVER_CAPABILITIES.filter((c) => hello.capabilities.includes(c));
    session.gso = capabilities.includes(CAPABILITY_GSO);
    this.byDevice.set(hello.deviceId, session);
    this.routes.set(lease.ip, session);
    const welcome: Welcome = {
      ip: intToIpv4(lease.ip),
      prefix: this.deps.config.server.subnet.prefix,
      mtu: this.deps.config.server.mtu,
      serverIp: intToIpv4(this.serverIp),
      keepaliveMs: this.limits.keepaliveMs,
      deadAfterMs: this.limits.deadAfterMs,
      capabilities,
    };
    session.sendControl(encodeJsonFrame(FrameType.Welcome, welcome));
    this.directory.join(peerInfo(lease, now), session);
    if (!previous) this.emit('peer', { event: 'up', deviceId: hello.deviceId, ip: welcome.ip, hostname: hello.hostname, at: now } satisfies PeerEvent);
    this.emit('sessions');
    this.deps.log.info({ deviceId: hello.deviceId, ip: welcome.ip, hostname: hello.hostname, remote: session.remote, isNew: result.isNew },
      `Device ${hello.deviceId} (${hello.hostname || 'no hostname'}) joined from ${session.remote} as ${welcome.ip}`);
  }

  /** Takes a session off the routing table and the directory; safe to call more than once. */
  private detach(session: Session, why: string, how: Departure = 'left'): void {
    if (session.state !== 'established') {
      session.state = 'closed';
      return;
    }
    session.state = 'closed';
    this.routes.delete(session.ip, session);
    if (this.byDevice.get(session.deviceId) === session) {
      const now = Date.now();
      this.byDevice.delete(session.deviceId);
      this.directory.leave(session.deviceId, session);
      this.pool.touch(session.deviceId, now);
      this.store.changed(this.pool, false);
      if (why !== 'replaced') {
        this.emit('peer', { event: 'down', deviceId: session.deviceId, ip: intToIpv4(session.ip), hostname: session.hello?.hostname ?? '', at: now } satisfies PeerEvent);
      }
      this.emit('sessions');
    }
    this.deps.log.info({ deviceId: session.deviceId, ip: intToIpv4(session.ip), how, why, rxPackets: session.counters.rxPackets, txPackets: session.counters.txPackets },
      how === 'stopped' ? `Device ${session.deviceId} (${intToIpv4(session.ip)}) stopped (${why})` : `Device ${session.deviceId} (${intToIpv4(session.ip)}) ${how}: ${why}`);
  }

  /** A device that keeps talking but stops reading: what it is owed would outgrow its budget. */
  private cutOverBudget(session: Session, needed: number): void {
    this.cut.overBudget++;
    const who = session.deviceId || session.remote;
    this.warnings.warn('cut:overBudget', () => ({
      fields: { deviceId: session.deviceId || undefined, remote: session.remote, neededKib: Math.ceil(needed / 1024), budgetKib: session.budget.limit / 1024 },
      message: `Closed ${who}: it does not read what is sent to it (${Math.ceil(needed / 1024)} KiB would be queued, ` +
        `beyond its budget of ${session.budget.limit / 1024} KiB, [server] send_queue_kib)`,
    }));
    this.detach(session, 'not reading: over its send budget');
    session.socket.destroy();
  }

  /** Pings every established session; a session silent for deadAfterMs is closed. */
  private sweep(): void {
    const { keepaliveMs: keepalive, deadAfterMs: deadAfter } = this.limits;
    const now = Date.now();
    this.admission.sweep();
    this.joinLimits.sweep();
    const ping = Buffer.alloc(HEADER_BYTES + PING_BYTES);
    ping.writeUInt32BE(((FrameType.Ping << 24) | PING_BYTES) >>> 0);
    ping.writeDoubleBE(performance.now(), HEADER_BYTES);
    for (const session of this.sessions) {
      if (session.state !== 'established') continue;
      session.updateRates(now);
      if (session.heard) {
        session.heard = false;
        session.silentRounds = 0;
      } else if (++session.silentRounds * keepalive >= deadAfter) {
        this.deps.log.warn({ deviceId: session.deviceId, remote: session.remote },
          `Device ${session.deviceId} silent for ${deadAfter} ms: closing its session`);
        this.detach(session, `silent for ${deadAfter} ms`, 'lost');
        session.socket.destroy();
        continue;
      }
      session.sendControl(ping);
    }
  }

  // ---- packet path ----

  /**
   * A DATA or DATA_GSO frame from a session (senderIp = its lease) or the local TUN (senderIp = server
   * IP). DATA_GSO goes on as it came to receivers that negotiated it and is segmented for the others.
   */
  private forward(from: Session | null, frame: Buffer, senderIp: number): void {
    const counters = from ? from.counters : this.local;
    const gso = frame[0] === FrameType.DataGso;
    const ip = packetOffset(frame);
    const bytes = frame.length - ip;
    counters.rxPackets++;
    counters.rxBytes += bytes;
    this.totals.rxPackets++;
    this.totals.rxBytes += bytes;
    if (frame[ip]! >> 4 === 6) {
      this.dropIpv6(from);
      return;
    }
    if (gso) {
      const problem = checkOffloadPacket(frame, HEADER_BYTES, frame.length);
      if (problem !== null) {
        this.drop(from, 'malformed', frame, problem);
        return;
      }
    }
    const verdict = checkFrame(frame, senderIp, ip);
    if (verdict !== Verdict.Deliver) {
      this.drop(from, verdict === Verdict.Spoofed ? 'spoofed' : 'malformed', frame);
      return;
    }
    const destination = frameDestination(frame, ip);
    const target = this.routes.get(destination);
    if (target === undefined) {
      // Not carried (yet) and never answered: RFC 1122 forbids ICMP errors for these, and mDNS or
      // SSDP chatter is no fault worth a log line.
      const notCarried = nonUnicastDestination(destination, this.deps.config.server.subnet);
      if (notCarried) {
        this.countDrop(from, notCarried);
        return;
      }
      this.drop(from, 'noRoute', frame);
      this.unreachable(from, frame.subarray(ip));
      return;
    }
    let packets = 1;
    if (target instanceof Session) {
      if (!target.accepts(frame.length)) {
        this.countDrop(from, 'queueFull');
        return;
      }
      let out = frame;
      if (gso && !target.gso) {
        packets = segmentCount(frame, HEADER_BYTES, frame.length);
        out = toDataFrames(frame, HEADER_BYTES, frame.length);
      }
      target.queueData(out, this.corked, packets, bytes);
    } else if (!gso || this.deviceGso) {
      this.toDevice.push(frame.subarray(gso ? HEADER_BYTES : ip), gso);
      this.local.txPackets++;
    } else {
      packets = segmentCount(frame, HEADER_BYTES, frame.length);
      const frames = toDataFrames(frame, HEADER_BYTES, frame.length);
      for (let o = 0; o < frames.length;) {
        const end = o + HEADER_BYTES + (frames.readUInt32BE(o) & 0xffffff);
        this.toDevice.push(frames.subarray(o + HEADER_BYTES, end), false);
        o = end;
      }
      this.local.txPackets += packets;
    }
    if (!(target instanceof Session)) this.local.txBytes += bytes;
    this.totals.txPackets += packets;
    this.totals.txBytes += bytes;
  }

  private drop(from: Session | null, reason: DropReason, frame: Buffer, problem?: string): void {
    this.countDrop(from, reason);
    this.warnings.warn(`drop:${reason}`, () => {
      const destination = intToIpv4(frameDestination(frame));
      return {
        fields: { deviceId: from?.deviceId ?? 'server', reason, destination, ...(problem ? { problem } : {}) },
        message: `Dropped packets (${reason}), e.g. from ${from?.deviceId ?? 'the server'} to ${destination}${problem ? `: ${problem}` : ''}`,
      };
    });
  }

  private dropIpv6(from: Session | null): void {
    this.countDrop(from, 'ipv6');
    this.ipv6Notice.warn('ipv6', () => ({
      fields: { deviceId: from?.deviceId ?? 'server', reason: 'ipv6' },
      message: `Dropped IPv6 packets from ${from?.deviceId ?? 'the server\'s own interface'}: the overlay carries IPv4 only ` +
        '(counted as drops.ipv6; clients of this version drop IPv6 before sending it)',
    }));
  }

  private countDrop(from: Session | null, reason: DropReason): void {
    this.totals.drops[reason]++;
    (from ? from.counters : this.local).drops[reason]++;
  }

  /** `packet`: the IPv4 packet that found no route. */
  private unreachable(from: Session | null, packet: Buffer): void {
    const now = Date.now();
    if (now - this.icmpRefill >= 1000) {
      this.icmpTokens = ICMP_PER_SECOND;
      this.icmpRefill = now;
    }
    if (this.icmpTokens <= 0) return;
    const icmp = buildIcmpUnreachable(packet, this.serverIp, ICMP_HOST_UNREACHABLE);
    if (!icmp) return;
    this.icmpTokens--;
    if (from) from.sendData(encodeFrame(FrameType.Data, icmp), this.corked);
    else this.toDevice.push(icmp, false);
  }

  private onDeviceBatch(batch: Buffer, count: number): void {
    // The TUN batch is [u32 length][packet] records — [u32 length][virtio header][packet] with offloads;
    // with the type byte set each is a DATA (DATA_GSO) frame as is.
    const type = this.deviceGso ? FrameType.DataGso : FrameType.Data;
    const min = this.deviceGso ? GSO_HEADER_BYTES + MIN_IPV4_PACKET : MIN_IPV4_PACKET;
    const max = this.deviceGso ? MAX_GSO_PAYLOAD : 0xffff;
    let offset = 0;
    for (let i = 0; i < count; i++) {
      const length = batch.readUInt32BE(offset);
      const end = offset + HEADER_BYTES + length;
      if (length >= min && length <= max) {
        batch[offset] = type;
        this.forward(null, batch.subarray(offset, end), this.serverIp);
      }
      offset = end;
    }
    this.flushBatch();
  }

  /** Ends a batch: one writev per touched session, one native call for the local TUN. */
  private flushBatch(): void {
    const corked = this.corked;
    for (let i = 0; i < corked.length; i++) corked[i]!.uncork();
    corked.length = 0;
    if (this.toDevice.length > 0 && this.device) this.toDevice.flush(this.device);
    else this.toDevice.clear();
  }
}

function peerInfo(lease: Lease, since: number): PeerInfo {
  return { deviceId: lease.deviceId, ip: intToIpv4(lease.ip), hostname: lease.hostname, underlay: lease.underlay, since };
}
