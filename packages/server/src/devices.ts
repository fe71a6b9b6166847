import type { SecureContext } from 'node:tls';
import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { pingFrame } from '@mnedc/link';
import {
  CAPABILITY_GSO, CAPABILITY_PEERS_BIN, encodeJsonFrame, FrameType, frameName, HEADER_BYTES, intToIpv4, parseGoodbye, ProtocolError, type PeerInfo, type Welcome,
} from '@mnedc/protocol';
import type { ServerConfig } from './config';
import type { DataPlane } from './dataplane/data-plane';
import { Handshakes, type AuthenticatedDevice, type HandshakeHost } from './handshake/handshake';
import { newRefusalCounters, type RefusalCounters } from './handshake/join-gate';
import type { ServerLimits } from './limits';
import { Session } from './session';
import type { Lease } from './stores/lease-pool';
import { grantDiscovery, type PeerDirectory } from './stores/peer-directory';
import type { BindingStore, LeaseService } from './stores/services';
import type { RelayMesh } from './mesh/mesh';

/** Capabilities this server grants when a HELLO asks for them. */
const SERVER_CAPABILITIES: readonly string[] = [CAPABILITY_GSO, CAPABILITY_PEERS_BIN];

/**
 * How a device's session ended, as the log says it: it said GOODBYE (stopped), it vanished (lost: crash,
 * kill, network), or the relay ended it (left: kicked, replaced, relay stopping, protocol error, …).
 */
export type Departure = 'stopped' | 'lost' | 'left';

export interface PeerEvent {
  event: 'up' | 'down';
  deviceId: string;
  ip: string;
  hostname: string;
  at: number;
}

export interface DevicesDeps {
  log: Logger;
  config: ServerConfig;
  serverDeviceId: string;
  serverIp: number;
  leases: LeaseService;
  bindings: BindingStore;
  directory: PeerDirectory;
  plane: DataPlane;
  secureContext: SecureContext;
  limits: ServerLimits;
  joinSecret(): Buffer;
  /** The ENDORSE frame a relay with an endorsement sends every client first; null for the network's own. */
  endorseFrame: Buffer | null;
  /** The cluster's relay mesh, which takes connections that open with MESH_HELLO; null for a single relay. */
  mesh(): RelayMesh | null;
  /** The domain the relay answers DNS for, once its responder listens. */
  dnsDomain(): string | undefined;
  /** The IPv6 address of the lease `ip` in the network's /64; undefined without IPv6. */
  address6(ip: number): string | undefined;
  /** The cluster's relays (host:port) a WELCOME lists; empty for a single relay. */
  relays(): string[];
  emit(event: 'peer', payload: PeerEvent): void;
  emit(event: 'sessions'): void;
  /** Every session established, a quiet takeover included: the device is on this relay now. */
  emit(event: 'established', deviceId: string): void;
}

/** Devices.sweep runs this many times per keepalive interval, each time for one slice of the sessions. */
export const SWEEP_SLICES = 10;

/**
 * The life of a device between the relay's parts: a connection the Handshakes admitted, its frames, the
 * authenticated device becoming a routed Session (a newer connection of the same device takes over the
 * older), the keepalive sweep, and leaving — with the peer directory and the lease told at each step.
 */
export class Devices implements HandshakeHost {
  readonly log: Logger;
  readonly leases: LeaseService;
  readonly bindings: BindingStore;
  readonly serverDeviceId: string;
  readonly endorseFrame: Buffer | null;
  /** Sessions the relay closed to protect itself, by reason. */
  readonly cut = { overBudget: 0 };
  readonly refused = newRefusalCounters();
  readonly handshakes: Handshakes;
  /** Every connection, in handshake or established. */
  readonly sessions = new Set<Session>();
  private readonly byDevice = new Map<string, Session>();
  private sweepTick = 0;
  private nextSweepSlot = 0;
  /** Protocol errors and refusals, each rate-limited per reason. */
  private readonly warnings: RateLimitedWarning;
  private limits: ServerLimits;

  constructor(private readonly deps: DevicesDeps) {
    this.log = deps.log;
    this.leases = deps.leases;
    this.bindings = deps.bindings;
    this.serverDeviceId = deps.serverDeviceId;
    this.endorseFrame = deps.endorseFrame;
    this.limits = deps.limits;
    this.warnings = new RateLimitedWarning(deps.log);
    this.handshakes = new Handshakes(this, deps.limits, deps.secureContext, (s, frame) => this.onFrame(s, frame), (s, needed) => this.cutOverBudget(s, needed));
  }

  joinSecret(): Buffer {
    return this.deps.joinSecret();
  }

  setLimits(limits: ServerLimits): void {
    this.limits = limits;
    this.handshakes.setLimits(limits);
    for (const session of this.sessions) session.queueLimit = limits.sendQueueKib * 1024;
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
      if (session.relay) this.deps.mesh()?.down(session.relay, 'connection closed');
      this.detach(session, 'connection closed without a goodbye', 'lost');
    });
  }

  private onChunk(session: Session, chunk: Buffer): void {
    if (session.state === 'closed') return;
    try {
      session.link.receive(chunk, this.deps.plane.batch);
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        // A bug handling one device's input must cost that device its session, not everyone the relay.
        this.deps.log.error({ err, deviceId: session.deviceId || undefined, remote: session.remote },
          `Internal error handling ${session.deviceId || session.remote}; closing its session: ${(err as Error).message}`);
        this.detach(session, 'internal error');
        session.socket.destroy();
        return;
      }
      if (session.relay) {
        this.deps.mesh()?.down(session.relay, `protocol error: ${err.message}`);
        session.socket.destroy();
        return;
      }
      this.deps.plane.countDrop(session, 'malformed');
      this.warnings.warn('protocol', () => ({
        fields: { remote: session.remote, deviceId: session.deviceId || undefined, code: err.code },
        message: `Closed ${session.deviceId || session.remote}: protocol error: ${err.message}`,
      }));
      session.goodbye({ code: 'protocol', reason: err.message });
      this.detach(session, `protocol error: ${err.message}`);
    } finally {
      this.deps.plane.endBatch();
    }
  }

  /** Every frame but PING/PONG of an established session, which its Link answers. */
  private onFrame(session: Session, frame: Buffer): void {
    const type = frame[0]!;
    if (session.state === 'established') {
      if (type === FrameType.Data) this.deps.plane.forward(session, frame);
      else if (type === FrameType.DataGso) {
        if (!session.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
        this.deps.plane.forward(session, frame);
      } else if (type === FrameType.Goodbye) this.onGoodbye(session, frame.subarray(HEADER_BYTES));
      else throw new ProtocolError('unexpected', `${frameName(type)} from a client`);
      return;
    }
    if (session.state === 'relay') this.deps.mesh()!.receive(session.relay!, frame);
    else if (session.state === 'handshake') {
      if (type === FrameType.MeshHello && !session.hello) this.meshHello(session, frame);
      else this.handshakes.receive(session, frame);
    }
  }

  /** Another relay of the cluster dialing this one: its connection leaves the devices for the mesh. */
  private meshHello(session: Session, frame: Buffer): void {
    const mesh = this.deps.mesh();
    if (!mesh) throw new ProtocolError('unexpected', 'MESH_HELLO to a relay that is in no cluster');
    this.handshakes.end(session);
    const peer = mesh.accept(session, frame);
    if (!peer) return;
    this.handshakes.provedSource(session.socket.remoteAddress ?? '?');
    this.sessions.delete(session);
    session.relay = peer;
    session.state = 'relay';
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
    // A takeover is no leave and join for the peers, unless the old session was cut for its budget meanwhile
    // (it left), or it comes under another hostname: then "up" says the new name (DNS, watchers).
    let quietTakeover = false;
    if (previous) {
      // The newest connection is the device: the old one is usually a dead TCP session not yet timed out.
      this.deps.log.info({ deviceId: hello.deviceId, old: previous.remote, new: session.remote },
        `Device ${hello.deviceId} reconnected from ${session.remote}; closing its previous session from ${previous.remote}`);
      previous.goodbye({ code: 'replaced', reason: `replaced by a new connection from ${session.remote}` });
      quietTakeover = previous.state === 'established' && previous.hello?.hostname === hello.hostname;
      this.detach(previous, 'replaced');
    }
    const now = Date.now();
    const { lease } = acquired;
    if (acquired.reclaimedFrom) {
      this.deps.log.warn({ deviceId: hello.deviceId, ip: intToIpv4(lease.ip), from: acquired.reclaimedFrom.deviceId },
        `Pool exhausted: gave ${intToIpv4(lease.ip)} of ${acquired.reclaimedFrom.deviceId} (offline the longest, its lease expired) to ${hello.deviceId}`);
    }
    this.deps.leases.touch(hello.deviceId, now);
    session.state = 'established';
    session.establishedAt = now;
    session.deviceId = hello.deviceId;
    session.ip = lease.ip;
    session.hello = hello;
    const capabilities = SERVER_CAPABILITIES.filter((c) => hello.capabilities.includes(c));
    session.gso = capabilities.includes(CAPABILITY_GSO);
    session.peerFormat = capabilities.includes(CAPABILITY_PEERS_BIN) ? 'binary' : 'json';
    const discovery = grantDiscovery(hello.discovery, this.deps.directory.size, this.limits.discoveryFullMax);
    this.byDevice.set(hello.deviceId, session);
    this.deps.plane.route(session);
    const welcome: Welcome = {
      ip: intToIpv4(lease.ip),
      prefix: this.deps.config.server.subnet.prefix,
      mtu: this.deps.config.server.mtu,
      serverIp: intToIpv4(this.deps.serverIp),
      keepaliveMs: this.limits.keepaliveMs,
      deadAfterMs: this.limits.deadAfterMs,
      capabilities,
      discovery,
    };
    const dnsDomain = this.deps.dnsDomain();
    if (dnsDomain) welcome.dnsDomain = dnsDomain;
    const relays = this.deps.relays();
    if (relays.length > 0) welcome.relays = relays;
    if (this.deps.config.server.multicast.length > 0) welcome.multicast = this.deps.config.server.multicast;
    const ip6 = this.deps.address6(lease.ip);
    if (ip6 !== undefined) welcome.ip6 = ip6;
    session.sendControl(encodeJsonFrame(FrameType.Welcome, welcome));
    session.keepaliveMs = welcome.keepaliveMs;
    // Slots go to established sessions only, round robin: failed handshakes must not unbalance them.
    session.sweepSlot = this.nextSweepSlot++ % SWEEP_SLICES;
    this.deps.directory.join(peerInfo(lease, now), discovery === 'full' ? session : undefined);
    if (discovery === 'full') session.socket.on('drain', () => this.deps.directory.drained(session));
    if (!quietTakeover) this.deps.emit('peer', { event: 'up', deviceId: hello.deviceId, ip: welcome.ip, hostname: hello.hostname, at: now } satisfies PeerEvent);
    this.deps.emit('established', hello.deviceId);
    this.deps.emit('sessions');
    this.deps.log.info({ deviceId: hello.deviceId, ip: welcome.ip, hostname: hello.hostname, remote: session.remote, isNew: acquired.isNew },
      `Device ${hello.deviceId} (${hello.hostname || 'no hostname'}) joined from ${session.remote} as ${welcome.ip}`);
  }

  /** Takes a session off the data plane and the directory; safe to call more than once. */
  detach(session: Session, why: string, how: Departure = 'left'): void {
    if (session.state !== 'established') {
      session.state = 'closed';
      return;
    }
    session.state = 'closed';
    this.deps.plane.unroute(session);
    if (this.byDevice.get(session.deviceId) === session) {
      const now = Date.now();
      this.byDevice.delete(session.deviceId);
      this.deps.directory.leave(session.deviceId, session);
      this.deps.leases.touch(session.deviceId, now);
      if (why !== 'replaced') {
        this.deps.emit('peer', { event: 'down', deviceId: session.deviceId, ip: intToIpv4(session.ip), hostname: session.hello?.hostname ?? '', at: now } satisfies PeerEvent);
      }
      this.deps.emit('sessions');
    }
    this.deps.log.info({ deviceId: session.deviceId, ip: intToIpv4(session.ip), how, why, rxPackets: session.counters.rxPackets, txPackets: session.counters.txPackets },
      how === 'stopped' ? `Device ${session.deviceId} (${intToIpv4(session.ip)}) stopped (${why})` : `Device ${session.deviceId} (${intToIpv4(session.ip)}) ${how}: ${why}`);
  }

  /** A device that keeps talking but stops reading: what it is owed would outgrow its budget. */
  cutOverBudget(session: Session, needed: number): void {
    if (session.relay) {
      // Another relay not reading what this one sends it: the link goes, and is dialed again.
      this.deps.mesh()?.down(session.relay, `it does not read what this relay sends (${Math.ceil(needed / 1024)} KiB would be queued)`);
      session.socket.destroy();
      return;
    }
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

  /**
   * One of SWEEP_SLICES calls per keepalive interval (the server's timer): each visits its slice of the
   * established sessions for their keepalive round, so 10,000 PINGs never leave in one tick and stall
   * the data path. A session silent for deadAfterMs is closed. Devices ping the relay on their own, so a
   * session heard this round gets no PING (Link.keepalive's answerer).
   */
  sweep(): void {
    const { keepaliveMs, deadAfterMs } = this.limits;
    const now = Date.now();
    const slice = this.sweepTick++ % SWEEP_SLICES;
    if (slice === 0) {
      // Once per interval, as before the slicing: 'drain' events do this work as they come.
      this.handshakes.sweep();
      this.deps.directory.retry();
    }
    const ping = pingFrame();
    for (const session of this.sessions) {
      if (session.sweepSlot !== slice || session.state !== 'established') continue;
      session.updateRates(now);
      // A device pings at the interval its WELCOME said; one told a longer one (before a SIGHUP shortened
      // it) may be silent for a round while alive, so it is pinged every round as before.
      if (session.link.keepalive(keepaliveMs, deadAfterMs, ping, session.keepaliveMs <= keepaliveMs)) continue;
      this.deps.log.warn({ deviceId: session.deviceId, remote: session.remote }, `Device ${session.deviceId} silent for ${deadAfterMs} ms: closing its session`);
      this.detach(session, `silent for ${deadAfterMs} ms`, 'lost');
      session.socket.destroy();
    }
  }
}

function peerInfo(lease: Lease, since: number): PeerInfo {
  return { deviceId: lease.deviceId, ip: intToIpv4(lease.ip), hostname: lease.hostname, underlay: lease.underlay, since };
}
