import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { createSecureContext } from 'node:tls';
import { hostname } from 'node:os';
import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { pingFrame } from '@mnedc/link';
import {
  CAPABILITY_GSO, encodeJsonFrame, FrameType, frameName, HEADER_BYTES, intToIpv4, parseGoodbye, ProtocolError, showFingerprint,
  type PeerInfo, type Welcome,
} from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';
import type { ServerConfig } from './config';
import { DataPlane } from './dataplane/data-plane';
import { LocalDevice } from './dataplane/local-device';
import { newCounters } from './dataplane/target';
import { Handshakes, type AuthenticatedDevice, type HandshakeHost } from './handshake/handshake';
import { newRefusalCounters, spreadRetry, type RefusalCounters } from './handshake/join-gate';
import { limitsFromConfig, type ServerLimits } from './limits';
import { Session } from './session';
import { DeviceBindings, JoinSecret, loadOrCreateIdentity, type ServerIdentity } from './stores/identity';
import type { Lease } from './stores/lease-pool';
import { PeerDirectory } from './stores/peer-directory';
import { LocalLeases, type LeaseService } from './stores/services';

export { limitsFromConfig, type ServerLimits } from './limits';

/** Capabilities this server grants when a HELLO asks for them. */
const SERVER_CAPABILITIES: readonly string[] = [CAPABILITY_GSO];

export interface ServerDeps {
  config: ServerConfig;
  log: Logger;
  /** Opens and configures the server's TUN; absent when [server] interface is empty. */
  openDevice?: (name: string, address: string, prefix: number, mtu: number) => TunDevice;
  serverDeviceId: string;
}

/**
 * How a device's session ended, as the log says it: it said GOODBYE (stopped), it vanished (lost: crash,
 * kill, network), or the relay ended it (left: kicked, replaced, relay stopping, protocol error, …).
 */
type Departure = 'stopped' | 'lost' | 'left';
/** How long a stopping relay waits for its GOODBYEs to be taken before closing connections regardless. */
const STOP_FLUSH_MS = 1_000;

export interface PeerEvent {
  event: 'up' | 'down';
  deviceId: string;
  ip: string;
  hostname: string;
  at: number;
}

/**
 * The relay: the parts, and the life of a device between them. Handshakes (handshake/) turn connections
 * into authenticated devices; each becomes a Session routed by the DataPlane (dataplane/) beside the
 * relay's own TUN; leases, key bindings and the peer directory (stores/) are the services both call.
 *
 * Events: 'peer' (PeerEvent) when a device joins or leaves — a takeover by the same device is neither —
 * and 'sessions' after any change of the connected set.
 */
export class RelayServer extends EventEmitter implements HandshakeHost {
  readonly leases: LeaseService;
  readonly bindings: DeviceBindings;
  readonly serverIp: number;
  readonly directory: PeerDirectory;
  readonly plane: DataPlane;
  readonly log: Logger;
  readonly serverDeviceId: string;
  readonly startedAt = Date.now();
  readonly identity: ServerIdentity;
  /** Sessions the relay closed to protect itself, by reason. */
  readonly cut = { overBudget: 0 };
  readonly refused = newRefusalCounters();
  private readonly handshakes: Handshakes;
  private readonly sessions = new Set<Session>();
  private readonly byDevice = new Map<string, Session>();
  private device: LocalDevice | null = null;
  private listener: NetServer | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  /** Protocol errors and refusals, each rate-limited per reason. */
  private readonly warnings: RateLimitedWarning;
  private readonly joinSecrets: JoinSecret;
  private limits: ServerLimits;
  private address: AddressInfo | null = null;

  constructor(private readonly deps: ServerDeps) {
    super();
    const { config, log } = deps;
    this.log = log;
    this.serverDeviceId = deps.serverDeviceId;
    this.limits = limitsFromConfig(config);
    const { identity, created } = loadOrCreateIdentity(config.server.state_dir);
    this.identity = identity;
    if (created) log.info({ fingerprint: showFingerprint(identity.fingerprint) }, `Created the server identity ${showFingerprint(identity.fingerprint)} in ${config.server.state_dir}`);
    const secureContext = createSecureContext({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
    this.joinSecrets = new JoinSecret(config.server.state_dir);
    this.bindings = new DeviceBindings(config.server.state_dir, {
      onCompactionError: (err) => log.error({ err }, `Could not compact the device bindings (retried later; nothing is lost): ${err.message}`),
    });
    if (this.bindings.loaded.tornBytes > 0) {
      log.warn(`Dropped a torn final record (${this.bindings.loaded.tornBytes} bytes) of the device bindings journal: ` +
        'the relay stopped mid-write; that binding was never confirmed to its device');
    }
    this.leases = new LocalLeases(config.server.state_dir, config.server.subnet, log);
    this.serverIp = this.leases.serverIp;
    this.plane = new DataPlane(config.server.subnet, this.serverIp, log);
    this.handshakes = new Handshakes(this, this.limits, secureContext, (s, frame) => this.onFrame(s, frame), (s, needed) => this.cutOverBudget(s, needed));
    this.directory = new PeerDirectory({
      schedule: (callback, delayMs) => {
        const timer = setTimeout(callback, delayMs);
        return { cancel: () => clearTimeout(timer) };
      },
    });
    this.warnings = new RateLimitedWarning(log);
  }

  async start(): Promise<AddressInfo> {
    const { server } = this.deps.config;
    if (server.interface && this.deps.openDevice) {
      const device = new LocalDevice(this.deps.openDevice(server.interface, intToIpv4(this.serverIp), server.subnet.prefix, server.mtu), this.serverIp);
      this.device = device;
      device.start((from, frame) => this.plane.forward(from, frame), () => this.plane.endBatch());
      this.plane.route(device);
      this.directory.join({ deviceId: this.serverDeviceId, ip: intToIpv4(this.serverIp), hostname: hostname(), underlay: [], since: this.startedAt });
    }
    const listener = createServer((socket) => this.handshakes.accept(socket));
    this.listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(server.listen.port, server.listen.host, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    listener.on('error', (err) => this.log.error({ err }, `Listener error: ${err.message}`));
    this.keepaliveTimer = setInterval(() => this.sweep(), this.limits.keepaliveMs);
    const address = listener.address() as AddressInfo;
    this.address = address;
    this.log.info({ listen: `${address.address}:${address.port}`, serverIp: intToIpv4(this.serverIp), leases: this.leases.size },
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
    this.leases.flush();
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

  /** The lease pool as the operator sees it (size, capacity, leases). */
  get pool(): LeaseService {
    return this.leases;
  }

  /** Everything relayed, including by sessions that have since closed. */
  get totals(): DataPlane['totals'] {
    return this.plane.totals;
  }

  /** Traffic of the server's own TUN, which is a sender like any session. */
  get local(): DataPlane['totals'] {
    return this.device?.counters ?? newCounters();
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

  isConnected(deviceId: string): boolean {
    return this.byDevice.has(deviceId);
  }

  get connectedCount(): number {
    return this.byDevice.size;
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
    this.handshakes.setLimits(limits);
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

  joinSecret(): Buffer {
    return this.joinSecrets.current;
  }

  get joinString(): string {
    return this.joinSecrets.joinString(this.identity.fingerprint);
  }

  /** A new join secret: join strings handed out before stop working; connected devices stay. */
  rotateJoin(): string {
    this.joinSecrets.rotate();
    this.log.warn(`Rotated the join secret: earlier join strings no longer admit devices`);
    return this.joinString;
  }

  get bindingCount(): number {
    return this.bindings.size;
  }

  /** Forgets everything about a device (lease and key binding), so it can join again with a new key. */
  async forget(deviceId: string): Promise<{ lease: Lease | undefined; binding: boolean }> {
    const lease = this.release(deviceId);
    const binding = await this.bindings.forget(deviceId);
    if (binding) this.log.info({ deviceId }, `Forgot the key binding of ${deviceId}; the next key to join with this ID is bound to it`);
    return { lease, binding };
  }

  /** Forgets a device's lease (disconnecting it first), so its address can go to another device. */
  release(deviceId: string): Lease | undefined {
    this.kick(deviceId, 'lease released by the operator');
    const lease = this.leases.release(deviceId);
    if (lease) this.log.info({ deviceId, ip: intToIpv4(lease.ip) }, `Released the lease of ${deviceId} (${intToIpv4(lease.ip)})`);
    return lease;
  }

  // ---- a connection's life ----

  refuse(reason: keyof RefusalCounters, fields: Record<string, unknown>, message: string): void {
    this.refused[reason]++;
    this.warnings.warn(`refused:${reason}`, () => ({ fields: { reason, ...fields }, message }));
  }

  opened(session: Session): void {
    this.sessions.add(session);
    const { socket } = session;
    socket.on('data', (chunk: Buffer) => this.onChunk(session, chunk));
    socket.on('close', () => {
      this.sessions.delete(session);
      this.handshakes.end(session);
      this.detach(session, 'connection closed without a goodbye', 'lost');
    });
  }

  private onChunk(session: Session, chunk: Buffer): void {
    if (session.state === 'closed') return;
    try {
      session.link.receive(chunk, this.plane.batch);
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        // A bug handling one device's input must cost that device its session, not everyone the relay.
        this.log.error({ err, deviceId: session.deviceId || undefined, remote: session.remote },
          `Internal error handling ${session.deviceId || session.remote}; closing its session: ${(err as Error).message}`);
        this.detach(session, 'internal error');
        session.socket.destroy();
        return;
      }
      this.plane.countDrop(session, 'malformed');
      this.warnings.warn('protocol', () => ({
        fields: { remote: session.remote, deviceId: session.deviceId || undefined, code: err.code },
        message: `Closed ${session.deviceId || session.remote}: protocol error: ${err.message}`,
      }));
      session.goodbye({ code: 'protocol', reason: err.message });
      this.detach(session, `protocol error: ${err.message}`);
    } finally {
      this.plane.endBatch();
    }
  }

  /** Every frame but PING/PONG of an established session, which its Link answers. */
  private onFrame(session: Session, frame: Buffer): void {
    const type = frame[0]!;
    if (session.state === 'established') {
      if (type === FrameType.Data) this.plane.forward(session, frame);
      else if (type === FrameType.DataGso) {
        if (!session.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
        this.plane.forward(session, frame);
      } else if (type === FrameType.Goodbye) this.onGoodbye(session, frame.subarray(HEADER_BYTES));
      else throw new ProtocolError('unexpected', `${frameName(type)} from a client`);
      return;
    }
    if (session.state === 'handshake') this.handshakes.receive(session, frame);
  }

  /** The device leaves on purpose (its daemon stopped): gone for its peers now, not once the socket closed. */
  private onGoodbye(session: Session, payload: Buffer): void {
    const goodbye = parseGoodbye(payload);
    this.detach(session, `said goodbye: ${goodbye.reason}`, 'stopped');
    session.finish();
  }

  /** An authenticated device becomes a session: the newest connection of a device takes over its older one. */
  authenticated({ session, hello, acquired }: AuthenticatedDevice): void {
    const previous = this.byDevice.get(hello.deviceId);
    if (previous) {
      // The newest connection is the device: the old one is usually a dead TCP session not yet timed out.
      this.log.info({ deviceId: hello.deviceId, old: previous.remote, new: session.remote },
        `Device ${hello.deviceId} reconnected from ${session.remote}; closing its previous session from ${previous.remote}`);
      previous.goodbye({ code: 'replaced', reason: `replaced by a new connection from ${session.remote}` });
      this.detach(previous, 'replaced');
    }
    const now = Date.now();
    const { lease } = acquired;
    if (acquired.reclaimedFrom) {
      this.log.warn({ deviceId: hello.deviceId, ip: intToIpv4(lease.ip), from: acquired.reclaimedFrom.deviceId },
        `Pool exhausted: gave ${intToIpv4(lease.ip)} of ${acquired.reclaimedFrom.deviceId} (offline the longest, its lease expired) to ${hello.deviceId}`);
    }
    this.leases.touch(hello.deviceId, now, acquired.isNew);
    session.state = 'established';
    session.establishedAt = now;
    session.deviceId = hello.deviceId;
    session.ip = lease.ip;
    session.hello = hello;
    const capabilities = SERVER_CAPABILITIES.filter((c) => hello.capabilities.includes(c));
    session.gso = capabilities.includes(CAPABILITY_GSO);
    this.byDevice.set(hello.deviceId, session);
    this.plane.route(session);
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
    this.log.info({ deviceId: hello.deviceId, ip: welcome.ip, hostname: hello.hostname, remote: session.remote, isNew: acquired.isNew },
      `Device ${hello.deviceId} (${hello.hostname || 'no hostname'}) joined from ${session.remote} as ${welcome.ip}`);
  }

  /** Takes a session off the data plane and the directory; safe to call more than once. */
  private detach(session: Session, why: string, how: Departure = 'left'): void {
    if (session.state !== 'established') {
      session.state = 'closed';
      return;
    }
    session.state = 'closed';
    this.plane.unroute(session);
    if (this.byDevice.get(session.deviceId) === session) {
      const now = Date.now();
      this.byDevice.delete(session.deviceId);
      this.directory.leave(session.deviceId, session);
      this.leases.touch(session.deviceId, now);
      if (why !== 'replaced') {
        this.emit('peer', { event: 'down', deviceId: session.deviceId, ip: intToIpv4(session.ip), hostname: session.hello?.hostname ?? '', at: now } satisfies PeerEvent);
      }
      this.emit('sessions');
    }
    this.log.info({ deviceId: session.deviceId, ip: intToIpv4(session.ip), how, why, rxPackets: session.counters.rxPackets, txPackets: session.counters.txPackets },
      how === 'stopped' ? `Device ${session.deviceId} (${intToIpv4(session.ip)}) stopped (${why})` : `Device ${session.deviceId} (${intToIpv4(session.ip)}) ${how}: ${why}`);
  }

  /** A device that keeps talking but stops reading: what it is owed would outgrow its budget. */
  private cutOverBudget(session: Session, needed: number): void {
    this.cut.overBudget++;
    const who = session.deviceId || session.remote;
    const budget = session.link.budget.limit;
    this.warnings.warn('cut:overBudget', () => ({
      fields: { deviceId: session.deviceId || undefined, remote: session.remote, neededKib: Math.ceil(needed / 1024), budgetKib: budget / 1024 },
      message: `Closed ${who}: it does not read what is sent to it (${Math.ceil(needed / 1024)} KiB would be queued, ` +
        `beyond its budget of ${budget / 1024} KiB, [server] send_queue_kib)`,
    }));
    this.detach(session, 'not reading: over its send budget');
    session.socket.destroy();
  }

  /** Pings every established session; a session silent for deadAfterMs is closed. */
  private sweep(): void {
    const { keepaliveMs, deadAfterMs } = this.limits;
    const now = Date.now();
    this.handshakes.sweep();
    const ping = pingFrame();
    for (const session of this.sessions) {
      if (session.state !== 'established') continue;
      session.updateRates(now);
      if (session.link.keepalive(keepaliveMs, deadAfterMs, ping)) continue;
      this.log.warn({ deviceId: session.deviceId, remote: session.remote }, `Device ${session.deviceId} silent for ${deadAfterMs} ms: closing its session`);
      this.detach(session, `silent for ${deadAfterMs} ms`, 'lost');
      session.socket.destroy();
    }
  }
}

function peerInfo(lease: Lease, since: number): PeerInfo {
  return { deviceId: lease.deviceId, ip: intToIpv4(lease.ip), hostname: lease.hostname, underlay: lease.underlay, since };
}
