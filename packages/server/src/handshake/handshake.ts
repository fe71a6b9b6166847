import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from '@mnedc/common';
import {
  EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, FrameType, frameName, HEADER_BYTES, ipv4ToInt, parseHello, ProtocolError,
  verifyHelloAuth, type Hello,
} from '@mnedc/protocol';
import { Session } from '../session';
import type { AcquireResult } from '../stores/lease-pool';
import { StoreUnavailableError, type BindingStore, type LeaseService } from '../stores/services';
import { Admission, type AdmissionLimits, type Refusal } from './admission';
import {
  identify, JoinLimits, spreadReject, spreadRetry, type JoinLimitSettings, type RefusalCounters, type Turnaway,
} from './join-gate';

export interface HandshakeLimits extends AdmissionLimits, JoinLimitSettings {
  sendQueueKib: number;
  handshakeTimeoutMs: number;
  /** An offline device keeps its address this long after it was last seen, even when the pool is full. */
  leaseLifetimeMs: number;
}

/** A connection whose HELLO proved its key, passed every limit, and whose lease and binding are durable. */
export interface AuthenticatedDevice {
  session: Session;
  hello: Hello;
  /** The fingerprint of the key it proved. */
  key: string;
  acquired: AcquireResult & { ok: true };
}

/** What the handshake needs of the relay around it. */
export interface HandshakeHost {
  readonly log: Logger;
  readonly leases: LeaseService;
  readonly bindings: BindingStore;
  readonly serverDeviceId: string;
  /** Sent first on every TLS session, before the device may speak (protocol endorsement.ts); null: none. */
  readonly endorseFrame: Buffer | null;
  /** The secret join strings carry now (rotatable). */
  joinSecret(): Buffer;
  isConnected(deviceId: string): boolean;
  readonly connectedCount: number;
  /** A connection was admitted: the relay tracks it and feeds it data. */
  opened(session: Session): void;
  authenticated(device: AuthenticatedDevice): void;
  /** Counts and logs (rate-limited) a connection turned away. */
  refuse(reason: keyof RefusalCounters, fields: Record<string, unknown>, message: string): void;
}

/**
 * How long a device told "the cluster's state is unreadable" waits before retrying: long enough that a
 * whole fleet reconnecting to a relay without etcd does not spend it on TLS handshakes (turnAway spreads
 * the hint over 1.5 times this, so they do not all return at once).
 */
const UNAVAILABLE_RETRY_MS = 15_000;

const REFUSAL_TEXT: Record<Refusal, string> = {
  rateLimited: 'too many new connections per second from this address ([limits] connections_per_source_per_second)',
  tooManyHandshakes: 'too many handshakes in progress ([limits] max_handshakes)',
  tooManyFromSource: 'too many handshakes in progress from this address ([limits] max_handshakes_per_source)',
};

/**
 * From TCP accept to an authenticated device: admission limits before any TLS work is spent, TLS 1.3,
 * the HELLO and its proof, the join limits, a lease, and the device's key binding made durable. Every
 * way out before that is a refusal: counted, logged rate-limited, REJECT sent where there is a session.
 */
export class Handshakes {
  private readonly admission: Admission;
  private readonly joinLimits: JoinLimits;

  constructor(private readonly host: HandshakeHost, private limits: HandshakeLimits, private readonly secureContext: SecureContext,
    private readonly onFrame: (session: Session, frame: Buffer) => void, private readonly onOverBudget: (session: Session, needed: number) => void) {
    this.admission = new Admission(limits);
    this.joinLimits = new JoinLimits(limits);
  }

  setLimits(limits: HandshakeLimits): void {
    this.limits = limits;
    this.admission.limits = limits;
    this.joinLimits.limits = limits;
  }

  sweep(): void {
    this.admission.sweep();
    this.joinLimits.sweep();
  }

  /** Every connection is TLS 1.3 from its first byte; limits apply before any TLS work is spent on it. */
  accept(raw: Socket): void {
    const source = raw.remoteAddress ?? '?';
    const handshake = this.admission.admit(source, () => {
      this.host.refuse('evicted', { remote: `${source}:${raw.remotePort ?? 0}` },
        `Closed unfinished handshakes to make room (${this.limits.maxHandshakes} in progress, [limits] max_handshakes), e.g. one from ${source}`);
      raw.destroy();
    });
    if (typeof handshake === 'string') {
      this.host.refuse(handshake, { source }, `Refused connections from ${source}: ${REFUSAL_TEXT[handshake]}`);
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    const socket = new TLSSocket(raw, { isServer: true, secureContext: this.secureContext });
    const session = new Session(socket, this.limits.sendQueueKib * 1024, this.onOverBudget, this.onFrame);
    session.handshake = handshake;
    session.handshakeTimer = setTimeout(() => {
      this.host.refuse('handshakeTimeout', { remote: session.remote }, `Closed ${session.remote}: no HELLO within ${this.limits.handshakeTimeoutMs} ms`);
      socket.destroy();
    }, this.limits.handshakeTimeoutMs);
    // The first TLS secret exists once a whole ClientHello arrived: from then on this is no silent slot-filler.
    socket.once('keylog', () => this.admission.started(handshake));
    socket.on('error', (err) => {
      if (!session.tlsReady) this.host.refuse('tlsFailed', { remote: session.remote }, `TLS handshake with ${session.remote} failed: ${err.message}`);
      else this.host.log.debug({ err, remote: session.remote }, 'socket error');
    });
    socket.once('secure', () => {
      session.tlsReady = true;
      if (this.host.endorseFrame) socket.write(this.host.endorseFrame);
    });
    this.host.opened(session);
  }

  /** A source that proved itself (another relay of the cluster): its handshakes are no longer the first evicted. */
  provedSource(source: string): void {
    this.admission.authenticated(source);
  }

  /** Frees the handshake slot of a session once, whether it got established or died trying. */
  end(session: Session): void {
    if (session.handshakeTimer) clearTimeout(session.handshakeTimer);
    session.handshakeTimer = null;
    if (session.handshake) {
      this.admission.release(session.handshake);
      session.handshake = null;
    }
  }

  /** A frame before the session is established: one HELLO, nothing else. */
  receive(session: Session, frame: Buffer): void {
    const type = frame[0]!;
    if (session.hello) throw new ProtocolError('unexpected', `${frameName(type)} before WELCOME`);
    if (type !== FrameType.Hello) throw new ProtocolError('unexpected', `${frameName(type)} before HELLO`);
    this.onHello(session, parseHello(frame.subarray(HEADER_BYTES)));
  }

  private onHello(session: Session, hello: Hello): void {
    this.end(session);
    const key = this.identify(session, hello);
    if (key === null) return;
    const { bindings } = this.host;
    const limited = this.joinLimits.check(hello.deviceId, {
      known: bindings.get(hello.deviceId) === key,
      connected: this.host.isConnected(hello.deviceId),
      connectedCount: this.host.connectedCount,
      boundCount: bindings.size,
      poolCapacity: this.host.leases.capacity,
    });
    if (limited) {
      this.turnAway(session, limited, { deviceId: hello.deviceId });
      return;
    }
    const acquired = this.acquire(session, hello);
    if (!acquired) return;
    // No WELCOME before the binding and the lease are on disk: a crash after it must neither free the ID
    // for another key nor give the address to another device. Both stores group-commit, in parallel.
    session.hello = hello;
    const isNew = bindings.get(hello.deviceId) === undefined;
    const binding = isNew ? bindings.bind(hello.deviceId, key) : bindings.pending(hello.deviceId);
    if (isNew) {
      binding!.then(() => this.host.log.info({ deviceId: hello.deviceId, key }, `Bound device ID ${hello.deviceId} to key ${key}`), () => {});
    }
    this.whenDurable({ session, hello, key, acquired }, binding);
  }

  /** Completes once what the device's WELCOME promises is durable; a storage error turns it away. */
  private whenDurable(device: AuthenticatedDevice, binding?: Promise<void>): void {
    const { session, hello } = device;
    const lease = this.host.leases.pending(hello.deviceId);
    if (!binding && !lease) {
      this.complete(device);
      return;
    }
    let failed = '';
    const watch = (write: Promise<void> | undefined, what: string) => write?.catch((err: Error) => {
      failed ||= what;
      throw err;
    });
    Promise.all([watch(binding, 'device bindings'), watch(lease, 'leases')]).then(() => this.complete(device), (err: Error) => {
      if (err instanceof StoreUnavailableError) {
        if (session.state === 'closed') return;
        // The device learns that it must wait, not where the relay keeps its state (etcd's addresses stay in the log).
        this.turnAway(session, { reason: 'clusterUnavailable', message: `Told ${hello.deviceId} to retry: the cluster's shared state cannot be written now (${err.message})`,
          reject: { code: 'busy', reason: 'the cluster\'s shared state cannot be written now; retry later', retryAfterMs: UNAVAILABLE_RETRY_MS } },
        { deviceId: hello.deviceId });
        return;
      }
      this.host.log.error({ err, deviceId: hello.deviceId }, `Rejected ${hello.deviceId}: cannot record its ${failed === 'leases' ? 'lease' : 'key binding'}: ${err.message}`);
      if (session.state !== 'closed') {
        session.reject({ code: 'busy', reason: `the server cannot record ${failed} (storage error)`, retryAfterMs: spreadRetry(30_000) });
      }
    });
  }

  /** Turns a session away: counted and logged (rate-limited) under its reason, REJECT sent, connection closed. */
  private turnAway(session: Session, turnaway: Turnaway, fields: Record<string, unknown>): void {
    this.host.refuse(turnaway.reason, { remote: session.remote, ...fields }, turnaway.message);
    session.reject(spreadReject(turnaway.reject));
  }

  /** The fingerprint of the key the device proved, or null once it has been turned away. */
  private identify(session: Session, hello: Hello): string | null {
    const ekm = (session.socket as TLSSocket).exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const auth = verifyHelloAuth(hello.auth, this.host.joinSecret(), ekm, hello.deviceId);
    const verdict = identify(hello, auth, this.host.bindings.get(hello.deviceId), this.host.serverDeviceId, session.remote);
    if (typeof verdict !== 'string') {
      this.turnAway(session, verdict, { deviceId: hello.deviceId, ...(auth.ok ? {} : { failure: auth.failure }) });
      return null;
    }
    this.admission.authenticated(session.socket.remoteAddress ?? '?');
    return verdict;
  }

  private acquire(session: Session, hello: Hello): (AcquireResult & { ok: true }) | undefined {
    const result = this.host.leases.acquire({
      deviceId: hello.deviceId,
      hostname: hello.hostname,
      underlay: hello.underlay,
      requestedIp: hello.previousIp !== undefined ? ipv4ToInt(hello.previousIp) : undefined,
      now: Date.now(),
      leaseLifetimeMs: this.limits.leaseLifetimeMs,
      isConnected: (deviceId) => this.host.isConnected(deviceId),
    });
    if (result.ok) return result;
    if (result.unavailable) {
      this.turnAway(session, { reason: 'clusterUnavailable', message: `Told ${hello.deviceId} to retry: ${result.reason}`,
        reject: { code: 'busy', reason: result.reason, retryAfterMs: result.retryAfterMs ?? UNAVAILABLE_RETRY_MS } }, { deviceId: hello.deviceId });
      return undefined;
    }
    this.turnAway(session, { reason: 'poolFull', message: `Rejected ${hello.deviceId}: ${result.reason}`,
      reject: { code: 'pool-full', reason: result.reason, retryAfterMs: 30_000 } }, { deviceId: hello.deviceId });
    return undefined;
  }

  /**
   * The binding and the lease are durable. If that took a write, the world may have moved meanwhile: the connection
   * closed, the operator released or forgot the device, or other devices filled max_clients. (The device
   * connecting again is the relay's to settle: the newer connection takes over.)
   */
  private complete(device: AuthenticatedDevice): void {
    const { session, hello, key } = device;
    if (session.state === 'closed') return;
    if (this.host.bindings.get(hello.deviceId) !== key) {
      session.reject({ code: 'busy', reason: `the binding of device ID ${hello.deviceId} changed while it joined; try again`, retryAfterMs: 1000 });
      return;
    }
    const full = this.joinLimits.capacity(hello.deviceId, { connected: this.host.isConnected(hello.deviceId), connectedCount: this.host.connectedCount });
    if (full) {
      this.turnAway(session, full, { deviceId: hello.deviceId });
      return;
    }
    if (this.host.leases.get(hello.deviceId) === device.acquired.lease) {
      this.host.authenticated(device);
      return;
    }
    // Released while it waited: a new lease, which must be durable in turn.
    const acquired = this.acquire(session, hello);
    if (acquired) this.whenDurable({ ...device, acquired });
  }
}
