import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { encodeFrame, FrameDecoder, FrameType, HEADER_BYTES, PING_BYTES } from '@mnedc/protocol';
import { chargeFor, copyIfPinning, SendBudget, WRITE_OVERHEAD_BYTES } from './send-budget';

/**
 * A batch of writes: every link written to while handling one chunk (or one TUN batch) is corked and
 * joins the batch; the caller flushes them all at its end, so each link's writes leave in one writev.
 */
export type WriteBatch = Flushable[];

export interface Flushable {
  flush(): void;
}

export interface LinkOptions {
  /** What the peer may make us hold for it, DATA and control alike (send-budget.ts). */
  budgetBytes: number;
  /** The largest payload taken from the peer; default the protocol's MAX_PAYLOAD. */
  maxPayload?: number;
  /**
   * A control frame would not fit the budget: the peer keeps talking but does not read. The owner ends
   * the link; our memory is never what gives.
   */
  onOverBudget?: (needed: number) => void;
}

/** Grace for a REJECT or GOODBYE to reach the peer before the socket is destroyed regardless. */
export const LINGER_MS = 2_000;
/** An answerer's PING to a peer it hears anyway goes every this many keepalive rounds, for rttMs alone. */
export const RTT_ROUNDS = 8;

/** A PING carrying the sender's monotonic clock, which the PONG brings back as the round-trip time. */
export function pingFrame(now = performance.now()): Buffer {
  // Memory of its own (not a view of Node's pool), so the relay queues one PING to every device uncopied.
  const ping = Buffer.allocUnsafeSlow(HEADER_BYTES + PING_BYTES);
  ping.writeUInt32BE(((FrameType.Ping << 24) | PING_BYTES) >>> 0);
  ping.writeDoubleBE(now, HEADER_BYTES);
  return ping;
}

/**
 * One framed, encrypted connection to a peer — a device's to its relay, the relay's to each device, and
 * later relay to relay: frames in (decoder.ts), keepalive, ping/pong and frames out under a budget.
 * The owner speaks the protocol above it (handshake, DATA, discovery); the link knows only frames.
 *
 * Receiving: `receive` decodes a chunk and hands each frame to the owner, except PING and PONG once the
 * link is `open` (its handshake done): those are answered and timed here. Before that they are the
 * owner's to refuse.
 *
 * Sending: everything queued is charged to the budget (send-budget.ts). DATA stops at the budget's data
 * limit (`accepts`: a peer that stops reading loses its own packets, counted as `missed`); control frames
 * may use the reserve above it, and one that does not fit calls onOverBudget. A sender that can wait
 * instead of dropping (a TUN) writes with `writeData` and pauses while `queued` is above its limit,
 * resuming on the socket's 'drain'.
 */
export class Link implements Flushable {
  readonly decoder: FrameDecoder;
  readonly budget: SendBudget;
  /** The handshake is over: keepalive frames are the link's. */
  open = false;
  /** Set on every received chunk; each keepalive round clears it and counts the silent ones. */
  heard = true;
  silentRounds = 0;
  /** Keepalive rounds so far (an answerer's RTT probe every RTT_ROUNDS). */
  private rounds = 0;
  rttMs = -1;
  /** DATA frames for the peer dropped because its queue was full. */
  missed = 0;
  private corked = false;
  private batch: WriteBatch | undefined;
  private readonly dispatch: (frame: Buffer) => void;

  constructor(readonly socket: Socket, private readonly options: LinkOptions, onFrame: (frame: Buffer) => void) {
    this.decoder = new FrameDecoder(options.maxPayload);
    this.budget = new SendBudget(options.budgetBytes);
    this.dispatch = (frame) => {
      if (this.open) {
        const type = frame[0];
        if (type === FrameType.Ping) {
          this.sendControl(encodeFrame(FrameType.Pong, frame.subarray(HEADER_BYTES)), this.batch);
          return;
        }
        if (type === FrameType.Pong) {
          this.rttMs = performance.now() - frame.readDoubleBE(HEADER_BYTES);
          return;
        }
      }
      onFrame(frame);
    };
  }

  /**
   * Decodes a chunk, which may be a view of a reused buffer: frames are handled before this returns.
   * Throws ProtocolError on a malformed stream. PONGs join `batch` when given.
   */
  receive(chunk: Buffer, batch?: WriteBatch): void {
    this.heard = true;
    this.batch = batch;
    this.decoder.push(chunk, this.dispatch);
  }

  /**
   * One keepalive round: false once the peer has been silent for deadAfterMs (the owner ends the link),
   * else `ping` (pingFrame) is sent. `answerer` is for the side whose peer pings on its own schedule (the
   * relay: every client pings each keepaliveMs): a peer heard this round needs no PING for liveness, so
   * one goes only when it was silent, or every RTT_ROUNDS rounds to keep rttMs fresh. That halves the
   * idle frames a relay handles per device.
   */
  keepalive(keepaliveMs: number, deadAfterMs: number, ping: Buffer, answerer = false): boolean {
    const heard = this.heard;
    if (heard) {
      this.heard = false;
      this.silentRounds = 0;
    } else if (++this.silentRounds * keepaliveMs >= deadAfterMs) {
      return false;
    }
    this.rounds++;
    if (!answerer || !heard || this.rounds % RTT_ROUNDS === 1) this.sendControl(ping);
    return true;
  }

  set budgetBytes(bytes: number) {
    this.budget.limit = bytes;
  }

  /** Bytes charged to the budget now. */
  get queued(): number {
    return this.budget.settle(this.socket.writableLength);
  }

  /** False (and counted as missed) while `bytes` more DATA would not fit the budget. */
  accepts(bytes: number): boolean {
    if (!this.open || this.queued + bytes + WRITE_OVERHEAD_BYTES > this.budget.dataLimit) {
      this.missed++;
      return false;
    }
    return true;
  }

  /**
   * Bytes that can be queued now while the queue stays within `share` of the data limit: for traffic
   * that can wait (discovery), so it never takes the room DATA needs and never needs the control reserve.
   */
  roomBelow(share: number): number {
    if (!this.open || this.socket.destroyed || this.socket.writableEnded) return 0;
    return Math.max(0, this.budget.dataLimit * share - this.queued);
  }

  /** Queues DATA that accepts() took, in the caller's batch. */
  queueData(frame: Buffer, batch: WriteBatch): void {
    this.cork(batch);
    const owned = copyIfPinning(frame);
    this.enqueue(owned, chargeFor(owned));
  }

  /**
   * Writes DATA framed by the owner (a TUN batch) now; the owner keeps the queue bounded by pausing its
   * source. Settling first keeps the budget's record of writes as short as the socket's queue.
   */
  writeData(frames: Buffer): void {
    this.budget.settle(this.socket.writableLength);
    this.enqueue(frames, chargeFor(frames));
  }

  /**
   * Queues a control frame; false when the link is closing or was found over its budget. With a batch it
   * joins it (a PONG for each PING of a chunk is one write, not one each).
   */
  sendControl(frame: Buffer, batch?: WriteBatch): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false;
    const owned = copyIfPinning(frame);
    const charge = chargeFor(owned);
    const needed = this.queued + charge;
    if (needed > this.budget.limit) {
      this.options.onOverBudget?.(needed);
      return false;
    }
    if (batch) this.cork(batch);
    this.enqueue(owned, charge);
    return true;
  }

  /** The one place bytes are queued for the peer, so every one of them is charged. */
  private enqueue(owned: Buffer, charge: number): void {
    this.socket.write(owned);
    this.budget.add(owned.length, charge);
  }

  /** Holds writes until the batch is flushed, so they leave in one system call. */
  private cork(batch: WriteBatch): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    this.budget.openBatch();
    batch.push(this);
  }

  flush(): void {
    this.corked = false;
    this.budget.closeBatch();
    this.socket.uncork();
  }

  /**
   * Sends `last` (a REJECT or GOODBYE) if given, flushes what is queued and closes; destroys after
   * lingerMs if the peer does not take it (a peer holding its half open must not keep our descriptor).
   */
  finish(last?: Buffer, lingerMs = LINGER_MS): void {
    if (last) this.sendControl(last);
    this.open = false;
    if (this.socket.destroyed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), lingerMs).unref();
  }
}
