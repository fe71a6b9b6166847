/*
 * The daemons' control API as mnedcctl reads it: declared once in @mnedc/common (rpc-types.ts), where
 * the daemons type their results with the same declarations.
 */
export type {
  ClientPeer, ClientStats, ClientStatus, ClusterInfo, Counters, DaemonKind, Drops, ForgetResult, JoinResult, KickResult, Lease, PeerEvent,
  ReleaseResult, ServerPeer, ServerStats, ServerStatus, Status, WatchResult,
} from '@mnedc/common';
