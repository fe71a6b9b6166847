import { FrameType, GSO_HEADER_BYTES, HEADER_BYTES, MAX_GSO_PAYLOAD, MIN_IPV4_PACKET } from '@mnedc/protocol';

/**
 * How a TUN's batch becomes frames without copying. The batch is [u32 length][packet] records —
 * [u32 length][virtio header][packet] when the TUN has offloads — so setting each record's top byte
 * to DATA (DATA_GSO) turns it into that frame as it is.
 */
export interface TunFraming {
  readonly type: FrameType;
  /** The record lengths a frame of `type` may have. */
  readonly min: number;
  readonly max: number;
  /** Where a record's IP version nibble is, from the record's start. */
  readonly versionAt: number;
}

const PLAIN: TunFraming = { type: FrameType.Data, min: MIN_IPV4_PACKET, max: 0xffff, versionAt: HEADER_BYTES };
const OFFLOADED: TunFraming = {
  type: FrameType.DataGso, min: GSO_HEADER_BYTES + MIN_IPV4_PACKET, max: MAX_GSO_PAYLOAD, versionAt: HEADER_BYTES + GSO_HEADER_BYTES,
};

export function tunFraming(offloads: boolean): TunFraming {
  return offloads ? OFFLOADED : PLAIN;
}

/** The length of the record at `offset`; the record (a frame once typed) ends HEADER_BYTES + length later. */
export function recordLength(batch: Buffer, offset: number): number {
  return batch.readUInt32BE(offset) & 0xffffff;
}
