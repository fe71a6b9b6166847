import { Link, type WriteBatch } from '@mnedc/link';
import type { Target, TrafficCounters } from '../dataplane/target';
import { FairShare } from './fair-share';

export type MeshLinkState = 'connecting' | 'up' | 'down';

/**
 * Another relay of the cluster as a target of the data plane: what is routed to it goes over the mesh
 * link, under that link's budget (a congested link drops, counted as queueFull for the sender, and never
 * queues without bound), shared fairly between the devices sending over it. It has no address of its own: what it sends is checked per packet against the
 * devices it carries (DataPlane.forwardFromRelay).
 */
export class PeerRelay implements Target {
  readonly local = false;
  readonly ip = 0;
  readonly deviceId: string;
  /** Both sides listed "gso": DATA_GSO crosses the link as it is. */
  gso = false;
  open = false;
  readonly openedAt = Date.now();
  /** No one device may take the whole link (fair-share.ts). */
  private readonly fair = new FairShare();

  /** `counters`: the relay's, kept across its links, so a reconnect does not reset what was counted. */
  constructor(readonly relayId: string, readonly link: Link, readonly dialed: boolean, readonly remote: string, readonly counters: TrafficCounters) {
    this.deviceId = `relay ${relayId}`;
  }

  accepts(bytes: number, from?: Target): boolean {
    if (!this.open) return false;
    if (!this.fair.admit(from?.ip ?? 0, bytes, this.link.queued, this.link.budget.dataLimit)) {
      this.link.missed++;
      return false;
    }
    return this.link.accepts(bytes);
  }

  deliver(frames: Buffer, batch: WriteBatch): void {
    this.link.queueData(frames, batch);
  }
}
