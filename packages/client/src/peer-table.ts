import { inSubnet, ipv4ToInt, isIpv4, nonUnicastDestination, type PeerInfo, type PeerUpdate, type Subnet } from '@mnedc/protocol';

export interface PeerChanges {
  up: PeerInfo[];
  down: PeerInfo[];
  /** Peers announced at an address off the overlay, ignored. */
  offOverlay?: number;
}

/** A complete snapshot of nothing: applied when the relay grants no list, peers known before go down. */
export const NO_PEERS: PeerUpdate = Object.freeze({ reset: true, more: false, up: [], down: [] });

/** Whether `ip` can be a device on `overlay`: one of its host addresses, not its network or broadcast address. */
export function onOverlay(ip: string, overlay: Subnet): boolean {
  if (!isIpv4(ip)) return false;
  const value = ipv4ToInt(ip);
  return inSubnet(value, overlay.network, overlay.prefix) && nonUnicastDestination(value, overlay) === null;
}

/**
 * The client's view of the overlay, from a snapshot plus deltas. `apply` reports what changed, so a
 * snapshot after a reconnect produces events only for peers that really came or went meanwhile.
 */
export class PeerTable {
  private peers = new Map<string, PeerInfo>();
  /** Peers seen before a reset, kept until the snapshot is complete to diff against. */
  private previous: Map<string, PeerInfo> | null = null;

  constructor(private readonly selfId: string) {}

  get size(): number {
    return this.peers.size;
  }

  list(): PeerInfo[] {
    return [...this.peers.values()];
  }

  get(deviceId: string): PeerInfo | undefined {
    return this.peers.get(deviceId);
  }

  /**
   * With `overlay`, a peer announced at an address off it is left out (and one known before is reported
   * down): whatever a relay announces reaches /etc/hosts, hooks and peers.json, so it must not name, say,
   * a LAN host or a public address.
   */
  apply(update: PeerUpdate, overlay: Subnet | null = null): PeerChanges {
    const changes: PeerChanges = { up: [], down: [] };
    if (update.reset) {
      // A reset inside an unfinished snapshot (a second reset, or a reconnect mid-snapshot): the peers the
      // first part announced were reported up, so they must be diffed against too, or they vanish unreported.
      if (this.previous) for (const [id, info] of this.peers) this.previous.set(id, info);
      else this.previous = this.peers;
      this.peers = new Map();
    }
    for (const info of update.up) {
      if (info.deviceId === this.selfId) continue;
      if (overlay && !onOverlay(info.ip, overlay)) {
        changes.offOverlay = (changes.offOverlay ?? 0) + 1;
        const before = this.peers.get(info.deviceId);
        if (before && this.peers.delete(info.deviceId)) changes.down.push(before);
        continue;
      }
      const before = this.peers.get(info.deviceId) ?? this.previous?.get(info.deviceId);
      this.peers.set(info.deviceId, info);
      this.previous?.delete(info.deviceId);
      if (!before || before.ip !== info.ip || before.since !== info.since) changes.up.push(info);
    }
    for (const deviceId of update.down) {
      const before = this.peers.get(deviceId);
      if (before && this.peers.delete(deviceId)) changes.down.push(before);
    }
    if (this.previous && !update.more) {
      for (const gone of this.previous.values()) changes.down.push(gone);
      this.previous = null;
    }
    return changes;
  }
}
