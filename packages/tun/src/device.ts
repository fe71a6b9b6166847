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
  /** 0..32; defaults to 32 when address is given. Up to /30 the subnet's broadcast address is set too. */
  prefix?: number;
  /**
   * IPv6 address, added (IPv6 has no primary address to replace); already there, it is left as is. Needs IPv6
   * on (enableIpv6). The kernel drops IPv6 addresses when the device goes down.
   */
  address6?: string;
  /** 0..128; defaults to 128 when address6 is given. */
  prefix6?: number;
  /** A link-local (fe80::/10) address, added with prefix 64; with enableIpv6 the kernel makes none itself. */
  linkLocal6?: string;
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
  /** IPv6 off (its addresses gone with it); null when done, else what stood in the way. */
  disableIpv6?(): string | null;
  /** IPv6 on, with no address of the kernel's making; null when done, else what stood in the way. */
  enableIpv6?(): string | null;
  /** Adds an IPv6 address (one already there is not an error). */
  addAddress6?(address: string, prefix: number): void;
  /** An IPv4 route out of the device, e.g. for a multicast group (one already there is not an error). */
  addRoute?(destination: string, prefix: number): void;
  close(): void;
  stats?(): TunStats;
}
