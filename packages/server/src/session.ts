import type { Socket } from 'node:net';
import { encodeJsonFrame, FrameDecoder, FrameType, HEADER_BYTES, type Goodbye, type Hello, type Reject } from '@mnedc/protocol';
import type { DropReason } from './router';
import type { Handshake } from './admission';
import type { PeerSubscriber } from './peer-directory';
import { chargeFor, copyIfPinning, SendBudget, WRITE_OVERHEAD_BYTES } from './send-budget';

export type SessionState = 'handshake' | 'established' | 'closed';

export interface SessionCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: Record<DropReason, number>;
}

export function newCounters(): SessionCounters {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0, multicast: 0, broadcast: 0, ipv6: 0 } };
}

/** Grace for a REJECT or GOODBYE to reach the peer before the socket is destroyed regardless. */
const LINGER_MS = 2_000;

/**
 * One device's connection. The server owns the logic; a session owns its socket, its decoder, its
 * outbound budget and its counters.
 *
 * Everything queued for the device is charged to its SendBudget (send-budget.ts). DATA stops at the
 * budget's data limit: a device that stops reading loses its own packets (counted as queueFull) and never
 * makes the relay buffer without bound or stall others. Control frames may use the reserve above it; one
 * that does not fit means the device has stopped reading while still talking to us, and `onOverBudget`
 * cuts it: the relay's memory is never what gives.
 */
export class Session implements PeerSubscriber {
  state: SessionState = 'handshake';
  deviceId = '';
  ip = 0;
  hello: Hello | null = null;
  readonly decoder: FrameDecoder;
  readonly counters = newCounters();
  readonly remote: string;
  readonly openedAt = Date.now();
  establishedAt = 0;
  /** Set on every received chunk; the keepalive sweep clears it and counts silent rounds. */
  heard = true;
  silentRounds = 0;
  rttMs = -1;
  corked = false;
  /** Rates over the last keepalive round, refreshed by the server's sweep. */
  rates = { rxPps: 0, txPps: 0, rxBps: 0, txBps: 0 };
  private sample = { at: Date.now(), rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0 };
  /** DATA frames for this device dropped because its queue was full. */
  missed = 0;
  handshakeTimer: NodeJS.Timeout | null = null;
  /** Its slot in the admission control, held until established or closed. */
  handshake: Handshake | null = null;
  tlsReady = false;
  /** Negotiated "gso": the device takes DATA_GSO frames and may send them. */
  gso = false;
  readonly budget: SendBudget;

  constructor(readonly socket: Socket, budgetBytes: number, private readonly onOverBudget: (session: Session, needed: number) => void,
    maxPayload?: number) {
    this.decoder = new FrameDecoder(maxPayload);
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.budget = new SendBudget(budgetBytes);
  }

  set queueLimit(bytes: number) {
    this.budget.limit = bytes;
  }

  /** Bytes charged to this device's budget now. */
  get queued(): number {
    return this.budget.settle(this.socket.writableLength);
  }

  /** False (and counted as missed) while `bytes` more DATA would not fit this device's budget. */
  accepts(bytes: number): boolean {
    if (this.state !== 'established' || this.queued + bytes + WRITE_OVERHEAD_BYTES > this.budget.dataLimit) {
      // Counted against the sender by the caller; here it is what this device missed.
      this.missed++;
      return false;
    }
    return true;
  }

  /**
   * Queues DATA or DATA_GSO frames (one, or several back to back: `packets` of them carrying `bytes` of
   * IP packets) unless the device is too far behind. The caller uncorks after its batch.
   */
  sendData(frame: Buffer, corkList: Session[], packets = 1, bytes = frame.length - HEADER_BYTES): boolean {
    if (!this.accepts(frame.length)) return false;
    this.queueData(frame, corkList, packets, bytes);
    return true;
  }

  /** sendData after accepts() said yes. */
  queueData(frame: Buffer, corkList: Session[], packets: number, bytes: number): void {
    this.cork(corkList);
    const owned = copyIfPinning(frame);
    this.enqueue(owned, chargeFor(owned));
    this.counters.txPackets += packets;
    this.counters.txBytes += bytes;
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

  /** Holds writes until the caller's batch ends (uncork), so they leave in one system call. */
  private cork(corkList: Session[]): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    this.budget.openBatch();
    corkList.push(this);
  }

  uncork(): void {
    this.corked = false;
    this.budget.closeBatch();
    this.socket.uncork();
  }

  /**
   * Queues a control frame; false when the session is gone or was cut for being over its budget. With a
   * cork list it joins the caller's batch (a PONG for each PING of a chunk is one write, not one each).
   */
  sendControl(frame: Buffer, corkList?: Session[]): boolean {
    if (this.state === 'closed' || this.socket.destroyed) return false;
    const owned = copyIfPinning(frame);
    const charge = chargeFor(owned);
    const needed = this.queued + charge;
    if (needed > this.budget.limit) {
      this.onOverBudget(this, needed);
      return false;
    }
    if (corkList) this.cork(corkList);
    this.enqueue(owned, charge);
    return true;
  }

  /** The one place bytes are queued for the device, so every one of them is charged. */
  private enqueue(owned: Buffer, charge: number): void {
    this.socket.write(owned);
    this.budget.add(owned.length, charge);
  }

  reject(reject: Reject): void {
    this.sendControl(encodeJsonFrame(FrameType.Reject, reject));
    this.state = 'closed';
    this.finish();
  }

  goodbye(goodbye: Goodbye): void {
    this.sendControl(encodeJsonFrame(FrameType.Goodbye, goodbye));
    this.finish();
  }

  /**
   * Flushes what is queued and closes; destroys after LINGER_MS if the peer does not take it (a device
   * holding its half of the connection open must not keep a descriptor of the relay's for ever).
   */
  finish(): void {
    if (this.socket.destroyed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }
}
