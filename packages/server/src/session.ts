import type { Socket } from 'node:net';
import { encodeJsonFrame, FrameType, type Goodbye, type Hello, type Reject } from '@mnedc/protocol';
import { Link, type WriteBatch } from '@mnedc/link';
import type { Handshake } from './handshake/admission';
import { newCounters, type Target } from './dataplane/target';
import type { PeerFormat, PeerSubscriber } from './stores/peer-directory';
import type { PeerRelay } from './mesh/peer-relay';

/** 'relay': another relay of the cluster, whose link the mesh owns (mesh/mesh.ts). */
export type SessionState = 'handshake' | 'established' | 'relay' | 'closed';

/**
 * One device's connection to the relay: its Link, and once the handshake made it a device, a target of
 * the data plane at its leased address. The relay owns the logic; a session holds the device's state and
 * counters.
 *
 * What is queued for the device is bounded by its Link's budget: a device that stops reading loses its
 * own packets (counted as queueFull for their senders, missed for it) and never makes the relay buffer
 * without bound or stall others; one that keeps talking without reading is cut (`onOverBudget`).
 */
export class Session implements Target, PeerSubscriber {
  readonly local = false;
  deviceId = '';
  ip = 0;
  hello: Hello | null = null;
  readonly link: Link;
  readonly counters = newCounters();
  readonly remote: string;
  readonly openedAt = Date.now();
  establishedAt = 0;
  /** Which of the keepalive sweep's slices visits this session (Devices.sweep). */
  sweepSlot = 0;
  /** The keepalive interval its WELCOME announced: the device pings at that pace. */
  keepaliveMs = 0;
  /** Rates over the last keepalive round, refreshed by the relay's sweep. */
  rates = { rxPps: 0, txPps: 0, rxBps: 0, txBps: 0 };
  private sample = { at: Date.now(), rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0 };
  handshakeTimer: NodeJS.Timeout | null = null;
  /** Its slot in the admission control, held until established or closed. */
  handshake: Handshake | null = null;
  tlsReady = false;
  /** Negotiated "gso": the device takes DATA_GSO frames and may send them. */
  gso = false;
  /** Negotiated "peers-bin": discovery goes as PEERS_BIN. */
  peerFormat: PeerFormat = 'json';
  private current: SessionState = 'handshake';
  /** Set when the connection is another relay's mesh link. */
  relay: PeerRelay | null = null;

  constructor(socket: Socket, budgetBytes: number, onOverBudget: (session: Session, needed: number) => void,
    onFrame: (session: Session, frame: Buffer) => void, maxPayload?: number) {
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.link = new Link(socket, { budgetBytes, maxPayload, onOverBudget: (needed) => onOverBudget(this, needed) }, (frame) => onFrame(this, frame));
  }

  get state(): SessionState {
    return this.current;
  }

  /** Keepalive frames are the link's to answer only while established (or a relay's). */
  set state(next: SessionState) {
    this.current = next;
    this.link.open = next === 'established' || next === 'relay';
  }

  get socket(): Socket {
    return this.link.socket;
  }

  get rttMs(): number {
    return this.link.rttMs;
  }

  /** DATA frames for this device dropped because its queue was full. */
  get missed(): number {
    return this.link.missed;
  }

  set queueLimit(bytes: number) {
    this.link.budgetBytes = bytes;
  }

  accepts(bytes: number): boolean {
    return this.link.accepts(bytes);
  }

  deliver(frames: Buffer, batch: WriteBatch): void {
    this.link.queueData(frames, batch);
  }

  /** False when the session is gone or was cut for being over its budget. */
  sendControl(frame: Buffer, batch?: WriteBatch): boolean {
    if (this.current === 'closed') return false;
    return this.link.sendControl(frame, batch);
  }

  /**
   * Discovery may fill at most half the room DATA has: the other half stays for packets, and a device
   * reading slowly gets its peer list later (the directory waits for 'drain') instead of losing data.
   */
  discoveryRoom(): number {
    return this.current === 'established' ? this.link.roomBelow(0.5) : 0;
  }

  updateRates(now: number): void {
    const seconds = (now - this.sample.at) / 1000;
    if (seconds <= 0) return;
    const c = this.counters;
    this.rates = {
      rxPps: (c.rxPackets - this.sample.rxPackets) / seconds,
      txPps: (c.txPackets - this.sample.txPackets) / seconds,
      rxBps: ((c.rxBytes - this.sample.rxBytes) * 8) / seconds,
      txBps: ((c.txBytes - this.sample.txBytes) * 8) / seconds,
    };
    this.sample = { at: now, rxPackets: c.rxPackets, rxBytes: c.rxBytes, txPackets: c.txPackets, txBytes: c.txBytes };
  }

  reject(reject: Reject): void {
    this.sendControl(encodeJsonFrame(FrameType.Reject, reject));
    this.state = 'closed';
    this.link.finish();
  }

  goodbye(goodbye: Goodbye): void {
    this.sendControl(encodeJsonFrame(FrameType.Goodbye, goodbye));
    this.link.finish();
  }

  /** Flushes what is queued and closes (see Link.finish). */
  finish(): void {
    this.link.finish();
  }
}
