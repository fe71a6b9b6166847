import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { createSecureContext } from 'node:tls';
import { hostname } from 'node:os';
import { formatHostPort, type Logger } from '@mnedc/common';
import {
  certificateFingerprint, certificateKey, encodeEndorsement, encodeJsonFrame, formatIpv6, FrameType, groupMask, intToIpv4, isRelayAddress,
  mappedAddress, MAX_WELCOME_RELAYS, showFingerprint, ulaPrefix, type MulticastGroup,
} from '@mnedc/protocol';
import type { TunDevice } from '@mnedc/tun';
import type { ServerConfig } from './config';
import { DataPlane } from './dataplane/data-plane';
import { LocalDevice } from './dataplane/local-device';
import { newCounters } from './dataplane/target';
import { Devices, SWEEP_SLICES, type PeerEvent } from './devices';
import { startOverlayDns } from './dns/overlay-dns';
import { newDnsCounters, type DnsCounters, type DnsResponder } from './dns/responder';
import { fdLimitWarning, readOpenFileLimit } from './fd-limit';
import { spreadRetry, type RefusalCounters } from './handshake/join-gate';
import { limitsFromConfig, type ServerLimits } from './limits';
import type { GroupCounters } from './dataplane/multicast';
import type { Session } from './session';
import { ClusterState } from './cluster/cluster';
import { RelayMesh, unreachableAddress } from './mesh/mesh';
import { followRemotePeers } from './cluster/remote-peers';
import { ENDORSEMENT_WARN_DAYS } from './stores/endorsement-file';
import { DeviceBindings, JoinSecret, loadOrCreateIdentity, type ServerIdentity } from './stores/identity';
import type { Lease } from './stores/lease-pool';
import { PeerDirectory } from './stores/peer-directory';
import { LocalLeases, type BindingStore, type LeaseService } from './stores/services';

export { limitsFromConfig, type ServerLimits } from './limits';
export type { Departure, PeerEvent } from './devices';

export interface ServerDeps {
  config: ServerConfig;
  log: Logger;
  /** Opens and configures the server's TUN; absent when [server] interface is empty. */
  openDevice?: (name: string, address: string, prefix: number, mtu: number, address6?: string) => TunDevice;
  serverDeviceId: string;
}

/** How long a stopping relay waits for its GOODBYEs to be taken before closing connections regardless. */
const STOP_FLUSH_MS = 1_000;

/**
 * The relay, composed: Devices (devices.ts) takes connections through the Handshakes (handshake/) to
 * authenticated devices, each a Session routed by the DataPlane (dataplane/) beside the relay's own TUN
 * (LocalDevice); leases, key bindings and the peer directory (stores/) are the services they call. Here:
 * start and stop, and what the operator may do.
 *
 * Events: 'peer' (PeerEvent) when a device joins or leaves — a takeover by the same device is neither,
 * unless it comes under another hostname (then an 'up' with the new one) — 'remote-peer' (PeerEvent) when
 * a device comes to or leaves another relay of the cluster, and 'sessions' after any change of the
 * connected set.
 */
export class RelayServer extends EventEmitter {
  readonly leases: LeaseService;
  readonly bindings: BindingStore;
  /** The shared state of a relay cluster ([cluster] etcd); null for a single relay with local files. */
  readonly cluster: ClusterState | null;
  readonly serverIp: number;
  readonly directory: PeerDirectory;
  readonly plane: DataPlane;
  readonly devices: Devices;
  readonly startedAt = Date.now();
  readonly identity: ServerIdentity;
  /** The network's IPv6 /64 (8 bytes) when [server] ipv6 = yes, else null. */
  readonly prefix6: Buffer | null;
  private readonly log: Logger;
  private device: LocalDevice | null = null;
  private listener: NetServer | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private readonly joinSecrets: JoinSecret;
  private limits: ServerLimits;
  private address: AddressInfo | null = null;
  private dns: DnsResponder | null = null;
  /** Links to the cluster's other relays; null for a single relay (or until it listens). */
  mesh: RelayMesh | null = null;
  private remotePeers: ReturnType<typeof followRemotePeers> | null = null;

  constructor(private readonly deps: ServerDeps) {
    super();
    const { config, log } = deps;
    this.log = log;
    this.limits = limitsFromConfig(config);
    const { identity, created } = loadOrCreateIdentity(config.server.state_dir);
    this.identity = identity;
    const own = showFingerprint(certificateFingerprint(identity.certificate));
    if (created) log.info({ fingerprint: own }, `Created the server identity ${own} in ${config.server.state_dir}`);
    if (identity.endorsement) {
      const { relay, notAfter } = identity.endorsement;
      const days = Math.floor((notAfter * 1000 - Date.now()) / 86_400_000);
      const line = `A relay of the network ${showFingerprint(identity.fingerprint)} as ${relay}, endorsed until ${new Date(notAfter * 1000).toISOString()}`;
      if (days < ENDORSEMENT_WARN_DAYS) log.warn({ relay, days }, `${line}: ${days} days left; renew it with mnedcd-server --endorse on the network's first relay`);
      else log.info({ relay, days }, line);
    }
    const secureContext = createSecureContext({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
    this.joinSecrets = new JoinSecret(config.server.state_dir);
    if (config.cluster.etcd.length > 0) {
      this.cluster = new ClusterState(config, log, this.joinSecrets);
      this.bindings = this.cluster.bindings;
      this.leases = this.cluster.leases;
      void this.cluster.importLocalState(config.server.state_dir, config.server.subnet);
      // Another relay released, moved or forgot what a device connected here holds: it must not keep it.
      const lost = (what: string) => (deviceId: string, why: string) => {
        if (this.devices.session(deviceId)) this.kick(deviceId, `its ${what} ${why} on another relay of the cluster`);
      };
      this.cluster.leases.onLost = lost('lease');
      this.cluster.bindings.onLost = lost('key binding');
      log.info({ etcd: config.cluster.etcd, network: config.cluster.network },
        `Leases and key bindings are the cluster's, in etcd (${config.cluster.etcd.join(', ')}) under ${this.cluster.keys.root}`);
    } else {
      this.cluster = null;
      const bindings = new DeviceBindings(config.server.state_dir, {
        onCompactionError: (err) => log.error({ err }, `Could not compact the device bindings (retried later; nothing is lost): ${err.message}`),
      });
      if (bindings.loaded.tornBytes > 0) {
        log.warn(`Dropped a torn final record (${bindings.loaded.tornBytes} bytes) of the device bindings journal: ` +
          'the relay stopped mid-write; that binding was never confirmed to its device');
      }
      this.bindings = bindings;
      this.leases = new LocalLeases(config.server.state_dir, config.server.subnet, log);
    }
    this.serverIp = this.leases.serverIp;
    this.plane = new DataPlane(config.server.subnet, this.serverIp, log);
    this.plane.carry(groupMask(config.server.multicast), this.limits.multicast, config.server.mtu);
    this.prefix6 = config.server.ipv6 === 'yes' ? ulaPrefix(identity.fingerprint) : null;
    this.plane.routeIpv6(this.prefix6);
    this.directory = new PeerDirectory({
      schedule: (callback, delayMs) => {
        const timer = setTimeout(callback, delayMs);
        return { cancel: () => clearTimeout(timer) };
      },
    });
    this.devices = new Devices({
      log, config, serverDeviceId: deps.serverDeviceId, serverIp: this.serverIp, leases: this.leases, bindings: this.bindings,
      directory: this.directory, plane: this.plane, secureContext, limits: this.limits,
      joinSecret: () => (this.cluster?.joinSecret ?? this.joinSecrets).current,
      endorseFrame: identity.endorsement ? encodeJsonFrame(FrameType.Endorse, encodeEndorsement(identity.endorsement)) : null,
      dnsDomain: () => this.dns?.domain,
      address6: (ip: number) => (this.prefix6 ? formatIpv6(mappedAddress(this.prefix6, ip)) : undefined),
      mesh: () => this.mesh,
      relays: () => this.relayAddresses(),
      emit: (event: string, payload?: unknown) => this.emit(event, payload),
    });
  }

  async start(): Promise<AddressInfo> {
    const { server } = this.deps.config;
    if (server.interface && this.deps.openDevice) {
      const address6 = this.prefix6 ? formatIpv6(mappedAddress(this.prefix6, this.serverIp)) : undefined;
      const device = new LocalDevice(this.deps.openDevice(server.interface, intToIpv4(this.serverIp), server.subnet.prefix, server.mtu, address6), this.serverIp);
      this.device = device;
      device.start((from, frame) => this.plane.forward(from, frame), () => this.plane.endBatch());
      this.plane.route(device);
      this.directory.join({ deviceId: this.deps.serverDeviceId, ip: intToIpv4(this.serverIp), hostname: hostname(), underlay: [], since: this.startedAt });
      this.dns = await startOverlayDns({ config: this.deps.config, log: this.log, serverIp: this.serverIp, serverDeviceId: this.deps.serverDeviceId, events: this, prefix6: this.prefix6 });
      this.plane.serve(this.dns);
    }
    const listener = createServer((socket) => this.devices.handshakes.accept(socket));
    this.listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(server.listen.port, server.listen.host, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    listener.on('error', (err) => this.log.error({ err }, `Listener error: ${err.message}`));
    if (this.cluster) this.registerInCluster(listener.address() as AddressInfo);
    this.armSweep();
    const fds = fdLimitWarning(readOpenFileLimit(), this.limits.maxClients, this.leases.capacity, this.limits.maxHandshakes);
    if (fds) this.log.warn(fds.fields, fds.message);
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
    const sessions = [...this.devices.sessions];
    for (const session of sessions) {
      if (session.state === 'established') {
        session.goodbye({ code: 'shutdown', reason: 'server shutting down', reconnectMs: spreadRetry(1000) });
        this.devices.detach(session, 'server shutting down');
      } else {
        session.socket.destroy();
      }
    }
    this.mesh?.close();
    this.remotePeers?.stop();
    this.plane.attachMesh(null);
    await (this.cluster ? this.cluster.close() : Promise.all([this.leases.close(), this.bindings.close()]));
    this.plane.serve(null);
    this.dns?.close();
    if (this.device) {
      this.plane.unroute(this.device);
      this.device.close();
    }
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(sessions.map((s) => s.socket.closed || new Promise((resolve) => s.socket.once('close', resolve)))),
      new Promise<void>((resolve) => { deadline = setTimeout(resolve, STOP_FLUSH_MS); }),
    ]);
    clearTimeout(deadline);
    for (const session of this.devices.sessions) session.socket.destroy();
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

  /** Multicast and broadcast fan-out, one entry per group carried ([server] multicast). */
  multicastStats(): Array<{ group: MulticastGroup } & GroupCounters> {
    return this.deps.config.server.multicast.map((group) => ({ group, ...this.plane.multicast[group] }));
  }

  /** Traffic of the server's own TUN, which is a sender like any session. */
  get local(): DataPlane['totals'] {
    return this.device?.counters ?? newCounters();
  }

  /** Connections, in handshake or established. */
  get sessionCount(): number {
    return this.devices.sessions.size;
  }

  sessionList(): Session[] {
    return [...this.devices.sessions];
  }

  /** Established sessions only: what operators call the connected devices. */
  connected(): Session[] {
    return this.devices.connected();
  }

  session(deviceId: string): Session | undefined {
    return this.devices.session(deviceId);
  }

  get refused(): RefusalCounters {
    return this.devices.refused;
  }

  /** Sessions the relay closed to protect itself, by reason. */
  get cut(): Devices['cut'] {
    return this.devices.cut;
  }

  /** What the overlay's DNS responder did (all zero when it is off). */
  get dnsCounters(): DnsCounters {
    return this.dns?.counters ?? newDnsCounters();
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
    if (JSON.stringify(limits.multicast) !== JSON.stringify(this.limits.multicast)) this.plane.carry(groupMask(this.deps.config.server.multicast), limits.multicast, this.deps.config.server.mtu);
    this.limits = limits;
    this.devices.setLimits(limits);
    if (keepaliveChanged && this.keepaliveTimer) {
      clearInterval(this.keepaliveTimer);
      this.armSweep();
    }
  }

  /** This relay's ID in a cluster: the one its endorsement names, else its own device ID. */
  get relayId(): string {
    return this.identity.endorsement?.relay ?? this.deps.serverDeviceId;
  }

  /** Announces this relay and, from now on, which devices are on it. */
  private registerInCluster(address: AddressInfo): void {
    const { advertise } = this.deps.config.cluster;
    if (!advertise && (address.address === '0.0.0.0' || address.address === '::')) {
      this.log.warn(`[cluster] advertise is empty and the relay listens on ${address.address}: the other relays cannot reach it at that; set advertise = host:port`);
    }
    const key = certificateKey(this.identity.certificate);
    const registry = this.cluster!.register(this.relayId, formatHostPort(advertise ?? { host: address.address, port: address.port }), key);
    for (const session of this.devices.connected()) registry.attach(session.deviceId);
    const cluster = this.cluster!;
    const { keepaliveMs, deadAfterMs } = this.limits;
    this.mesh = new RelayMesh({
      network: cluster.keys.network, relayId: this.relayId, fingerprint: this.identity.fingerprint, certificate: this.identity.certificate,
      keyPem: this.identity.keyPem, ...(this.identity.endorsement ? { endorsement: this.identity.endorsement } : {}),
    }, this.plane, {
      holderOf: (ip) => cluster.leases.holderOf(ip),
      relayOf: (deviceId) => registry.relayOf(deviceId),
      others: () => registry.relays().filter((r) => r.id !== registry.self.id),
      networkSize: () => registry.networkSize,
    }, this.log, { keepaliveMs, deadAfterMs });
    registry.on('relays', () => this.mesh?.sync());
    this.mesh.sync();
    this.remotePeers = followRemotePeers(registry, this.directory, (deviceId) => cluster.leases.get(deviceId), (deviceId) => this.devices.isConnected(deviceId),
      (event) => this.emit('remote-peer', event));
    // Every session, a quiet takeover too: the device may have been recorded on another relay meanwhile.
    this.on('established', (deviceId: string) => registry.attach(deviceId));
    this.on('peer', (event: PeerEvent) => {
      if (event.event !== 'down') return;
      registry.detach(event.deviceId);
      this.remotePeers?.localLeft(event.deviceId);
    });
    // Another relay has the device since this one recorded it: the session here is a dead one.
    registry.on('moved', (deviceId: string, relay: string) => this.kick(deviceId, `it moved to relay ${relay}`));
  }

  /**
   * Where a device may go when this relay is lost: the registry's relays, this one first. An address a
   * client would refuse (etcd holds what any relay wrote) is left out rather than spoil the WELCOME.
   */
  private relayAddresses(): string[] {
    const registry = this.cluster?.registry;
    if (!registry) return [];
    return registry.relays().map((r) => r.advertise).filter((a) => isRelayAddress(a) && !unreachableAddress(a)).slice(0, MAX_WELCOME_RELAYS);
  }

  /** Devices.sweep visits one slice of the sessions per call: SWEEP_SLICES calls per keepalive interval. */
  private armSweep(): void {
    this.keepaliveTimer = setInterval(() => this.devices.sweep(), this.limits.keepaliveMs / SWEEP_SLICES);
  }

  /** Disconnects a device; it will reconnect (and keep its lease) unless the operator also releases it. */
  kick(deviceId: string, reason = 'disconnected by the operator'): boolean {
    const session = this.devices.session(deviceId);
    if (!session) return false;
    session.goodbye({ code: 'kicked', reason, reconnectMs: spreadRetry(1000) });
    this.devices.detach(session, reason);
    return true;
  }

  get joinString(): string {
    return this.joinSecrets.joinString(this.identity.fingerprint);
  }

  /** A new join secret (a cluster's: on every relay): join strings handed out before stop working; connected devices stay. */
  async rotateJoin(): Promise<string> {
    if (this.cluster) await this.cluster.joinSecret.rotate();
    else this.joinSecrets.rotate();
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
}
