import { checkHeader, HEADER_BYTES, MAX_PAYLOAD, ProtocolError } from './wire';

export type FrameHandler = (frame: Buffer) => void;

/**
 * Streaming frame decoder. Frames wholly inside one chunk are handed out as views of that chunk (no copy),
 * so a relay can forward them byte for byte; only a frame split across chunks is assembled, with exactly
 * one allocation of its final size. Each frame passed to the handler includes its 4-byte header.
 *
 * After a ProtocolError the decoder stays failed: the stream is out of sync and must be closed.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  private partial: Buffer | null = null;
  private partialFill = 0;
  private failure: ProtocolError | null = null;

  constructor(private readonly maxPayload: number = MAX_PAYLOAD) {}

  /** Bytes held back waiting for the rest of a frame. */
  get buffered(): number {
    return this.partial ? this.partialFill : this.headerFill;
  }

  push(chunk: Buffer, onFrame: FrameHandler): void {
    if (this.failure) throw this.failure;
    let offset = 0;
    try {
      if (this.headerFill > 0 || this.partial) offset = this.continuePartial(chunk, onFrame);
      const end = chunk.length;
      while (end - offset >= HEADER_BYTES) {
        const word = chunk.readUInt32BE(offset);
        const length = word & 0xffffff;
        checkHeader(word >>> 24, length, this.maxPayload);
        const frameEnd = offset + HEADER_BYTES + length;
        if (frameEnd > end) break;
        onFrame(chunk.subarray(offset, frameEnd));
        offset = frameEnd;
      }
      if (offset < end) this.startPartial(chunk, offset);
    } catch (err) {
      if (err instanceof ProtocolError) this.failure = err;
      throw err;
    }
  }

  /** Returns the offset in chunk after the bytes it consumed. */
  private continuePartial(chunk: Buffer, onFrame: FrameHandler): number {
    let offset = 0;
    if (!this.partial) {
      const take = Math.min(HEADER_BYTES - this.headerFill, chunk.length);
      chunk.copy(this.header, this.headerFill, 0, take);
      this.headerFill += take;
      offset = take;
      if (this.headerFill < HEADER_BYTES) return offset;
      this.allocatePartial(this.header, 0);
    }
    const partial = this.partial!;
    const take = Math.min(partial.length - this.partialFill, chunk.length - offset);
    chunk.copy(partial, this.partialFill, offset, offset + take);
    this.partialFill += take;
    offset += take;
    if (this.partialFill === partial.length) {
      this.partial = null;
      this.partialFill = 0;
      this.headerFill = 0;
      onFrame(partial);
    }
    return offset;
  }

  private startPartial(chunk: Buffer, offset: number): void {
    const rest = chunk.length - offset;
    if (rest < HEADER_BYTES) {
      chunk.copy(this.header, 0, offset);
      this.headerFill = rest;
      return;
    }
    this.allocatePartial(chunk, offset);
    chunk.copy(this.partial!, 0, offset);
    this.partialFill = rest;
  }

  private allocatePartial(source: Buffer, offset: number): void {
    const word = source.readUInt32BE(offset);
    const length = word & 0xffffff;
    checkHeader(word >>> 24, length, this.maxPayload);
    const frame = Buffer.allocUnsafe(HEADER_BYTES + length);
    source.copy(frame, 0, offset, offset + HEADER_BYTES);
    this.partial = frame;
    this.partialFill = HEADER_BYTES;
  }
}
