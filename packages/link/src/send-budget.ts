/**
 * What one device may make the relay hold for it: every byte queued for the device, DATA and control
 * alike, is charged here by what it really keeps alive, and the charge is returned once the socket has
 * handed those bytes to the kernel.
 *
 * Charges are not frame lengths. A queued Buffer keeps its whole backing ArrayBuffer alive, and a frame
 * the decoder found inside a 16 KiB TLS read chunk is a view of that chunk: a few hundred bytes queued for
 * a device that never reads could pin the whole chunk. So a view of a much larger chunk is copied out
 * (copyIfPinning) and otherwise the charge is the backing store's size, plus WRITE_OVERHEAD_BYTES for the
 * objects a queued write costs (the Buffer, the stream's entry for it).
 *
 * Completion needs no callbacks: the socket's writableLength says how many of the bytes written so far
 * are still pending, and writes complete in order, so the charges of every write that ended at or before
 * `written - writableLength` are settled.
 */

/**
 * What a queued write costs beyond its bytes: measured on Node 20 as ~410 bytes of RSS per queued copy of
 * a small frame (its Buffer and ArrayBuffer objects, the Writable's entry, the backing store's malloc header;
 * ~300 of it on the V8 heap), less for frames sharing a backing store.
 */
export const WRITE_OVERHEAD_BYTES = 384;
/** A frame occupying less than this share of its backing store is copied out before it is queued. */
const MIN_SHARE_OF_BACKING = 0.5;

/** The charge for queueing `frame` as it is. */
export function chargeFor(frame: Buffer): number {
  return Math.max(frame.buffer.byteLength, frame.length) + WRITE_OVERHEAD_BYTES;
}

/**
 * `frame`, or a copy of it in memory of its own when it is a small view of a larger buffer (a read chunk,
 * Node's allocation pool): what stays queued for a slow device is then only its own bytes.
 */
export function copyIfPinning(frame: Buffer): Buffer {
  if (frame.length >= frame.buffer.byteLength * MIN_SHARE_OF_BACKING) return frame;
  const copy = Buffer.allocUnsafeSlow(frame.length);
  frame.copy(copy);
  return copy;
}

export class SendBudget {
  /** Bytes charged for writes the socket has not finished. */
  private charged = 0;
  /** Bytes handed to the socket since the start. */
  private written = 0;
  /** Unsettled writes in order: where each ends in `written`, and what it was charged. */
  private ends: number[] = [];
  private charges: number[] = [];
  private head = 0;
  /** Writes of one corked batch share an entry: settling is per batch, which is conservative. */
  private batchOpen = false;

  constructor(public limit: number) {}

  /**
   * DATA may fill the budget up to what is left once a reserve for control frames is kept, so that a device
   * whose data queue is full still gets its PONGs and peer updates without being cut.
   */
  get dataLimit(): number {
    return this.limit - Math.min(256 * 1024, this.limit / 4);
  }

  /** What is charged now, after settling what the socket has finished (`pending`: its writableLength). */
  settle(pending: number): number {
    const done = this.written - pending;
    const ends = this.ends;
    let head = this.head;
    while (head < ends.length && ends[head]! <= done) {
      this.charged -= this.charges[head]!;
      head++;
    }
    if (head === ends.length) {
      ends.length = 0;
      this.charges.length = 0;
      head = 0;
    } else if (head >= 1024) {
      this.ends = ends.slice(head);
      this.charges = this.charges.slice(head);
      head = 0;
    }
    this.head = head;
    return this.charged;
  }

  /** Records a write of `bytes` charged `charge`; within a batch the writes share one entry. */
  add(bytes: number, charge: number): void {
    this.written += bytes;
    this.charged += charge;
    const last = this.ends.length - 1;
    if (this.batchOpen && last >= this.head) {
      this.ends[last] = this.written;
      this.charges[last]! += charge;
    } else {
      this.ends.push(this.written);
      this.charges.push(charge);
    }
  }

  openBatch(): void {
    this.batchOpen = true;
  }

  closeBatch(): void {
    this.batchOpen = false;
  }
}
