import type { Logger } from '@mnedc/common';
import type { Subnet } from '@mnedc/protocol';
import type { AcquireRequest, AcquireResult, Lease, LeasePool } from './lease-pool';
import { LeaseStore } from './lease-store';

/**
 * Who holds which virtual address. The handshake acquires, the relay records when a device was last
 * seen, the operator releases. This relay's file store is one implementation; a cluster puts a shared
 * store behind the same interface.
 */
export interface LeaseService {
  readonly serverIp: number;
  readonly size: number;
  readonly capacity: number;
  leases(): Iterable<Lease>;
  get(deviceId: string): Lease | undefined;
  acquire(request: AcquireRequest): AcquireResult;
  /** The device was seen now (joined or left); `created`: its lease is new, which a crash must not lose. */
  touch(deviceId: string, now: number, created?: boolean): void;
  release(deviceId: string): Lease | undefined;
  /** Saves what is pending (shutdown). */
  flush(): void;
}

/**
 * Which key owns which device ID. A binding is written before the device is welcomed (`bind` resolves
 * once it is durable), so a crash can never free an ID for another key.
 */
export interface BindingStore {
  readonly size: number;
  get(deviceId: string): string | undefined;
  bind(deviceId: string, fingerprint: string): Promise<void>;
  /** The write a binding (or forget) of the device still waits for; undefined once durable. */
  pending(deviceId: string): Promise<void> | undefined;
  forget(deviceId: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Leases in this relay's state directory: the pool in memory, saved by LeaseStore. */
export class LocalLeases implements LeaseService {
  private readonly store: LeaseStore;
  private readonly pool: LeasePool;

  constructor(stateDir: string, subnet: Subnet, log: Logger) {
    this.store = new LeaseStore(stateDir, log);
    this.pool = this.store.load(subnet);
  }

  get serverIp(): number {
    return this.pool.serverIp;
  }

  get size(): number {
    return this.pool.size;
  }

  get capacity(): number {
    return this.pool.capacity;
  }

  leases(): Iterable<Lease> {
    return this.pool.leases();
  }

  get(deviceId: string): Lease | undefined {
    return this.pool.get(deviceId);
  }

  acquire(request: AcquireRequest): AcquireResult {
    return this.pool.acquire(request);
  }

  touch(deviceId: string, now: number, created = false): void {
    this.pool.touch(deviceId, now);
    this.store.changed(this.pool, created);
  }

  release(deviceId: string): Lease | undefined {
    const lease = this.pool.release(deviceId);
    if (lease) this.store.changed(this.pool, true);
    return lease;
  }

  flush(): void {
    this.store.flush(this.pool);
  }
}
