import { intToIpv4, type PeerInfo } from '@mnedc/protocol';
import type { PeerEvent } from '../devices';
import type { Lease } from '../stores/lease-pool';
import type { PeerDirectory } from '../stores/peer-directory';
import type { RelayRegistry } from './registry';

/**
 * The devices on the cluster's other relays, in this relay's peer directory (discovery) and its DNS
 * names, so every relay gives the same answers. It follows the registry's attachments (etcd watches):
 * a device attached to another relay is up here with its lease's name and address, one that is
 * attached nowhere is down. This relay's own devices are the Devices' to announce.
 *
 * The attachment and the lease come by two watches: an attachment whose lease this relay has not read
 * yet waits, and is looked at again every RECHECK_MS until the lease is there or the device has left.
 * `localLeft` is for a device whose session here ended: another relay may have it by now (an attachment
 * seen while it was still here was not its to list).
 */
export function followRemotePeers(registry: RelayRegistry, directory: PeerDirectory, lease: (deviceId: string) => Lease | undefined,
  isLocal: (deviceId: string) => boolean, emit: (event: PeerEvent) => void): { stop(): void; localLeft(deviceId: string): void } {
  const remote = new Set<string>();
  const waiting = new Set<string>();
  const follow = (deviceId: string, relay: string | undefined) => {
    waiting.delete(deviceId);
    if (isLocal(deviceId)) {
      remote.delete(deviceId);
      return;
    }
    const now = Date.now();
    const elsewhere = relay !== undefined && relay !== registry.self.id;
    const held = elsewhere ? lease(deviceId) : undefined;
    if (held) {
      const info: PeerInfo = { deviceId, ip: intToIpv4(held.ip), hostname: held.hostname, underlay: held.underlay, since: now };
      remote.add(deviceId);
      directory.join(info);
      emit({ event: 'up', deviceId, ip: info.ip, hostname: info.hostname, at: now });
      return;
    }
    if (elsewhere) waiting.add(deviceId);
    if (remote.delete(deviceId)) {
      directory.leave(deviceId);
      emit({ event: 'down', deviceId, ip: '', hostname: '', at: now });
    }
  };
  registry.on('attach', follow);
  const recheck = setInterval(() => {
    for (const deviceId of [...waiting]) if (lease(deviceId)) follow(deviceId, registry.relayOf(deviceId));
  }, RECHECK_MS);
  return {
    stop: () => {
      clearInterval(recheck);
      registry.off('attach', follow);
    },
    localLeft: (deviceId) => follow(deviceId, registry.relayOf(deviceId)),
  };
}

const RECHECK_MS = 1_000;
