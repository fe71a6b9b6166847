import type { Logger, RateLimitedWarning } from '@mnedc/common';
import { recordLength, tunFraming, type Link, type TunFraming } from '@mnedc/link';
import {
  checkOffloadPacket, formatIpv6, GSO_HEADER_BYTES, HEADER_BYTES, intToIpv4, ipv4ToInt, linkLocalIpv4, mappedIpv4, parseIpv6, prefixMask, toDataFrames,
} from '@mnedc/protocol';
import { PacketBatch, type TunDevice } from '@mnedc/tun';
import type { ClientCounters } from './counters';

/** The largest batch the TUN addon hands over at once (its RX_SCRATCH). */
const MAX_TUN_BATCH_BYTES = 1 << 20;
const CONTROL_RESERVE_BYTES = 256 * 1024;

/**
 * What the relay may make us hold: the data queue the TUN pauses at (`queueLimit`), one TUN batch beyond
 * it (the check follows the write), and a reserve for control frames. A relay that sends PINGs and never
 * reads the PONGs runs into it and is dropped instead of growing this process.
 */
export function relayBudget(queueLimit: number): number {
  return queueLimit + MAX_TUN_BATCH_BYTES + CONTROL_RESERVE_BYTES;
}

/**
 * The device's TUN on one side, the Link to the relay on the other. Up: the TUN's batch becomes frames
 * in place and goes out in one write. Down: DATA payloads are gathered and written to the TUN in one
 * native call per received chunk.
 */
export class TunBridge {
  /** The TUN reads and writes virtio headers. */
  readonly vnet: boolean;
  /** This session negotiated "gso": DATA_GSO may flow both ways. */
  gso = false;
  /** The TUN's IPv6 address in the overlay (applyIpv6); null: IPv6 read from the TUN is dropped and counted. */
  private address6: string | null = null;
  /** Where packets from the relay may come from: the overlay's subnet, and its /64 with IPv6 (setOverlay). */
  private network = 0;
  private mask = 0xffffffff;
  private prefix6: Buffer | null = null;
  private readonly framing: TunFraming;
  private readonly toDevice = new PacketBatch();

  constructor(private readonly device: TunDevice, private readonly counters: ClientCounters, private readonly warnings: RateLimitedWarning,
    private readonly log: Logger, private readonly server: () => string) {
    this.vnet = device.vnetHeader === GSO_HEADER_BYTES;
    this.framing = tunFraming(this.vnet);
  }

  get name(): string {
    return this.device.name;
  }

  get ipv6(): string | null {
    return this.address6;
  }

  /**
   * The overlay as the lease says: the relay forwards only packets from devices of its subnet (and the
   * relay itself), so anything else it sends is forged — an answer from "8.8.8.8" the device's kernel would
   * take, since its sockets do not care which interface a reply came in on. `ip6`: the TUN's IPv6 address.
   */
  setOverlay(ip: string, prefix: number, ip6: string | null): void {
    this.mask = prefixMask(prefix);
    this.network = (ipv4ToInt(ip) & this.mask) >>> 0;
    this.address6 = ip6;
    this.prefix6 = ip6 === null ? null : parseIpv6(ip6)!.subarray(0, 8);
  }

  /** Whether the packet at buf[at] comes from inside the overlay (setOverlay). */
  private fromOverlay(buf: Buffer, at: number): boolean {
    const version = buf[at]! >> 4;
    if (version === 4) return buf.length - at >= 20 && ((buf.readUInt32BE(at + 12) & this.mask) >>> 0) === this.network;
    const prefix = this.prefix6;
    if (version !== 6 || prefix === null || buf.length - at < 40) return false;
    return mappedIpv4(buf, at + 8, prefix) !== null || linkLocalIpv4(buf, at + 8) !== null;
  }

  private dropForeign(buf: Buffer, at: number): void {
    this.counters.dropsFromRelay++;
    this.warnings.warn('relay-foreign', () => {
      const v6 = buf[at]! >> 4 === 6 && buf.length - at >= 40;
      const source = v6 ? formatIpv6(buf, at + 8) : buf.length - at >= 20 ? intToIpv4(buf.readUInt32BE(at + 12)) : `a ${buf.length - at}-byte record`;
      return {
        fields: { server: this.server(), source },
        message: `Dropped packets from ${this.server()} with a source outside the overlay, e.g. ${source}: a relay forwards devices' packets only`,
      };
    });
  }

  /**
   * With a server that takes no super-packets (an older version) the kernel is asked to segment and
   * checksum again, which it does faster than JS could; packets already queued are converted here.
   */
  setOffloading(granted: boolean): void {
    const gso = this.vnet && granted;
    const device = this.device;
    if (this.vnet && device.setOffload && device.enableOffloads) {
      if (!gso && device.offloads !== 0) {
        device.setOffload(0);
        this.log.info({ server: this.server() }, `${this.server()} does not take offloaded packets; ${device.name} segments in the kernel`);
      } else if (gso && device.offloads === 0) {
        device.enableOffloads();
      }
    }
    this.gso = gso;
  }

  /**
   * TUN → relay. The batch's records become DATA frames by setting their type byte — DATA_GSO with
   * offloads, the record then holding [virtio header][packet] — so the whole batch goes out in one
   * write without copying.
   */
  send(link: Link, batch: Buffer, count: number): void {
    if (this.vnet && !this.gso) {
      this.sendConverted(link, batch, count);
      return;
    }
    const { type, min, max, versionAt } = this.framing;
    let offset = 0;
    let valid = true;
    const v6 = this.ipv6 !== null;
    for (let i = 0; i < count; i++) {
      const length = batch.readUInt32BE(offset);
      const version = batch[offset + versionAt]! >> 4;
      if (length < min || length > max || (version !== 4 && !(version === 6 && v6))) valid = false;
      batch[offset] = type;
      offset += HEADER_BYTES + length;
    }
    if (valid) {
      this.counters.txPackets += count;
      this.counters.txBytes += offset - count * versionAt;
      link.writeData(batch.subarray(0, offset));
    } else {
      link.writeData(this.withoutRunts(batch, count));
    }
  }

  /** Offloading TUN, server without "gso": each record becomes plain DATA frames (in place when it can). */
  private sendConverted(link: Link, batch: Buffer, count: number): void {
    link.socket.cork();
    let offset = 0;
    for (let i = 0; i < count; i++) {
      const length = batch.readUInt32BE(offset);
      const start = offset + HEADER_BYTES;
      offset = start + length;
      if (batch[start + GSO_HEADER_BYTES]! >> 4 === 6 && this.ipv6 === null) {
        this.counters.dropsIpv6++;
        continue;
      }
      const problem = checkOffloadPacket(batch, start, offset);
      if (problem !== null) {
        this.dropMalformed(problem);
        continue;
      }
      this.counters.txPackets++;
      this.counters.txBytes += length - GSO_HEADER_BYTES;
      link.writeData(toDataFrames(batch, start, offset));
    }
    link.socket.uncork();
  }

  /**
   * The records that can be frames, copied together; the others are counted and dropped: IPv6 while the
   * relay gives none, other versions and runts.
   */
  private withoutRunts(batch: Buffer, count: number): Buffer {
    const { min, max, versionAt } = this.framing;
    const kept: Buffer[] = [];
    let offset = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const length = recordLength(batch, offset);
      const ip = length >= min && length <= max ? batch[offset + versionAt]! >> 4 : -1;
      if (ip === 4 || (ip === 6 && this.ipv6 !== null)) {
        kept.push(batch.subarray(offset, offset + HEADER_BYTES + length));
        bytes += HEADER_BYTES + length - versionAt;
      } else if (ip === 6) this.counters.dropsIpv6++;
      else this.dropMalformed(ip < 0 ? `a record of ${length} bytes` : `an IP version ${ip} packet`);
      offset += HEADER_BYTES + length;
    }
    this.counters.txPackets += kept.length;
    this.counters.txBytes += bytes;
    return Buffer.concat(kept);
  }

  /** Relay → TUN: a DATA payload, written at the end of the chunk (flush). */
  receive(packet: Buffer): void {
    if (!this.fromOverlay(packet, 0)) {
      this.dropForeign(packet, 0);
      return;
    }
    this.counters.rxPackets++;
    this.counters.rxBytes += packet.length;
    this.toDevice.push(packet, false);
  }

  /**
   * A DATA_GSO frame. The relay is not trusted with the kernel either: a virtio header goes to the TUN only
   * if it holds what the relay checks of its senders (gso.ts), else the packet is dropped and counted.
   */
  receiveOffloaded(frame: Buffer): void {
    const problem = checkOffloadPacket(frame, HEADER_BYTES, frame.length);
    if (problem !== null) {
      this.counters.dropsFromRelay++;
      this.warnings.warn('relay-malformed', () => ({
        fields: { server: this.server(), problem },
        message: `Dropped packets from ${this.server()} that ${this.device.name} must not be given, e.g.: ${problem}`,
      }));
      return;
    }
    if (!this.fromOverlay(frame, HEADER_BYTES + GSO_HEADER_BYTES)) {
      this.dropForeign(frame, HEADER_BYTES + GSO_HEADER_BYTES);
      return;
    }
    this.counters.rxPackets++;
    this.counters.rxBytes += frame.length - HEADER_BYTES - GSO_HEADER_BYTES;
    this.toDevice.push(frame.subarray(HEADER_BYTES), true);
  }

  /** Writes what the chunk brought to the TUN; throws if the TUN refuses it. */
  flush(): void {
    this.toDevice.flush(this.device);
  }

  private dropMalformed(problem: string): void {
    this.counters.dropsMalformed++;
    this.warnings.warn('tun-malformed', () => ({
      fields: { interface: this.device.name, problem },
      message: `Dropped packets from ${this.device.name} that cannot be relayed, e.g.: ${problem}`,
    }));
  }
}
