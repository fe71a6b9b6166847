import type { Socket } from 'node:net';
import { encodeJsonFrame, FrameDecoder, FrameType, HEADER_BYTES, type Goodbye, type Hello, type Reject } from '@mnedc/protocol';
import type { DropReason } from './router';
import type { PeerSubscriber } from './peer-directory';

export type SessionState = 'handshake' | 'established' | 'closed';

export interface SessionCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: Record<DropReason, number>;
}

export function newCounters(): SessionCounters {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0 } };
}

/** Grace for a REJECT or GOODBYE to reach the peer before the socket is destroyed regardless. */
const LINGER_MS = 2_000;

/**
 * One device's connection. The server owns the logic; a session owns its socket, its decoder, its
 * outbound limit and its counters.
 *
 * Outbound DATA is bounded by `queueLimit` bytes waiting in user space: a device that stops reading loses
 * its own packets (counted as queueFull) and never makes the relay buffer without bound or stall others.
 * Control frames bypass the limit; they are few, and a silent device is cut after deadAfterMs anyway.
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
  /** The underlay address the connection comes from (a NAT router, for devices behind one). */
  source = '';
  /** Holds a handshake slot in the admission control until established or closed. */
  admitted = true;
  tlsReady = false;
  /** Negotiated "gso": the device takes DATA_GSO frames and may send them. */
  gso = false;

  constructor(readonly socket: Socket, public queueLimit: number, maxPayload?: number) {
    this.decoder = new FrameDecoder(maxPayload);
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  }

  /** False (and counted as missed) while the device is too far behind to be sent anything. */
  accepts(): boolean {
    if (this.socket.writableLength > this.queueLimit || this.state !== 'established') {
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
    if (!this.accepts()) return false;
    this.queueData(frame, corkList, packets, bytes);
    return true;
  }

  /** sendData after accepts() said yes. */
  queueData(frame: Buffer, corkList: Session[], packets: number, bytes: number): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      corkList.push(this);
    }
    this.socket.write(frame);
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

  uncork(): void {
    this.corked = false;
    this.socket.uncork();
  }

  sendControl(frame: Buffer): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    this.socket.write(frame);
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

  /** Flushes what is queued and closes; destroys after LINGER_MS if the peer does not take it. */
  private finish(): void {
    if (this.socket.destroyed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }
}
