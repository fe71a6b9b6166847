/**
 * Fairness on a shared queue (a mesh link carries many devices' traffic): below half of its limit
 * everyone is taken as they come; above, each sender may add only an equal part of the upper half,
 * counted since the queue last went below half, with one part always left for a sender not seen yet.
 * So one device flooding another relay fills the link only to half plus its part, and every other
 * sender still finds room, as it would in its own queue with a single relay.
 */
export class FairShare {
  /** Bytes each sender added since the queue went above half. */
  private readonly shares = new Map<number, number>();

  /** Whether `sender` may add `bytes` to a queue holding `queued` of `limit` bytes now. */
  admit(sender: number, bytes: number, queued: number, limit: number): boolean {
    const half = limit / 2;
    if (queued < half) {
      if (this.shares.size > 0) this.shares.clear();
      return true;
    }
    const used = this.shares.get(sender);
    const senders = this.shares.size + (used === undefined ? 1 : 0);
    if ((used ?? 0) + bytes > half / (senders + 1)) return false;
    this.shares.set(sender, (used ?? 0) + bytes);
    return true;
  }
}
