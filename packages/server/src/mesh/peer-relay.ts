import { Link, type WriteBatch } from '@mnedc/link';
import type { Target, TrafficCounters } from '../dataplane/target';

export type MeshLinkState = 'connecting' | 'up' | 'down';

/**
 * Another relay of the cluster as a target of the data plane: what is routed to it goes over the mesh
 * link, under that link's budget (a congested link drops, counted as queueFull for the sender, and never
 * queues without bound). It has no address of its own: what it sends is checked per packet against the
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

  /** `counters`: the relay's, kept across its links, so a reconnect does not reset what was counted. */
  constructor(readonly relayId: string, readonly link: Link, readonly dialed: boolean, readonly remote: string, readonly counters: TrafficCounters) {
    this.deviceId = `relay ${relayId}`;
  }

  accepts(bytes: number): boolean {
    return this.open && this.link.accepts(bytes);
  }

  deliver(frames: Buffer, batch: WriteBatch): void {
    this.link.queueData(frames, batch);
  }
}
