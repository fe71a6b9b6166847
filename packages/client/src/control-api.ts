import {
  exactly, listQueryParam, selectRows, type ClientPeer, type ClientResults, type ClientStats, type ClientStatus, type PeerEvent, type RpcMethodsOf, type WatchResult,
} from '@mnedc/common';
import type { PeerInfo } from '@mnedc/protocol';
import type { RelayClient } from './client';
import type { PeerChanges } from './peer-table';

/** mnedcctl's view of the client; field names are a contract (see the README). */
export function clientMethods(client: RelayClient, info: { version: string; deviceId: string; interfaceName: string; startedAt: number }): RpcMethodsOf<ClientResults> {
  const peerView = (p: PeerInfo): ClientPeer => ({ deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, since: p.since, underlay: p.underlay });
  const methods: RpcMethodsOf<ClientResults> = {
    status: (): ClientStatus => ({
      daemon: 'client',
      version: info.version,
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - info.startedAt) / 1000),
      state: client.state,
      server: client.server,
      relays: client.relays,
      deviceId: info.deviceId,
      ip: client.lease?.ip ?? '',
      prefix: client.lease?.prefix ?? 0,
      interface: info.interfaceName,
      since: client.stateSince,
      reconnects: client.counters.reconnects,
      failedAttempts: client.counters.failedAttempts,
      lastError: client.lastError,
      offload: client.offloading,
      ...(client.discovery ? { discovery: client.discovery } : {}),
      ...(client.lease ? { multicast: client.lease.multicast ?? [] } : {}),
      ...(client.lease?.ip6 ? { ip6: client.lease.ip6 } : {}),
    }),

    peers: (params) => selectRows(client.peers.list(), (p) => [p.deviceId, p.hostname, p.ip], listQueryParam(params)).map(peerView),

    stats: (): ClientStats => ({
      // The TUN's own counters (TunStats); only a test's fake device has none and gives {}. The
      // agreement test (rpc-agreement.test.ts) checks the real shape at run time.
      tunnel: client.deviceStats() as ClientStats['tunnel'],
      session: { ...client.counters },
      rttMs: client.rttMs,
    }),

    watch: (_params, context): WatchResult => {
      const forward = (changes: PeerChanges) => {
        const at = Date.now();
        const notify = (event: PeerEvent['event'], p: PeerInfo) =>
          context.notify('peer', exactly<PeerEvent>()({ event, deviceId: p.deviceId, ip: p.ip, hostname: p.hostname, at }));
        for (const p of changes.up) notify('up', p);
        for (const p of changes.down) notify('down', p);
      };
      client.on('peers', forward);
      context.onClose(() => client.off('peers', forward));
      return { watching: true };
    },
  };
  return methods;
}
