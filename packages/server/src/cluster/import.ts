import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic, type Logger } from '@mnedc/common';
import { intToIpv4, type Subnet } from '@mnedc/protocol';
import { DeviceBindings } from '../stores/identity';
import { LocalLeases } from '../stores/services';
import type { Lease } from '../stores/lease-pool';
import type { ClusterState } from './cluster';

/** Written once this relay's own files went into the cluster: a later start must not bring back what the cluster has since released. */
export const IMPORT_MARKER = 'cluster-import.done';

/** Whether the state directory holds a single relay's leases or bindings (snapshot or journal). */
function hasLocalState(stateDir: string): boolean {
  if (!existsSync(stateDir)) return false;
  return readdirSync(stateDir).some((f) => /^(leases|bindings)(\.json|\.journal\.\d+)$/.test(f));
}

export interface ImportResult {
  bindings: { imported: number; kept: number };
  leases: { imported: number; kept: number };
}

/** What a single relay's files hold, read at start (a corrupt file stops the start, as it would alone). */
export interface LocalState {
  bindings: Array<[string, string]>;
  leases: Lease[];
}

/**
 * This relay's own bindings and leases, still to go into the cluster; null when there are none or they
 * went already. Synchronous, so a corrupt file stops the relay's start (LeaseStateError, IdentityError).
 */
export function readLocalStateOnce(stateDir: string, subnet: Subnet, log: Logger): LocalState | null {
  if (existsSync(join(stateDir, IMPORT_MARKER)) || !hasLocalState(stateDir)) return null;
  const bindings = new DeviceBindings(stateDir);
  const leases = new LocalLeases(stateDir, subnet, log);
  const state = { bindings: [...bindings.entries()], leases: [...leases.leases()].map((l) => ({ ...l })) };
  Promise.all([bindings.close(), leases.close()]).catch((err: Error) => log.warn({ err }, `Closing this relay's own lease files: ${err.message}`));
  return state;
}

/**
 * A single relay growing into a cluster: its key bindings and leases go into etcd, each only where the
 * cluster has nothing for that device ID and that address yet (create-if-absent, as any allocation), so
 * its devices keep their addresses and keys without enrolling again. What the cluster already has wins
 * and is logged. Marked done (IMPORT_MARKER) so a later start does not bring back what was released.
 */
export async function importLocalState(cluster: ClusterState, stateDir: string, local: LocalState, log: Logger): Promise<ImportResult> {
  const { client, keys } = cluster;
  const result: ImportResult = { bindings: { imported: 0, kept: 0 }, leases: { imported: 0, kept: 0 } };
  for (const [deviceId, fingerprint] of local.bindings) {
    const key = keys.binding(deviceId);
    const r = await client.txn([{ key, target: 'CREATE', result: 'EQUAL', value: 0 }], [{ put: { key, value: fingerprint } }], [{ get: { key } }]);
    const there = !r.succeeded && r.results[0] && 'get' in r.results[0] ? r.results[0].get.kvs[0]?.value : undefined;
    if (r.succeeded || there === fingerprint) result.bindings.imported++;
    else {
      result.bindings.kept++;
      log.warn({ deviceId }, `Kept the cluster's key binding of ${deviceId}: this relay's differs`);
    }
  }
  for (const lease of local.leases) {
    const ip = intToIpv4(lease.ip);
    const { deviceId, hostname, underlay, createdAt, lastSeen } = lease;
    const r = await client.txn([
      { key: keys.lease(deviceId), target: 'CREATE', result: 'EQUAL', value: 0 },
      { key: keys.address(ip), target: 'CREATE', result: 'EQUAL', value: 0 },
    ], [
      { put: { key: keys.address(ip), value: deviceId } },
      { put: { key: keys.lease(deviceId), value: JSON.stringify({ ip, hostname, underlay, createdAt, lastSeen }) } },
    ], [{ get: { key: keys.address(ip) } }]);
    const holder = !r.succeeded && r.results[0] && 'get' in r.results[0] ? r.results[0].get.kvs[0]?.value : undefined;
    if (r.succeeded || holder === deviceId) result.leases.imported++;
    else {
      result.leases.kept++;
      log.warn({ deviceId, ip }, `Kept the cluster's lease for ${deviceId} or ${ip}: this relay's lease of ${ip} to ${deviceId} conflicts with it`);
    }
  }
  writeFileAtomic(join(stateDir, IMPORT_MARKER), `${JSON.stringify({ at: new Date().toISOString(), ...result })}\n`, 0o644);
  log.info(result, `Moved this relay's state into the cluster: ${result.bindings.imported} key bindings and ${result.leases.imported} leases` +
    (result.bindings.kept + result.leases.kept > 0 ? ` (${result.bindings.kept + result.leases.kept} kept as the cluster had them)` : ''));
  return result;
}
