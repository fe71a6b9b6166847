import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { formatHostPort, RateLimitedWarning, type HostPort } from '@mnedc/common';
import { Link, pingFrame } from '@mnedc/link';
import {
  CAPABILITY_GSO, CAPABILITY_PEERS_BIN, encodeJsonFrame, FrameType, frameName, HANDSHAKE_TIMEOUT_MS, HEADER_BYTES, ipv4ToInt, parseGoodbye,
  parsePeersBinary, parsePeerUpdate, parseReject, ProtocolError, subnetOf, type DiscoveryMode, type Hello, type Subnet, type Welcome,
} from '@mnedc/protocol';
import { RetryPolicy, type FailureKind } from './backoff';
import { newClientCounters } from './counters';
import { describeSocketError, rejectKind } from './failure';
import { checkWelcome } from './lease-overlap';
import { logPeerChanges } from './peer-log';
import { NO_PEERS, PeerTable, type PeerChanges } from './peer-table';
import { PreferredProbe, PROBE_EVERY_MS, RelayChoice, RETURN_AFTER_MS } from './relay-choice';
import { buildHello, endorsedRelayProblem, ENDORSE_WAIT_MS, openTunnel, probeRelay, serverMismatch } from './secure';
import { relayBudget, TunBridge } from './tun-bridge';
import { applyIpv6 } from './ipv6';
import type { ClientDeps, ClientState } from './client-deps';

export type { ClientDeps, ClientState } from './client-deps';

/**
 * One device's link to the relay: connect, handshake, shuttle TUN ⇄ Link, reconnect forever.
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
  readonly counters = newClientCounters();
  readonly peers: PeerTable;
  /** The peer push the relay granted in its last WELCOME (wire.ts, DISCOVERY); without the list the table is empty. */
  discovery: DiscoveryMode | null = null;
  private link: Link | null = null;
  /** The round-trip time the last link measured, shown until the next one measures its own. */
  private lastRttMs = -1;
  private readonly retry: RetryPolicy;
  /** How the current attempt failed, once known: the retry schedule, and the one line logged for it. */
  private failure: { kind: FailureKind; line?: string } = { kind: 'outage' };
  /** A session was established before: the next one is a reconnection. */
  private joinedBefore = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  /** Why the relay's certificate is not the pinned one, until its ENDORSE proves it a relay of the network. */
  private unendorsed: string | null = null;
  private retryHintMs: number | null = null;
  private paused = false;
  private configuredAddress = '';
  private queueLimit: number;
  private readonly bridge: TunBridge;
  private readonly warnings: RateLimitedWarning;
  private readonly choice: RelayChoice;
  private readonly preferredProbe: PreferredProbe;
  /** Leaving a healthy relay for the preferred one: the next attempt goes there at once. */
  private returning = false;
  /** The relay left for the preferred one, until the preferred one welcomed the device: back there if it does not. */
  private returnFrom: HostPort | null = null;

  constructor(private readonly deps: ClientDeps) {
    super();
    this.peers = new PeerTable(deps.deviceId);
    this.retry = deps.retry ?? new RetryPolicy();
    this.queueLimit = deps.config.client.send_queue_kib * 1024;
    this.warnings = new RateLimitedWarning(deps.log);
    this.bridge = new TunBridge(deps.device, this.counters, this.warnings, deps.log, () => this.server);
    this.choice = new RelayChoice(deps.config.client.server, deps.learnedRelays);
    this.preferredProbe = new PreferredProbe({
      probeEveryMs: PROBE_EVERY_MS, returnAfterMs: RETURN_AFTER_MS,
      probe: (relay) => probeRelay(relay.host, relay.port, deps.credentials.join.fingerprint), ...deps.failback,
    });
  }

  /** Whether the current (or last) session moves offloaded super-packets. */
  get offloading(): boolean {
    return this.bridge.gso;
  }

  get rttMs(): number {
    const link = this.link;
    return link && link.rttMs >= 0 ? link.rttMs : this.lastRttMs;
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
    if (this.link) this.link.budgetBytes = relayBudget(this.queueLimit);
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

  /** The relay connected to, or tried next. */
  get server(): string {
    return formatHostPort(this.choice.current);
  }

  /** Every relay the device may use, in the order it tries them. */
  get relays(): string[] {
    return this.choice.all;
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
    const link = this.link;
    if (!link || link.socket.destroyed) return Promise.resolve();
    const closed = new Promise<void>((resolve) => link.socket.once('close', () => resolve()));
    if (joined && !link.socket.writableEnded) link.finish(encodeJsonFrame(FrameType.Goodbye, { code: 'shutdown', reason: 'client shutting down' }), 500);
    else link.socket.destroy();
    return closed;
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    const { host, port } = this.choice.current;
    // The chunk is a view of a reused buffer: the Link consumes it before returning (frames split across
    // chunks are copied by the decoder, and DATA views are written to the TUN at the end of the chunk).
    const socket: TLSSocket = (this.deps.openTunnel ?? openTunnel)(host, port, (chunk) => this.onChunk(link, chunk));
    const link = new Link(socket, {
      budgetBytes: relayBudget(this.queueLimit),
      onOverBudget: (needed) => this.fail(link, `${this.server} does not read what this device sends (${Math.ceil(needed / 1024)} KiB would be queued)`),
    }, (frame) => this.onFrame(link, frame));
    this.link = link;
    this.failure = { kind: 'outage' };
    socket.setNoDelay(true);
    this.handshakeTimer = setTimeout(() => {
      if (this.unendorsed !== null) this.refuseRelay(link, this.unendorsed);
      else this.fail(link, `no answer from ${this.server} within ${HANDSHAKE_TIMEOUT_MS} ms`);
    }, HANDSHAKE_TIMEOUT_MS);
    let secured = false;
    socket.on('secureConnect', () => {
      secured = true;
      // Another certificate may still be a relay of the network: its ENDORSE, first, decides (onFrame).
      this.unendorsed = serverMismatch(socket, this.deps.credentials.join.fingerprint);
      if (this.unendorsed === null) this.hello(link, socket);
      else {
        // A relay of the network writes its ENDORSE as its TLS handshake completes; a wrong server writes none.
        const why = this.unendorsed;
        setTimeout(() => { if (this.unendorsed === why && this.link === link) this.refuseRelay(link, why); }, ENDORSE_WAIT_MS).unref();
      }
    });
    socket.on('drain', () => {
      if (this.paused && link === this.link) {
        this.paused = false;
        this.deps.device.resume();
      }
    });
    socket.on('error', (err) => {
      // After the relay's REJECT or GOODBYE (our side ended), that is the reason, not how the socket went.
      if (link !== this.link || socket.writableEnded) return;
      const failure = describeSocketError(err, secured);
      this.lastError = failure.text;
      this.failure = { kind: failure.kind };
    });
    socket.on('close', () => this.onClose(link));
  }

  /** Refuses the relay: nothing has been sent yet, so a wrong one learns neither the device ID nor any proof. */
  private refuseRelay(link: Link, why: string): void {
    this.lastError = why;
    this.failure = { kind: 'mistake', line: `Refusing ${this.server}: ${why}` };
    link.socket.destroy();
  }

  private hello(link: Link, socket: TLSSocket): void {
    link.sendControl(encodeJsonFrame(FrameType.Hello, buildHello(socket, this.deps.credentials, {
      deviceId: this.deps.deviceId,
      hostname: this.deps.hostname,
      underlay: this.deps.underlay(),
      capabilities: this.bridge.vnet ? [CAPABILITY_GSO, CAPABILITY_PEERS_BIN] : [CAPABILITY_PEERS_BIN],
      previousIp: this.lease?.ip ?? this.deps.previousIp,
      discovery: this.deps.config.client.discovery as Hello['discovery'],
    })));
  }

  private onChunk(link: Link, chunk: Buffer): void {
    // Stopping: the GOODBYE is on its way, and whatever the relay still sends is no longer ours to act on.
    if (link !== this.link || this.state === 'stopped') return;
    try {
      link.receive(chunk);
    } catch (err) {
      // Bytes behind a refused WELCOME: the connection is already over, and the refusal is its reason.
      if (link.socket.destroyed) return;
      if (err instanceof ProtocolError) this.fail(link, `protocol error from ${this.server}: ${err.message}`);
      // Anything else (the TUN refusing an address, a bug) costs this connection, never the daemon.
      else this.fail(link, `cannot handle what ${this.server} sent: ${(err as Error).message}`, err as Error);
    } finally {
      try {
        this.bridge.flush();
      } catch (err) {
        this.fail(link, `cannot write to ${this.bridge.name}: ${(err as Error).message}`, err as Error);
      }
    }
  }

  /** Every frame but PING/PONG of a joined link, which the Link answers. */
  private onFrame(link: Link, frame: Buffer): void {
    // Frames behind a refused WELCOME in the same chunk: the connection is over, its reason already set.
    if (link.socket.destroyed) return;
    const type = frame[0]!;
    const payload = frame.subarray(HEADER_BYTES);
    if (this.state === 'connected') {
      switch (type) {
        case FrameType.Data:
          this.bridge.receive(payload);
          return;
        case FrameType.DataGso:
          if (!this.bridge.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
          this.bridge.receiveOffloaded(frame);
          return;
        case FrameType.Peers:
        case FrameType.PeersBin:
          this.onPeerChanges(this.peers.apply(type === FrameType.Peers ? parsePeerUpdate(payload) : parsePeersBinary(payload), this.overlay()));
          return;
        case FrameType.Goodbye: {
          const goodbye = parseGoodbye(payload);
          this.retryHintMs = goodbye.reconnectMs ?? null;
          this.deps.log.warn({ code: goodbye.code, reason: goodbye.reason }, `Server closed the session: ${goodbye.reason}`);
          this.lastError = `server: ${goodbye.reason}`;
          link.socket.end();
          return;
        }
        default:
          throw new ProtocolError('unexpected', `${frameName(type)} from the server`);
      }
    }
    if (type === FrameType.Endorse) {
      // Needed only from a relay whose certificate is not the pinned one; otherwise nothing to act on.
      if (this.unendorsed === null) return;
      const problem = endorsedRelayProblem(payload, link.socket as TLSSocket, this.deps.credentials.join.fingerprint);
      if (problem) return this.refuseRelay(link, `it presented another certificate than the join string pins, and ${problem}`);
      this.unendorsed = null;
      this.hello(link, link.socket as TLSSocket);
    } else if (this.unendorsed !== null) {
      this.refuseRelay(link, this.unendorsed);
    } else if (type === FrameType.Welcome) {
      const welcome = this.checkedWelcome(payload, link.socket as TLSSocket);
      if (welcome) this.onWelcome(link, welcome);
      else link.socket.destroy();
    }
    else if (type === FrameType.Reject) {
      const reject = parseReject(payload);
      this.retryHintMs = reject.retryAfterMs ?? null;
      this.lastError = `rejected (${reject.code}): ${reject.reason}`;
      this.failure = { kind: rejectKind(reject.code), line: `Server ${this.server} rejected this device: ${reject.reason}` };
      link.socket.end();
    } else throw new ProtocolError('unexpected', `${frameName(type)} before WELCOME`);
  }

  /**
   * The lease as the relay offers it, or null, refused, when acting on it would be unsafe (checkWelcome).
   * A refusal is an operator's to fix (or a hostile relay's doing): one error line per attempt, in status
   * too, and retries on the slow schedule rather than every second.
   */
  private checkedWelcome(payload: Buffer, socket: TLSSocket): Welcome | null {
    try {
      return checkWelcome(payload, {
        relay: { address: (socket.remoteAddress ?? '').replace(/^::ffff:/, ''), source: (socket.localAddress ?? '').replace(/^::ffff:/, '') },
        localNetworks: this.deps.localNetworks,
        tunName: this.bridge.name,
        allowed: this.deps.config.client.allow_overlap,
        log: this.deps.log,
      });
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.lastError = `refused the lease: ${err.message}`;
      this.failure = { kind: 'mistake', line: `Refusing the lease ${this.server} offered: ${err.message}` };
      return null;
    }
  }

  private onWelcome(link: Link, welcome: Welcome): void {
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
    this.bridge.setOffloading(welcome.capabilities.includes(CAPABILITY_GSO));
    this.bridge.setOverlay(welcome.ip, welcome.prefix, applyIpv6(this.deps.device, welcome, this.bridge.ipv6, this.deps.log, this.deps.hostIpv6));
    this.discovery = welcome.discovery ?? 'full';
    if (this.discovery !== 'full') this.onPeerChanges(this.peers.apply(NO_PEERS));
    const changed = this.lease?.ip !== welcome.ip;
    this.lease = welcome;
    this.state = 'connected';
    link.open = true;
    this.lastError = '';
    this.retry.reset();
    this.retryHintMs = null;
    if (this.joinedBefore) this.counters.reconnects++;
    this.joinedBefore = true;
    if (changed) this.deps.onLease?.(welcome);
    if (welcome.relays && this.choice.learn(welcome.relays)) this.deps.onRelays?.(this.choice.learned);
    if (this.returnFrom !== null) {
      this.returnFrom = null;
      this.preferredProbe.returned();
    }
    if (!this.choice.onPreferred) this.preferredProbe.start(this.choice.preferred, () => this.returnToPreferred(link));
    this.keepaliveTimer = setInterval(() => {
      if (!link.keepalive(welcome.keepaliveMs, welcome.deadAfterMs, pingFrame())) this.fail(link, `no word from ${this.server} for ${welcome.deadAfterMs} ms`);
    }, welcome.keepaliveMs);
    this.deps.log.info({ server: this.server, ip: welcome.ip, prefix: welcome.prefix, interface: this.bridge.name, discovery: this.discovery },
      `Connected to ${this.server} as ${welcome.ip}/${welcome.prefix} on ${this.bridge.name}${this.discovery === 'full' ? '' : ` (discovery ${this.discovery}: no peer list)`}`);
  }

  /** The leased subnet, which every peer's address must be a host of. */
  private overlay(): Subnet | null {
    return this.lease ? subnetOf(ipv4ToInt(this.lease.ip), this.lease.prefix) : null;
  }

  private onPeerChanges(changes: PeerChanges): void {
    logPeerChanges(changes, this.deps.log, this.warnings, this.server, this.lease);
    if (changes.up.length + changes.down.length > 0) this.emit('peers', changes);
  }

  /** Ends a connection on purpose; with `err` (something went wrong on our side) it is logged as an error. */
  private fail(link: Link, why: string, err?: Error): void {
    if (link !== this.link) return;
    this.lastError = why;
    if (err) this.deps.log.error({ server: this.server, err }, `Dropping the connection: ${why}`);
    else this.deps.log.warn({ server: this.server }, `Dropping the connection: ${why}`);
    link.socket.destroy();
  }

  private onClose(link: Link): void {
    if (link !== this.link) return;
    this.link = null;
    if (link.rttMs >= 0) this.lastRttMs = link.rttMs;
    this.clearTimers();
    if (this.paused) {
      this.paused = false;
      this.deps.device.resume();
    }
    if (this.state === 'stopped') return;
    // Another certificate than the pinned one, and closed without an endorsement: the wrong server it was.
    if (this.unendorsed !== null && this.failure.kind !== 'mistake') {
      this.lastError = this.unendorsed;
      this.failure = { kind: 'mistake', line: `Refusing ${this.server}: ${this.unendorsed}` };
    }
    this.unendorsed = null;
    const wasConnected = this.state === 'connected';
    if (this.returning || (this.returnFrom !== null && !wasConnected)) {
      // To the preferred relay now; or, when it turned the device away, straight back where it was.
      const back = this.returning ? null : this.returnFrom;
      if (back) {
        this.deps.log.warn({ server: this.server, back: formatHostPort(back) }, `The preferred relay ${this.server} did not take this device back ` +
          `(${this.lastError || 'connection closed'}); returning to ${formatHostPort(back)} and waiting longer before the next try`);
        this.choice.select(back);
        this.preferredProbe.returnFailed();
        this.returnFrom = null;
      } else {
        this.returnFrom = this.choice.current;
        this.choice.prefer();
      }
      this.returning = false;
      this.state = 'waiting';
      this.retryInMs = 0;
      this.retryTimer = setTimeout(() => this.connect(), 0);
      return;
    }
    this.returnFrom = null;
    // A cluster: the next attempt goes to the next relay, so a lost one costs its devices a reconnect. A
    // relay only a WELCOME named that proves not to be one of the network is dropped from the list.
    const lost = this.server;
    if (this.failure.kind === 'mistake' && !wasConnected && this.choice.dropIfLearned()) this.deps.onRelays?.(this.choice.learned);
    else this.choice.next();
    const { kind, line } = this.failure;
    const delay = this.retry.next(kind, this.retryHintMs);
    this.retryHintMs = null;
    this.retryInMs = delay;
    if (!wasConnected) this.counters.failedAttempts++;
    this.state = 'waiting';
    const why = this.lastError || 'connection closed';
    const fields = { server: lost, next: this.server, delayMs: delay, failure: kind };
    const next = this.server === lost ? '' : ` ${wasConnected ? 'to' : 'with'} ${this.server}`;
    // One line per attempt, at one level: for a mistake an operator has to act, and the waits grow to minutes meanwhile.
    if (wasConnected) this.deps.log.warn(fields, `Lost ${lost} (${why}); reconnecting${next} in ${delay} ms, keeping ${this.lease?.ip} on ${this.bridge.name}`);
    else this.deps.log[kind === 'mistake' ? 'error' : 'warn'](fields, `${line ?? `Cannot join ${lost}: ${why}`}; retrying${next} in ${delay} ms`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private clearTimers(): void {
    for (const timer of [this.retryTimer, this.keepaliveTimer, this.handshakeTimer]) if (timer) clearTimeout(timer);
    this.retryTimer = this.keepaliveTimer = this.handshakeTimer = null;
    this.preferredProbe.stop();
  }

  /** The preferred relay has answered for the failback wait: a new session there (same IP and TUN). */
  private returnToPreferred(link: Link): void {
    if (link !== this.link || this.state !== 'connected') return;
    const preferred = formatHostPort(this.choice.preferred);
    this.deps.log.info({ server: this.server, preferred }, `Returning to the preferred relay ${preferred}: it has answered for a while`);
    this.returning = true;
    link.finish(encodeJsonFrame(FrameType.Goodbye, { code: 'shutdown', reason: `moving to the preferred relay ${preferred}` }), 500);
  }

  /** TUN → relay; while the relay is behind, the TUN is paused and the kernel's queue absorbs and drops. */
  private onDeviceBatch(batch: Buffer, count: number): void {
    const link = this.link;
    if (this.state !== 'connected' || !link) {
      this.counters.dropsOffline += count;
      return;
    }
    this.bridge.send(link, batch, count);
    if (link.socket.writableLength > this.queueLimit && !this.paused) {
      // Let the kernel's TUN queue absorb and drop, as a congested link would, rather than buffering here.
      this.paused = true;
      this.deps.device.pause();
    }
  }
}
