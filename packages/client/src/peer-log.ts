import type { Logger, RateLimitedWarning } from '@mnedc/common';
import type { Welcome } from '@mnedc/protocol';
import type { PeerChanges } from './peer-table';

/** One line per peer that came or went; peers the relay announced off the overlay, rate-limited. */
export function logPeerChanges(changes: PeerChanges, log: Logger, warnings: RateLimitedWarning, server: string, lease: Welcome | null): void {
  if (changes.offOverlay) {
    warnings.warn('peer-off-overlay', () => ({
      fields: { server, ignored: changes.offOverlay },
      message: `Ignored peers ${server} announced at addresses outside the overlay subnet ${lease?.ip}/${lease?.prefix}`,
    }));
  }
  for (const peer of changes.up) {
    log.info({ peer: peer.deviceId, ip: peer.ip, hostname: peer.hostname }, `Peer ${peer.deviceId} (${peer.hostname || 'no hostname'}) is up at ${peer.ip}`);
  }
  for (const peer of changes.down) {
    log.info({ peer: peer.deviceId, ip: peer.ip }, `Peer ${peer.deviceId} (${peer.ip}) is down`);
  }
}
