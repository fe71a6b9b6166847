import { intToIpv4, ipv4ToInt } from '@mnedc/protocol';
import { checkStoredLease, CorruptLeaseFile, type Lease } from './lease-pool';

/**
 * A lease as the lease journal stores it, keyed by device ID. The address stays text so that leases.json
 * reads as it always did. Pure: the conversions between the pool's leases and the journal's records.
 */
export interface LeaseRecord {
  ip: string;
  hostname: string;
  underlay: string[];
  createdAt: number;
  lastSeen: number;
}

/** A fresh record: the journal keeps values as they were set, and the pool mutates its leases. */
export function leaseRecord(lease: Lease): LeaseRecord {
  return { ip: intToIpv4(lease.ip), hostname: lease.hostname, underlay: [...lease.underlay], createdAt: lease.createdAt, lastSeen: lease.lastSeen };
}

export function leaseFromRecord(deviceId: string, record: LeaseRecord): Lease {
  return { deviceId, ip: ipv4ToInt(record.ip), hostname: record.hostname, underlay: [...record.underlay], createdAt: record.createdAt, lastSeen: record.lastSeen };
}

/** The journal's check of a record read back: the same rules as a version 1 lease file. */
export function checkLeaseRecord(value: unknown, deviceId: string): LeaseRecord {
  const label = `lease of ${JSON.stringify(deviceId)}`;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CorruptLeaseFile(`${label}: not an object`);
  return leaseRecord(checkStoredLease({ ...value, deviceId }, label));
}

/**
 * The version 1 leases.json (`{"version":1,"leases":[{deviceId,ip,...}]}`, before the journal) as the
 * snapshot's map, so an existing install upgrades in place; its first compaction rewrites it as version 2.
 */
export function leasesVersion1(file: Record<string, unknown>): Record<string, unknown> {
  if (!Array.isArray(file.leases)) throw new CorruptLeaseFile('not a version 1 lease file (no "leases" array)');
  const map: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  file.leases.forEach((stored: unknown, index: number) => {
    const lease = checkStoredLease(stored, `lease ${index}`);
    if (Object.hasOwn(map, lease.deviceId)) throw new CorruptLeaseFile(`lease ${index}: device ${lease.deviceId} appears twice`);
    map[lease.deviceId] = leaseRecord(lease);
  });
  return map;
}
