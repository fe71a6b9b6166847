/**
 * @mnedc/tun — Linux TUN device access through our own small N-API addon.
 *
 * Received packets arrive in *batches*. Every time the TUN fd becomes readable
 * the addon drains up to 256 packets with read() and calls the handler once
 * with a single Buffer holding `count` back-to-back records:
 *
 *     [u32 big-endian length L][L bytes of IP packet] [u32 L][packet] ...
 *
 * Why: at packet rates the per-packet costs dominate — a JS↔native crossing,
 * a Buffer allocation, a nextTick/microtask drain. A batch pays each of those
 * once per wake-up instead of once per packet, and the length prefixes let
 * consumers take zero-copy views (see forEachPacket) or forward records as-is.
 * The Buffer is a fresh copy owned by JS, so it may be retained freely.
 *
 * Writes are batched for the same reason: writeBatch() performs one write()
 * per packet inside a single native call.
 *
 * Offloads (Tun.open(name, { offload: true })): the device is opened with
 * IFF_VNET_HDR and TUNSETOFFLOAD, so each record's packet is preceded by a
 * 10-byte virtio_net_hdr (little-endian; its layout and size, VNET_HDR_BYTES,
 * live with the codec in @mnedc/protocol gso.ts) and may be a TCP
 * or UDP super-packet of up to 64 KB whose segmentation and checksum are left
 * to us — or to the kernel at the far end, which takes the same header back.
 * The record length L then counts header + packet.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { BatchHandler, BatchWriter, TunConfig, TunDevice, TunStats } from './device';
import { IPV6_DISABLED_HINT, NO_IPV6, checkAddress6, checkConfig, checkRoute, ipv6Disabled, kernelHasIpv6, writeIpv6Conf } from './netconf';

export type { BatchHandler, BatchWriter, TunConfig, TunDevice, TunStats } from './device';
export { explainTakenName, fdinfoInterface, findTunHolders, linkKind, takenMessage, type TakenFacts, type TunHolder } from './taken';

/** TUNSETOFFLOAD bits (linux/if_tun.h). */
export const TUN_F = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  USO4: 0x20,
  USO6: 0x40,
} as const;

/**
 * Offload sets tried in order: the kernel refuses unknown bits (USO is Linux 6.2+) and takes USO only
 * for both families at once.
 */
const OFFLOAD_CHOICES = [
  TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN | TUN_F.USO4 | TUN_F.USO6,
  TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN,
  TUN_F.CSUM,
];

export interface TunOpenOptions {
  /** Open with a virtio_net_hdr per packet and enable checksum/TSO/USO offloads where the kernel has them. */
  offload?: boolean;
}

/** Size of the length prefix in front of every packet in a batch. */
export const BATCH_HEADER_BYTES = 4;

/** Environment variable naming the addon file, for bundles that ship the .node elsewhere. */
export const ADDON_ENV = 'MNEDC_TUN_ADDON';

interface NativeTunHandle {
  getName(): string;
  setMtu(mtu: number): void;
  setAddress(address: string, prefix: number): void;
  addAddress6(address: string, prefix: number): void;
  addRoute(destination: string, prefix: number): void;
  setUp(up: boolean): void;
  start(onBatch: BatchHandler): void;
  pause(): void;
  resume(): void;
  writeBatch(packets: readonly Buffer[], count?: number, kinds?: Uint8Array): number;
  writePacket(packet: Buffer): boolean;
  setOffload(flags: number): void;
  vnetHeader(): number;
  stats(): TunStats;
  close(): void;
}

interface NativeAddon {
  TunHandle: new (name: string, vnetHeader: boolean) => NativeTunHandle;
  clearAmbientCapabilities(): void;
  clearInheritableCapabilities(): boolean;
}

let addon: NativeAddon | undefined;

/**
 * Loaded lazily so that packages importing only forEachPacket/types (or
 * running on a machine without the built addon) do not fail at import time.
 */
function loadAddon(): NativeAddon {
  if (addon) return addon;
  const override = process.env[ADDON_ENV];
  const candidates = override
    ? [path.resolve(override)]
    : [
        // dist/src/index.js -> build/Release (normal workspace layout)
        path.join(__dirname, '..', '..', 'build', 'Release', 'mnedc_tun.node'),
        // a bundle with the .node copied beside it
        path.join(__dirname, 'mnedc_tun.node'),
      ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) {
    throw new Error(
      `mnedc_tun addon not found (looked in: ${candidates.join(', ')}); ` +
        `build it with "npm run build -w @mnedc/tun" or set ${ADDON_ENV}`,
    );
  }
  addon = require(found) as NativeAddon;
  return addon;
}

/**
 * Empties the calling thread's ambient capability set (prctl PR_CAP_AMBIENT_CLEAR_ALL); its permitted and
 * effective sets stay. A non-root process gets its capabilities across execve only through the ambient
 * set (or file capabilities), so a daemon that holds CAP_NET_ADMIN as an ambient capability, as systemd's
 * AmbientCapabilities= gives it, passes nothing on to the programs it starts once this ran. Per thread:
 * call it on the main thread, the one child_process forks from. Throws a system error (e.g. EINVAL on a
 * kernel without ambient capabilities).
 */
export function clearAmbientCapabilities(): void {
  loadAddon().clearAmbientCapabilities();
}

/**
 * Empties the calling thread's inheritable capability set (capset(2)), keeping permitted and effective;
 * that empties the ambient set too. Returns false, changing nothing, where capset is refused: it never
 * needs a privilege for this, so refusal means a seccomp filter (systemd's SystemCallFilter=~@privileged)
 * or an LSM. Per thread, like clearAmbientCapabilities().
 */
export function clearInheritableCapabilities(): boolean {
  return loadAddon().clearInheritableCapabilities();
}

const IFNAMSIZ = 16;

/**
 * addr_gen_mode 1 (none) first: with IPv6 turned on while it is still at its default, the kernel gives an
 * interface without a hardware address a link-local address of its own making. accept_ra 0: addresses and
 * routes come from configure(), not from router advertisements. disable_ipv6 last, once both hold.
 */
const IPV6_ON = [
  ['addr_gen_mode', '1'],
  ['accept_ra', '0'],
  ['disable_ipv6', '0'],
] as const;

export class Tun implements TunDevice {
  readonly name: string;
  /** VNET_HDR_BYTES (@mnedc/protocol) when every packet read or written carries a virtio_net_hdr, else 0. */
  readonly vnetHeader: number;
  private offloadFlags = 0;
  private readonly handle: NativeTunHandle;

  private constructor(handle: NativeTunHandle) {
    this.handle = handle;
    this.name = handle.getName();
    this.vnetHeader = handle.vnetHeader();
  }

  /** The TUN_F bits in force (0 without offloads). */
  get offloads(): number {
    return this.offloadFlags;
  }

  /**
   * Creates a non-persistent TUN device (IFF_TUN | IFF_NO_PI). It disappears
   * when closed or when the process exits. '' / undefined lets the kernel
   * choose ("mnedc0", "mnedc1", ...); the actual name is in `.name`.
   */
  static open(name?: string, options: TunOpenOptions = {}): Tun {
    const requested = name === undefined || name === '' ? 'mnedc%d' : name;
    if (typeof requested !== 'string' || Buffer.byteLength(requested) >= IFNAMSIZ) {
      throw new RangeError(`Tun.open: interface name must be a string of at most ${IFNAMSIZ - 1} bytes, got ${JSON.stringify(name)}`);
    }
    const tun = new Tun(new (loadAddon().TunHandle)(requested, options.offload === true));
    if (options.offload) tun.enableOffloads();
    return tun;
  }

  /**
   * Turns on the richest offload set the kernel accepts and returns it; with none accepted the
   * device still carries (all-zero) headers. Only for a device opened with `offload`.
   */
  enableOffloads(): number {
    for (const flags of OFFLOAD_CHOICES) {
      try {
        this.setOffload(flags);
        return flags;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      }
    }
    this.setOffload(0);
    return 0;
  }

  /**
   * TUNSETOFFLOAD. 0 makes the kernel segment and checksum everything itself again (while headers
   * stay), for a peer that cannot take super-packets; changing it on a running device is fine.
   */
  setOffload(flags: number): void {
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xff) {
      throw new RangeError(`Tun.setOffload ${this.name}: flags must be an integer in 0..255, got ${String(flags)}`);
    }
    this.handle.setOffload(flags);
    this.offloadFlags = flags;
  }

  /**
   * Turns IPv6 off on this interface (its disable_ipv6 sysctl), best before it goes up: the kernel then
   * gives it no link-local address and sends no IPv6 of its own (router solicitations, MLD) through it.
   * Returns null when done or when the kernel has no IPv6 at all, else what stood in the way (e.g. a
   * /proc/sys that is read-only or not mounted for this process).
   */
  disableIpv6(): string | null {
    const failed = writeIpv6Conf(this.name, [['disable_ipv6', '1']]);
    if (!failed || (failed.error.code === 'ENOENT' && !kernelHasIpv6())) return null;
    return `cannot write ${failed.file}: ${failed.error.message}`;
  }

  /**
   * The opposite of disableIpv6(): IPv6 on for this interface, with no address but those given to it
   * (addr_gen_mode none, so no link-local of the kernel's making; accept_ra 0). Call it before the
   * interface goes up: a link-local address the kernel already made is left in place. Returns null when
   * done, else what stood in the way, including a kernel without IPv6.
   */
  enableIpv6(): string | null {
    const failed = writeIpv6Conf(this.name, IPV6_ON);
    if (!failed) return null;
    if (failed.error.code === 'ENOENT' && !kernelHasIpv6()) return `${this.name}: ${NO_IPV6}`;
    return `cannot write ${failed.file}: ${failed.error.message}`;
  }

  /**
   * Adds an IPv6 address and its prefix route (SIOCSIFADDR, AF_INET6). It replaces none already there, and
   * one already there (whatever its prefix) is left as is, not an error. Needs enableIpv6() first; the
   * address is usable at once (no duplicate address detection on a TUN). The kernel removes IPv6 addresses
   * when the interface goes down, so configure them again after bringing it back up.
   */
  addAddress6(address: string, prefix: number): void {
    checkAddress6(this.name, address, prefix);
    try {
      this.handle.addAddress6(address, prefix);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') (err as Error).message += ` (${IPV6_DISABLED_HINT})`;
      throw err;
    }
  }

  /**
   * Routes destination/prefix out of this interface (SIOCADDRT: main table, no gateway, metric 0), e.g. a
   * multicast group. A route already there is not an error. The interface must be up, and the kernel
   * removes the route when it goes down or its IPv4 address or prefix changes (applying the same ones
   * again keeps it), so add routes after configure().
   */
  addRoute(destination: string, prefix: number): void {
    checkRoute(this.name, destination, prefix);
    this.handle.addRoute(destination, prefix);
  }

  /**
   * Applies mtu, then address/prefix, then address6/prefix6 and linkLocal6 (/64), then up/down. All
   * arguments are validated, and IPv6 checked to be on where an IPv6 address is given, before any change.
   */
  configure(cfg: TunConfig): void {
    checkConfig(this.name, cfg);
    const { mtu, address, prefix, address6, prefix6, linkLocal6, up } = cfg;
    if ((address6 !== undefined || linkLocal6 !== undefined) && ipv6Disabled(this.name)) {
      throw Object.assign(new Error(`Tun.configure ${this.name}: ${IPV6_DISABLED_HINT}`), { code: 'ERR_TUN_IPV6_DISABLED' });
    }
    if (mtu !== undefined) this.handle.setMtu(mtu);
    if (address !== undefined) this.handle.setAddress(address, prefix ?? 32);
    if (address6 !== undefined) this.addAddress6(address6, prefix6 ?? 128);
    if (linkLocal6 !== undefined) this.addAddress6(linkLocal6, 64);
    if (up !== undefined) this.handle.setUp(up);
  }

  /**
   * Starts delivering received packets. Throws if already started: silently
   * swapping handlers mid-stream would hide ordering bugs in the caller.
   * An active (unpaused) reader keeps the event loop alive, like a socket.
   */
  start(onBatch: BatchHandler): void {
    if (typeof onBatch !== 'function') {
      throw new TypeError(`Tun.start ${this.name}: onBatch must be a function`);
    }
    this.handle.start(onBatch);
  }

  /**
   * Stops reading; the kernel queue (txqueuelen) then fills and drops, which
   * is the right backpressure for IP. Callable before start().
   */
  pause(): void {
    this.handle.pause();
  }

  resume(): void {
    this.handle.resume();
  }

  /**
   * Writes packets[0..count) in one native call. Packets the kernel refuses
   * (EAGAIN, ENOBUFS, EIO, EINVAL for a header it rejects, ...) are counted in
   * stats().txDrops, not thrown. `kinds[i]` = 1 marks a packet that starts
   * with its virtio_net_hdr (only on a device with vnetHeader); the others are
   * bare IP packets and get an all-zero header on such a device.
   * @returns number of packets written.
   */
  writeBatch(packets: readonly Buffer[], count: number = packets.length, kinds?: Uint8Array): number {
    if (!Number.isInteger(count) || count < 0 || count > packets.length) {
      throw new RangeError(`Tun.writeBatch ${this.name}: count must be an integer in 0..${packets.length}, got ${String(count)}`);
    }
    return this.handle.writeBatch(packets, count, kinds);
  }

  /** @returns false if the packet was dropped (see writeBatch). */
  writePacket(packet: Buffer): boolean {
    return this.handle.writePacket(packet);
  }

  /** Still works after close(), so final counters can be logged. */
  stats(): TunStats {
    return this.handle.stats();
  }

  /** Idempotent. The fd is closed once libuv has released its poll handle. */
  close(): void {
    this.handle.close();
  }
}

/**
 * Iterates the records of a batch; `packet` is a view into `batch` (no copy),
 * so copy it if it must outlive a later mutation of `batch`.
 */
export function forEachPacket(
  batch: Buffer,
  count: number,
  fn: (packet: Buffer, recordOffset: number) => void,
): void {
  let off = 0;
  for (let i = 0; i < count; i++) {
    if (off + BATCH_HEADER_BYTES > batch.length) {
      throw new RangeError(`forEachPacket: batch truncated at record ${i} of ${count} (offset ${off})`);
    }
    const len = batch.readUInt32BE(off);
    const end = off + BATCH_HEADER_BYTES + len;
    if (end > batch.length) {
      throw new RangeError(`forEachPacket: record ${i} length ${len} overruns batch of ${batch.length} bytes`);
    }
    fn(batch.subarray(off + BATCH_HEADER_BYTES, end), off);
    off = end;
  }
}

/**
 * Packets collected for one writeBatch call, each marked as bare IP or as starting with its
 * virtio_net_hdr. Reused across batches so the packet path allocates nothing per packet.
 */
export class PacketBatch {
  readonly packets: Buffer[] = [];
  private kinds = new Uint8Array(256);
  private withHeader = 0;

  get length(): number {
    return this.packets.length;
  }

  push(packet: Buffer, hasVnetHeader: boolean): void {
    const i = this.packets.length;
    if (i === this.kinds.length) {
      const grown = new Uint8Array(this.kinds.length * 2);
      grown.set(this.kinds);
      this.kinds = grown;
    }
    this.kinds[i] = hasVnetHeader ? 1 : 0;
    if (hasVnetHeader) this.withHeader++;
    this.packets.push(packet);
  }

  clear(): void {
    this.packets.length = 0;
    this.withHeader = 0;
  }

  /** Writes and empties the batch; returns the packets written. */
  flush(device: BatchWriter): number {
    const count = this.packets.length;
    if (count === 0) return 0;
    try {
      // Kinds only when needed, so devices without offloads (and test fakes) see the plain call.
      return this.withHeader > 0 ? device.writeBatch(this.packets, count, this.kinds) : device.writeBatch(this.packets, count);
    } finally {
      this.clear();
    }
  }
}
