/**
 * The device as the daemons see it. Tun implements it; the client and relay take any implementation, so
 * their tests can hand them a fake in place of a kernel TUN.
 */

export interface TunStats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  txDrops: number;
  rxErrors: number;
  rxBatches: number;
}

export interface TunConfig {
  mtu?: number;
  /** Dotted-quad IPv4; replaces the device's primary address. */
  address?: string;
  /** 0..32; defaults to 32 when address is given. */
  prefix?: number;
  up?: boolean;
}

export type BatchHandler = (batch: Buffer, count: number) => void;

/** The writing side of a device, as PacketBatch needs it. */
export interface BatchWriter {
  writeBatch(packets: readonly Buffer[], count?: number, kinds?: Uint8Array): number;
}

export interface TunDevice extends BatchWriter {
  readonly name: string;
  /** Bytes of virtio_net_hdr in front of every packet read and written (offloads); 0 or absent: none. */
  readonly vnetHeader?: number;
  /** TUN_F bits in force. */
  readonly offloads?: number;
  configure(cfg: TunConfig): void;
  start(onBatch: BatchHandler): void;
  pause(): void;
  resume(): void;
  /** Offloads on (the richest set the kernel takes) or, with 0, off; headers stay either way. */
  enableOffloads?(): number;
  setOffload?(flags: number): void;
  close(): void;
  stats?(): TunStats;
}
