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
 */
export function followRemotePeers(registry: RelayRegistry, directory: PeerDirectory, lease: (deviceId: string) => Lease | undefined,
  isLocal: (deviceId: string) => boolean, emit: (event: PeerEvent) => void): void {
  const remote = new Set<string>();
  registry.on('attach', (deviceId: string, relay: string | undefined) => {
    if (isLocal(deviceId)) {
      remote.delete(deviceId);
      return;
    }
    const now = Date.now();
    const held = relay !== undefined && relay !== registry.self.id ? lease(deviceId) : undefined;
    if (held) {
      const info: PeerInfo = { deviceId, ip: intToIpv4(held.ip), hostname: held.hostname, underlay: held.underlay, since: now };
      remote.add(deviceId);
      directory.join(info);
      emit({ event: 'up', deviceId, ip: info.ip, hostname: info.hostname, at: now });
    } else if (remote.delete(deviceId)) {
      directory.leave(deviceId);
      emit({ event: 'down', deviceId, ip: '', hostname: '', at: now });
    }
  });
}
