import type { Logger } from '@mnedc/common';
import type { Subnet } from '@mnedc/protocol';
import type { AcquireRequest, AcquireResult, Lease, LeasePool } from './lease-pool';
import { LeaseStore, type LeaseStoreOptions } from './lease-store';

/**
 * A shared store (a cluster's etcd) cannot be read or written now: not the device's fault nor a full
 * disk, and it passes. The device is told to retry; the relay goes on serving the devices it has.
 */
export class StoreUnavailableError extends Error {}

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
  /** The device was seen now (joined or left): recorded lazily, a crash may lose it. */
  touch(deviceId: string, now: number): void;
  /** The write a new lease (or a release) of the device still waits for; undefined once durable. */
  pending(deviceId: string): Promise<void> | undefined;
  release(deviceId: string): Lease | undefined;
  /** Saves what is pending and closes (shutdown). */
  close(): Promise<void>;
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

/**
 * Leases in this relay's state directory: the pool in memory, recorded by LeaseStore. A new lease is
 * recorded the moment it is acquired, so the handshake can wait for it (`pending`) before its WELCOME.
 */
export class LocalLeases implements LeaseService {
  private readonly store: LeaseStore;
  private readonly pool: LeasePool;

  constructor(stateDir: string, subnet: Subnet, log: Logger, options: LeaseStoreOptions = {}) {
    this.store = new LeaseStore(stateDir, log, options);
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

  /** Appends and syncs of the lease journal so far (tests, status). */
  get stats(): LeaseStore['stats'] {
    return this.store.stats;
  }

  leases(): Iterable<Lease> {
    return this.pool.leases();
  }

  get(deviceId: string): Lease | undefined {
    return this.pool.get(deviceId);
  }

  acquire(request: AcquireRequest): AcquireResult {
    const result = this.pool.acquire(request);
    if (!result.ok) return result;
    if (result.isNew) {
      // In this order in the journal: a replay must never see the reclaimed address leased twice.
      if (result.reclaimedFrom) void this.store.remove(result.reclaimedFrom.deviceId);
      void this.store.record(result.lease);
    } else {
      this.store.touched(request.deviceId, this.pool);
    }
    return result;
  }

  touch(deviceId: string, now: number): void {
    this.pool.touch(deviceId, now);
    this.store.touched(deviceId, this.pool);
  }

  pending(deviceId: string): Promise<void> | undefined {
    return this.store.pending(deviceId);
  }

  release(deviceId: string): Lease | undefined {
    const lease = this.pool.release(deviceId);
    if (lease) void this.store.remove(deviceId);
    return lease;
  }

  close(): Promise<void> {
    return this.store.close(this.pool);
  }
}
