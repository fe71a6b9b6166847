export interface ClientCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** TUN packets dropped because there was no connection to send them on. */
  dropsOffline: number;
  /** TUN packets whose virtio header or lengths did not hold (never expected from the kernel). */
  dropsMalformed: number;
  /** DATA_GSO from the relay whose virtio header or lengths did not hold: never written to the TUN. */
  dropsFromRelay: number;
  /** IPv6 packets read from the TUN while the relay gives this device no IPv6: they never leave it. */
  dropsIpv6: number;
  /** Sessions established again after an earlier one ended: real reconnections, not attempts. */
  reconnects: number;
  /** Connection attempts that ended without a session (relay unreachable, refused, rejected). */
  failedAttempts: number;
}

export function newClientCounters(): ClientCounters {
  return { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, dropsOffline: 0, dropsMalformed: 0, dropsFromRelay: 0, dropsIpv6: 0, reconnects: 0, failedAttempts: 0 };
}
