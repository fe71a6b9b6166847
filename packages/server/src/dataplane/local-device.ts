import { FrameType, GSO_HEADER_BYTES, HEADER_BYTES } from '@mnedc/protocol';
import { recordLength, tunFraming, type TunFraming, type WriteBatch } from '@mnedc/link';
import { PacketBatch, type TunDevice } from '@mnedc/tun';
import { newCounters, type Target } from './target';

/**
 * The relay's own TUN as a target like any device: packets routed to the server's address are written
 * to it in one native call per batch, and what the host sends into it is forwarded as the server's.
 */
export class LocalDevice implements Target {
  readonly local = true;
  readonly deviceId = 'server';
  readonly counters = newCounters();
  readonly gso: boolean;
  private readonly framing: TunFraming;
  private readonly toDevice = new PacketBatch();
  private inBatch = false;
  private closed = false;

  constructor(private readonly device: TunDevice, readonly ip: number) {
    this.gso = (device.vnetHeader ?? 0) === GSO_HEADER_BYTES;
    this.framing = tunFraming(this.gso);
  }

  get name(): string {
    return this.device.name;
  }

  /** `forward` gets each record as a frame; `done` ends the batch. */
  start(forward: (from: LocalDevice, frame: Buffer) => void, done: () => void): void {
    const { type, min, max } = this.framing;
    this.device.start((batch, count) => {
      let offset = 0;
      for (let i = 0; i < count; i++) {
        const length = recordLength(batch, offset);
        const end = offset + HEADER_BYTES + length;
        if (length >= min && length <= max) {
          batch[offset] = type;
          forward(this, batch.subarray(offset, end));
        }
        offset = end;
      }
      done();
    });
  }

  accepts(): boolean {
    return true;
  }

  deliver(frames: Buffer, batch: WriteBatch): void {
    if (frames[0] === FrameType.DataGso) this.toDevice.push(frames.subarray(HEADER_BYTES), true);
    else {
      for (let o = 0; o < frames.length;) {
        const end = o + HEADER_BYTES + recordLength(frames, o);
        this.toDevice.push(frames.subarray(o + HEADER_BYTES, end), false);
        o = end;
      }
    }
    if (!this.inBatch) {
      this.inBatch = true;
      batch.push(this);
    }
  }

  flush(): void {
    this.inBatch = false;
    if (this.closed) this.toDevice.clear();
    else if (this.toDevice.length > 0) this.toDevice.flush(this.device);
  }

  close(): void {
    this.closed = true;
    this.toDevice.clear();
    this.device.close();
  }
}
