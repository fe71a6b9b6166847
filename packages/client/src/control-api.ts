import type { RpcMethods } from '@mnedc/common';
import type { PeerInfo } from '@mnedc/protocol';
import type { RelayClient } from './client';
import type { PeerChanges } from './peer-table';

/** mnedcctl's view of the client; field names are a contract (see the README). */
export function clientMethods(client: RelayClient, info: { version: string; deviceId: string; interfaceName: string; startedAt: number }): RpcMethods {
  const peerView = (p: PeerInfo) => ({ deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, since: p.since, underlay: p.underlay });
  return {
    status: () => ({
      daemon: 'client',
      version: info.version,
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - info.startedAt) / 1000),
      state: client.state,
      server: client.server,
      deviceId: info.deviceId,
      ip: client.lease?.ip ?? '',
      prefix: client.lease?.prefix ?? 0,
      interface: info.interfaceName,
      since: client.stateSince,
      reconnects: client.counters.reconnects,
      failedAttempts: client.counters.failedAttempts,
      lastError: client.lastError,
      offload: client.offloading,
    }),

    peers: () => client.peers.list().map(peerView),

    stats: () => ({
      tunnel: client.deviceStats(),
      session: { ...client.counters },
      rttMs: client.rttMs,
    }),

    watch: (_params, context) => {
      const forward = (changes: PeerChanges) => {
        const at = Date.now();
        for (const p of changes.up) context.notify('peer', { event: 'up', deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, at });
        for (const p of changes.down) context.notify('peer', { event: 'down', deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, at });
      };
      client.on('peers', forward);
      context.onClose(() => client.off('peers', forward));
      return { watching: true };
    },
  };
}
