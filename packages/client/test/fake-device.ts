import type { TunDevice } from '@mnedc/tun';

/**
 * A TUN stand-in: records configuration, written packets (and whether each came with a virtio header)
 * and offload switches, and injects records as if read. `vnet` makes it a device with offloads.
 */
export class FakeDevice implements TunDevice {
  readonly name = 'fake0';
  readonly vnetHeader: number;
  offloads: number;
  readonly offloadCalls: number[] = [];
  configured: Array<{ address?: string; prefix?: number; mtu?: number }> = [];
  written: Buffer[] = [];
  /** Per written packet: it started with its virtio header. */
  withHeader: boolean[] = [];
  closed = false;
  private onBatch: ((batch: Buffer, count: number) => void) | null = null;
  private waiters: Array<() => void> = [];

  constructor(vnet = false) {
    this.vnetHeader = vnet ? 10 : 0;
    this.offloads = vnet ? 0x6f : 0;
  }

  configure(cfg: { address?: string; prefix?: number; mtu?: number }): void { this.configured.push(cfg); this.wake(); }
  start(onBatch: (batch: Buffer, count: number) => void): void { this.onBatch = onBatch; }
  pause(): void {}
  resume(): void {}
  enableOffloads(): number { this.setOffload(0x6f); return 0x6f; }
  setOffload(flags: number): void { this.offloads = flags; this.offloadCalls.push(flags); }
  writeBatch(packets: readonly Buffer[], count = packets.length, kinds?: Uint8Array): number {
    for (let i = 0; i < count; i++) {
      this.written.push(Buffer.from(packets[i]!));
      this.withHeader.push(kinds?.[i] === 1);
    }
    this.wake();
    return count;
  }
  close(): void { this.closed = true; }
  /** Delivers records the way the addon does: one buffer of [u32 length][record] (a record: [virtio header] packet). */
  inject(records: Buffer[]): void {
    const batch = Buffer.concat(records.flatMap((p) => { const h = Buffer.alloc(4); h.writeUInt32BE(p.length); return [h, p]; }));
    this.onBatch!(batch, records.length);
  }
  wake(): void { const w = this.waiters; this.waiters = []; w.forEach((f) => f()); }
  async until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, left); this.waiters.push(() => { clearTimeout(t); resolve(); }); });
    }
  }
}
