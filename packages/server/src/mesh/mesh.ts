import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { RateLimitedWarning, type Logger } from '@mnedc/common';
import { pingFrame } from '@mnedc/link';
import {
  CAPABILITY_GSO, certificateKey, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_MESH_LABEL, FrameType, frameName, HEADER_BYTES,
  MESH_VERSION, meshHelloProblem, parseGoodbye, parseMeshHello, ProtocolError, type MeshHello,
} from '@mnedc/protocol';
import type { DataPlane, MeshRoutes } from '../dataplane/data-plane';
import { newCounters, type TrafficCounters } from '../dataplane/target';
import type { Session } from '../session';
import { dialRelay, MESH_BUDGET_BYTES, MESH_CAPABILITIES, type MeshIdentity } from './dial';
import { PeerRelay, type MeshLinkState } from './peer-relay';

export { MESH_BUDGET_BYTES, type MeshIdentity } from './dial';

const REDIAL_MIN_MS = 250;
const REDIAL_MAX_MS = 5_000;

/** Which relay carries which device: the cluster's leases and registry (watched, never re-read per packet). */
export interface MeshDirectory {
  /** The device holding an overlay address. */
  holderOf(ip: number): string | undefined;
  relayOf(deviceId: string): string | undefined;
  /** Relays up now (self excluded), with where they listen and the fingerprint of their certificate. */
  others(): Array<{ id: string; advertise: string; key?: string }>;
  /** About how many devices the network has on all relays. */
  networkSize(): number;
}

export interface MeshPeerView {
  id: string;
  link: MeshLinkState;
  dialed: boolean;
  since: number;
  rttMs: number;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Why the link is down, '' when up. */
  problem: string;
}

interface Dialer {
  advertise: string;
  timer: NodeJS.Timeout | null;
  socket: TLSSocket | null;
  delayMs: number;
  problem: string;
  downSince: number;
}

/**
 * The relay's links to the other relays of its cluster (protocol mesh.ts). For each pair, the relay whose
 * ID sorts first dials and redials while the other is listed in the registry; the other accepts. Packets
 * for a device attached to another relay go over that relay's link in one hop; what arrives over a link
 * is delivered only to this relay's own devices (DataPlane.forwardFromRelay), so nothing loops.
 */
export class RelayMesh implements MeshRoutes {
  private readonly links = new Map<string, PeerRelay>();
  /** Per relay ever linked, across its links. */
  private readonly traffic = new Map<string, TrafficCounters>();
  private readonly dialers = new Map<string, Dialer>();
  /** The certificate fingerprint each listed relay registered. */
  private keys = new Map<string, string>();
  private readonly key: KeyObject;
  private readonly warnings: RateLimitedWarning;
  private keepalive: NodeJS.Timeout;
  private closed = false;
  /** Packets for a relay this one had no link to, and links lost: the operator's view. */
  readonly counters = { linksLost: 0, refused: 0 };

  constructor(private readonly self: MeshIdentity, private readonly plane: DataPlane, private readonly directory: MeshDirectory,
    private readonly log: Logger, private readonly timing: { keepaliveMs: number; deadAfterMs: number }) {
    this.key = createPrivateKey(self.keyPem);
    this.warnings = new RateLimitedWarning(log);
    this.keepalive = setInterval(() => this.sweep(), timing.keepaliveMs);
    plane.attachMesh(this);
  }

  // ---- routing (the data plane's hot path) ----

  /** The link for a device on another relay; 'down' when that relay is not linked now; null: on no relay. */
  routeTo(ip: number): PeerRelay | 'down' | null {
    const deviceId = this.directory.holderOf(ip);
    if (deviceId === undefined) return null;
    const relay = this.directory.relayOf(deviceId);
    if (relay === undefined || relay === this.self.relayId) return null;
    const peer = this.links.get(relay);
    return peer !== undefined && peer.open ? peer : 'down';
  }

  /** Whether `source` is the address of a device `peer` carries: the only source it may send from. */
  carries(peer: PeerRelay, source: number): boolean {
    const deviceId = this.directory.holderOf(source);
    return deviceId !== undefined && this.directory.relayOf(deviceId) === peer.relayId;
  }

  networkSize(): number {
    return this.directory.networkSize();
  }

  /** The relays linked now: each gets one copy of a device's multicast. */
  *linked(): Iterable<PeerRelay> {
    for (const peer of this.links.values()) if (peer.open) yield peer;
  }

  // ---- the set of links ----

  /** The registry changed: dial relays that appeared (where this one dials), forget those gone. */
  sync(): void {
    if (this.closed) return;
    const others = this.directory.others();
    const listed = new Map(others.map((r) => [r.id, r.advertise]));
    this.keys = new Map(others.flatMap((r) => (r.key ? [[r.id, r.key] as const] : [])));
    for (const [id, advertise] of listed) {
      if (this.self.relayId >= id) continue;
      if (unreachableAddress(advertise)) {
        this.warnings.warn(`advertise:${id}`, () => ({ fields: { relay: id, advertise },
          message: `Relay ${id} advertises ${advertise}, which no other relay can reach; set its [cluster] advertise` }));
        continue;
      }
      const dialer = this.dialers.get(id);
      if (!dialer) {
        this.dialers.set(id, { advertise, timer: null, socket: null, delayMs: REDIAL_MIN_MS, problem: 'connecting', downSince: Date.now() });
        this.dial(id);
      } else if (dialer.advertise !== advertise) {
        // It restarted elsewhere: the next dial goes to the new address.
        dialer.advertise = advertise;
        dialer.delayMs = REDIAL_MIN_MS;
      }
    }
    for (const [id, dialer] of this.dialers) {
      if (listed.has(id)) continue;
      if (dialer.timer) clearTimeout(dialer.timer);
      dialer.socket?.destroy();
      this.dialers.delete(id);
      this.log.info({ relay: id }, `Relay ${id} left the cluster's registry; no longer linking to it`);
    }
    // A relay gone from the registry (dead, or cut off from etcd: its devices' attachments went with it).
    for (const [id, peer] of this.links) {
      if (listed.has(id)) continue;
      this.down(peer, 'it left the cluster\'s registry');
      peer.link.socket.destroy();
    }
  }

  /** Links as the operator sees them, one per relay known (listed or linked). */
  view(): MeshPeerView[] {
    const ids = new Set([...this.directory.others().map((r) => r.id), ...this.links.keys()]);
    return [...ids].sort().map((id) => {
      const peer = this.links.get(id);
      const dialer = this.dialers.get(id);
      const up = peer !== undefined && peer.open;
      const c = this.traffic.get(id);
      return {
        id,
        link: up ? 'up' : dialer && !dialer.timer ? 'connecting' : 'down',
        dialed: peer?.dialed ?? dialer !== undefined,
        since: up ? peer.openedAt : dialer?.downSince ?? 0,
        rttMs: up ? Math.round(peer.link.rttMs * 10) / 10 : -1,
        txPackets: c?.txPackets ?? 0,
        txBytes: c?.txBytes ?? 0,
        rxPackets: c?.rxPackets ?? 0,
        rxBytes: c?.rxBytes ?? 0,
        problem: up ? '' : dialer?.problem ?? 'waiting for it to dial this relay',
      };
    });
  }

  /** Traffic per linked relay, for stats and metrics: the counters of the current (or last) link to each. */
  stats(): Array<{ relay: string; up: number; rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; drops: TrafficCounters['drops'] }> {
    return [...this.traffic].map(([relay, { rxPackets, rxBytes, txPackets, txBytes, drops }]) =>
      ({ relay, up: this.links.get(relay)?.open ? 1 : 0, rxPackets, rxBytes, txPackets, txBytes, drops: { ...drops } }));
  }

  close(): void {
    this.closed = true;
    clearInterval(this.keepalive);
    for (const dialer of this.dialers.values()) {
      if (dialer.timer) clearTimeout(dialer.timer);
      dialer.socket?.destroy();
    }
    this.dialers.clear();
    for (const peer of this.links.values()) peer.link.finish(encodeJsonFrame(FrameType.Goodbye, { code: 'shutdown', reason: 'relay shutting down' }), 500);
    this.links.clear();
  }

  // ---- accepting (the relay's listener saw MESH_HELLO instead of HELLO) ----

  /**
   * A connection whose first frame is MESH_HELLO. Its session leaves the devices: from here on its frames
   * come to `receive`. Returns the peer, or null when refused (REJECT sent, connection closing).
   */
  accept(session: Session, frame: Buffer): PeerRelay | null {
    const hello = parseMeshHello(frame.subarray(HEADER_BYTES));
    const problem = this.helloProblem(hello, session.socket as TLSSocket);
    if (problem) {
      this.counters.refused++;
      // One key for every refusal: an unauthenticated peer must not grow the relay's memory per attempt.
      this.warnings.warn('mesh-refused', () => ({ fields: { remote: session.remote, relay: hello.relay },
        message: `Refused a mesh link from ${session.remote} claiming to be relay ${hello.relay}: ${problem}` }));
      session.reject({ code: 'auth', reason: `mesh link refused: ${problem}` });
      return null;
    }
    const peer = new PeerRelay(hello.relay, session.link, false, session.remote, this.countersOf(hello.relay));
    peer.gso = hello.capabilities.includes(CAPABILITY_GSO);
    session.link.budgetBytes = MESH_BUDGET_BYTES;
    session.link.sendControl(encodeJsonFrame(FrameType.MeshWelcome, { relay: this.self.relayId, capabilities: MESH_CAPABILITIES }));
    this.up(peer);
    return peer;
  }

  /**
   * Why a MESH_HELLO does not open a link, or null. The cheap checks come first; then the relay must be
   * one the registry lists, presenting the certificate it registered (an old key with a still valid
   * endorsement is refused), endorsed, and holding that key on this TLS session.
   */
  private helloProblem(hello: MeshHello, socket: TLSSocket): string | null {
    if (hello.version !== MESH_VERSION) return `it speaks mesh version ${hello.version}, this relay ${MESH_VERSION}`;
    if (hello.network !== this.self.network) return `it is in the cluster network ${hello.network}, this relay in ${this.self.network}`;
    if (hello.to !== this.self.relayId) return `it meant to reach relay ${hello.to}, this is ${this.self.relayId}`;
    if (hello.relay === this.self.relayId) return 'it claims this relay\'s own ID';
    const listed = this.directory.others().find((r) => r.id === hello.relay);
    if (!listed) return `no relay ${hello.relay} is listed in the cluster's registry`;
    if (listed.key !== undefined && listed.key !== certificateKey(hello.certificate)) {
      return `its certificate is not the one relay ${hello.relay} registered`;
    }
    const ekm = socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_MESH_LABEL, Buffer.alloc(0));
    return meshHelloProblem(hello, this.self.fingerprint, ekm, Date.now());
  }

  /** A frame of an open link (PING and PONG are the link's): DATA to the data plane, GOODBYE ends it. */
  receive(peer: PeerRelay, frame: Buffer): void {
    // After a GOODBYE or once the link is replaced, what still comes is no longer this link's to deliver.
    if (!peer.open) return;
    const type = frame[0];
    if (type === FrameType.Data) this.plane.forwardFromRelay(peer, frame);
    else if (type === FrameType.DataGso) {
      if (!peer.gso) throw new ProtocolError('unexpected', 'DATA_GSO without the gso capability');
      this.plane.forwardFromRelay(peer, frame);
    } else if (type === FrameType.Goodbye) {
      const goodbye = parseGoodbye(frame.subarray(HEADER_BYTES));
      this.down(peer, `it said goodbye: ${goodbye.reason}`);
      peer.link.finish();
    } else {
      throw new ProtocolError('unexpected', `${frameName(type!)} on a mesh link`);
    }
  }

  /** The connection of a link ended (either side, any reason). */
  down(peer: PeerRelay, why: string): void {
    if (!peer.open) return;
    peer.open = false;
    peer.link.open = false;
    if (this.links.get(peer.relayId) !== peer) return;
    this.links.delete(peer.relayId);
    this.counters.linksLost++;
    this.log.warn({ relay: peer.relayId, remote: peer.remote, why }, `Mesh link to relay ${peer.relayId} (${peer.remote}) is down: ${why}; ` +
      'packets between its devices and this relay\'s are dropped (drops.relayDown) until it is back');
    const dialer = this.dialers.get(peer.relayId);
    if (dialer && peer.dialed) {
      // The link's socket is done with: its close is no failed dial to report again.
      dialer.socket = null;
      dialer.problem = why;
      dialer.downSince = Date.now();
      this.redial(peer.relayId, dialer);
    }
  }

  private countersOf(relay: string): TrafficCounters {
    let counters = this.traffic.get(relay);
    if (!counters) {
      counters = newCounters();
      this.traffic.set(relay, counters);
    }
    return counters;
  }

  private up(peer: PeerRelay): void {
    const previous = this.links.get(peer.relayId);
    peer.open = true;
    peer.link.open = true;
    this.links.set(peer.relayId, peer);
    if (previous && previous !== peer) {
      // The newest link is the relay's: the old one is usually a dead connection not yet timed out.
      previous.open = false;
      previous.link.socket.destroy();
    }
    this.log.info({ relay: peer.relayId, remote: peer.remote, dialed: peer.dialed }, `Mesh link to relay ${peer.relayId} (${peer.remote}) is up`);
  }

  // ---- dialing ----

  private redial(id: string, dialer: Dialer): void {
    if (this.closed || dialer.timer || this.dialers.get(id) !== dialer) return;
    const delay = dialer.delayMs;
    dialer.delayMs = Math.min(dialer.delayMs * 2, REDIAL_MAX_MS);
    dialer.timer = setTimeout(() => {
      dialer.timer = null;
      this.dial(id);
    }, delay * (0.75 + Math.random() / 2));
  }

  private dial(id: string): void {
    const dialer = this.dialers.get(id);
    if (!dialer || this.closed) return;
    let peer: PeerRelay | null = null;
    let socket: TLSSocket | null = null;
    socket = dialRelay({
      id, advertise: dialer.advertise, registeredKey: this.keys.get(id), self: this.self, key: this.key, log: this.log,
      batch: this.plane.batch, endBatch: () => this.plane.endBatch(),
      opened: (link, gso) => {
        const opened = new PeerRelay(id, link, true, dialer.advertise, this.countersOf(id));
        opened.gso = gso;
        peer = opened;
        dialer.delayMs = REDIAL_MIN_MS;
        dialer.problem = '';
        this.up(opened);
        return (frame) => this.receive(opened, frame);
      },
      ended: (why) => {
        if (peer?.open) this.down(peer, why);
        else if (dialer.socket === socket) this.fail(id, dialer, why);
      },
    });
    dialer.socket = socket;
  }

  private fail(id: string, dialer: Dialer, why: string): void {
    dialer.socket = null;
    if (dialer.problem !== why) {
      this.warnings.warn(`dial:${id}`, () => ({ fields: { relay: id, advertise: dialer.advertise, why },
        message: `Cannot link to relay ${id} at ${dialer.advertise}: ${why}; retrying` }));
    }
    dialer.problem = why;
    this.redial(id, dialer);
  }

  /** Keepalive for every open link; a silent one is closed (and redialed by its dialer). */
  private sweep(): void {
    const ping = pingFrame();
    for (const peer of [...this.links.values()]) {
      if (peer.link.keepalive(this.timing.keepaliveMs, this.timing.deadAfterMs, ping)) continue;
      this.down(peer, `silent for ${this.timing.deadAfterMs} ms`);
      peer.link.socket.destroy();
    }
  }
}

/** An advertised address no other relay reaches: unspecified (the relay listens on all and advertises nothing). */
export function unreachableAddress(advertise: string): boolean {
  return /^(0\.0\.0\.0|\[::\]):/.test(advertise);
}
