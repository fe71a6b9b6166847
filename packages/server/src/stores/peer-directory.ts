import { chargeFor, copyIfPinning } from '@mnedc/link';
import {
  encodePeerEntry, encodePeersBinary, FrameType, MAX_CONTROL_PAYLOAD, unpooledFrame, type DiscoveryMode, type DiscoveryRequest, type PeerInfo,
} from '@mnedc/protocol';

/** Whoever receives discovery frames: a session once its handshake is done and it asked for the list. */
export interface PeerSubscriber {
  sendControl(frame: Buffer): boolean | void;
  /** 'binary' once it negotiated "peers-bin" (PEERS_BIN frames); JSON PEERS otherwise. */
  readonly peerFormat?: PeerFormat;
  /**
   * Bytes of discovery its queue takes now without crowding out its DATA; absent = no limit. Discovery
   * waits (and is resent as a fresh snapshot) rather than going above it.
   */
  discoveryRoom?(): number;
}

export type PeerFormat = 'json' | 'binary';

export interface DirectoryTimer {
  schedule(callback: () => void, delayMs: number): { cancel(): void };
}

/** Snapshot and delta frames stay well below the control frame limit even with long hostnames. */
const CHUNK_BYTES = Math.min(32 * 1024, MAX_CONTROL_PAYLOAD - 1024);
/**
 * Deltas a congested subscriber may have waiting before they are dropped for a fresh snapshot once it
 * drains: past this, the snapshot is the cheaper way to catch up, and what waits is bounded per device.
 */
const MAX_BACKLOG_BYTES = 64 * 1024;

/** Room a stale subscriber needs before its fresh snapshot: a full chunk and its write's overhead. */
const RESYNC_ROOM = CHUNK_BYTES + 1024;

/**
 * A flush costs about one socket write per subscriber (~15–20 µs each on the 2-core machine), so the
 * coalescing window grows with the subscribers to keep flushing near 5% of a core: 1,000 full-list devices
 * are told every 0.5 s, never slower than MAX_WINDOW_MS.
 */
const WINDOW_MS_PER_SUBSCRIBER = 0.5;
const MAX_WINDOW_MS = 2000;

export function flushWindowMs(baseMs: number, subscribers: number): number {
  return Math.max(baseMs, Math.min(MAX_WINDOW_MS, subscribers * WINDOW_MS_PER_SUBSCRIBER));
}

/** What a subscriber still has to be sent: frames shared with everyone, or nothing and a snapshot due. */
interface Feed {
  backlog: Buffer[];
  backlogBytes: number;
  stale: boolean;
}

/** What the relay grants a device asking for `requested` (absent: an older client, which gets the list). */
export function grantDiscovery(requested: DiscoveryRequest | undefined, networkSize: number, fullMax: number): DiscoveryMode {
  if (requested === undefined) return 'full';
  if (requested === 'auto') return networkSize <= fullMax ? 'full' : 'names';
  return requested;
}

/**
 * Who is on the overlay, and telling every subscriber about changes without a storm.
 *
 * Changes are coalesced for `windowMs` (longer with many subscribers, flushWindowMs): a thousand devices joining at once cost each subscriber one
 * delta (in a few chunked frames), not a thousand. Newcomers get their snapshot at the same flush; the
 * snapshot already reflects the window's changes, so newcomers skip its deltas. Every frame of a window
 * is built once per format and the same Buffer is queued to every subscriber.
 *
 * Discovery yields to data: a frame is queued only while it fits the subscriber's discoveryRoom; the
 * rest waits in its backlog (references to the shared frames) until `drained`. A backlog that outgrows
 * MAX_BACKLOG_BYTES is dropped and the subscriber marked stale: once drained it gets a fresh snapshot.
 */
export class PeerDirectory {
  private readonly peers = new Map<string, PeerInfo>();
  /** deviceId → its latest info (up) or null (down), since the last flush. */
  private readonly pending = new Map<string, PeerInfo | null>();
  private readonly subscribers = new Map<PeerSubscriber, Feed>();
  private readonly newcomers = new Set<PeerSubscriber>();
  /** Subscribers with a backlog or a snapshot due, for `retry`. */
  private readonly waiting = new Set<PeerSubscriber>();
  private flushTimer: { cancel(): void } | null = null;
  framesSent = 0;
  /** Times a congested subscriber's deltas were dropped for a fresh snapshot later. */
  resyncs = 0;

  constructor(private readonly timer: DirectoryTimer, private readonly windowMs = 100) {}

  get size(): number {
    return this.peers.size;
  }

  list(): IterableIterator<PeerInfo> {
    return this.peers.values();
  }

  /** Adds or updates a peer; `subscriber`, if given, will receive the snapshot and later deltas. */
  join(info: PeerInfo, subscriber?: PeerSubscriber): void {
    this.peers.set(info.deviceId, info);
    this.pending.set(info.deviceId, info);
    if (subscriber) this.newcomers.add(subscriber);
    this.scheduleFlush();
  }

  leave(deviceId: string, subscriber?: PeerSubscriber): void {
    if (subscriber) {
      this.subscribers.delete(subscriber);
      this.newcomers.delete(subscriber);
      this.waiting.delete(subscriber);
    }
    if (!this.peers.delete(deviceId)) return;
    this.pending.set(deviceId, null);
    this.scheduleFlush();
  }

  /** Sends everything pending now (also used at shutdown and by tests). */
  flush(): void {
    this.flushTimer?.cancel();
    this.flushTimer = null;
    if (this.pending.size > 0 && this.subscribers.size > 0) {
      const up: PeerInfo[] = [];
      const down: string[] = [];
      for (const [deviceId, info] of this.pending) {
        if (info) up.push(info);
        else down.push(deviceId);
      }
      const delta = lazyFrames(false, up, down);
      for (const [subscriber, feed] of this.subscribers) {
        if (feed.stale) continue;
        const frames = delta(subscriber.peerFormat);
        const bytes = frames.reduce((n, f) => n + f.length, 0);
        if (feed.backlog.length > 0 && feed.backlogBytes + bytes > MAX_BACKLOG_BYTES) {
          this.markStale(subscriber, feed);
          continue;
        }
        feed.backlog.push(...frames);
        feed.backlogBytes += bytes;
        this.pump(subscriber, feed);
      }
    }
    this.pending.clear();
    if (this.newcomers.size > 0) {
      const snapshot = lazyFrames(true, [...this.peers.values()], []);
      for (const subscriber of this.newcomers) {
        const frames = snapshot(subscriber.peerFormat);
        const feed: Feed = { backlog: [...frames], backlogBytes: frames.reduce((n, f) => n + f.length, 0), stale: false };
        this.subscribers.set(subscriber, feed);
        this.pump(subscriber, feed);
      }
      this.newcomers.clear();
    }
  }

  /** The subscriber's queue took its bytes (socket 'drain'): what waits for it goes on now. */
  drained(subscriber: PeerSubscriber): void {
    const feed = this.subscribers.get(subscriber);
    if (!feed || !this.waiting.has(subscriber)) return;
    if (feed.stale) {
      if (room(subscriber) < RESYNC_ROOM) return;
      // A fresh snapshot at the next flush, and the deltas after it: the subscriber is a newcomer again.
      this.subscribers.delete(subscriber);
      this.waiting.delete(subscriber);
      this.newcomers.add(subscriber);
      this.scheduleFlush();
      return;
    }
    this.pump(subscriber, feed);
  }

  /** Gives every waiting subscriber its chance (the relay's sweep: a 'drain' may never come). */
  retry(): void {
    for (const subscriber of [...this.waiting]) this.drained(subscriber);
  }

  /** Subscribers waiting for room (tests, metrics). */
  get waitingCount(): number {
    return this.waiting.size;
  }

  private pump(subscriber: PeerSubscriber, feed: Feed): void {
    let sent = 0;
    for (const frame of feed.backlog) {
      if (chargeFor(frame) > room(subscriber)) break;
      subscriber.sendControl(frame);
      feed.backlogBytes -= frame.length;
      sent++;
    }
    if (sent > 0) feed.backlog.splice(0, sent);
    this.framesSent += sent;
    if (feed.backlog.length > 0) this.waiting.add(subscriber);
    else this.waiting.delete(subscriber);
  }

  private markStale(subscriber: PeerSubscriber, feed: Feed): void {
    feed.stale = true;
    feed.backlog = [];
    feed.backlogBytes = 0;
    this.waiting.add(subscriber);
    this.resyncs++;
  }

  private scheduleFlush(): void {
    this.flushTimer ??= this.timer.schedule(() => this.flush(), flushWindowMs(this.windowMs, this.subscribers.size));
  }
}

function room(subscriber: PeerSubscriber): number {
  return subscriber.discoveryRoom ? subscriber.discoveryRoom() : Number.POSITIVE_INFINITY;
}

/**
 * Each peer's entry in both formats, encoded once: a snapshot (every newcomer's, every resync's) is then
 * copies, not thousands of encodings. Keyed by the PeerInfo object, which `join` replaces on any change,
 * so an entry can never be stale and goes with its peer.
 */
const binaryEntries = new WeakMap<PeerInfo, Buffer>();
const jsonEntries = new WeakMap<PeerInfo, string>();

export function binaryEntry(info: PeerInfo): Buffer {
  let entry = binaryEntries.get(info);
  if (!entry) {
    // Memory of its own: a slice of Node's 8 KiB allocation pool, kept while the peer is up, would pin
    // the whole block (~8 KiB a peer when joins come one by one between other allocations).
    entry = copyIfPinning(encodePeerEntry(info));
    binaryEntries.set(info, entry);
  }
  return entry;
}

function jsonEntry(info: PeerInfo): string {
  let entry = jsonEntries.get(info);
  if (entry === undefined) jsonEntries.set(info, (entry = JSON.stringify(info)));
  return entry;
}

/** The update's frames in each format, built the first time a subscriber of that format asks, then shared. */
function lazyFrames(reset: boolean, up: PeerInfo[], down: string[]): (format: PeerFormat | undefined) => Buffer[] {
  let json: Buffer[] | undefined;
  let binary: Buffer[] | undefined;
  return (format) => format === 'binary'
    ? (binary ??= encodePeersBinary(reset, up, down, binaryEntry))
    : (json ??= buildFrames(reset, up, down));
}

/**
 * Splits a peer update into JSON PEERS frames of at most CHUNK_BYTES; the first frame of a snapshot says
 * reset. Unpooled: the same frames go to every subscriber.
 */
export function buildFrames(reset: boolean, up: PeerInfo[], down: string[]): Buffer[] {
  const frames: Buffer[] = [];
  let ups: string[] = [];
  let downs: string[] = [];
  let bytes = 0;
  // Frames are built as text first; `more` is patched in once the last chunk is known.
  const bodies: string[] = [];
  const emit = () => {
    bodies.push(`"up":[${ups.join(',')}],"down":[${downs.join(',')}]}`);
    ups = [];
    downs = [];
    bytes = 0;
  };
  for (const info of up) {
    const text = jsonEntry(info);
    const size = Buffer.byteLength(text) + 1;
    if (bytes + size > CHUNK_BYTES && bytes > 0) emit();
    ups.push(text);
    bytes += size;
  }
  for (const deviceId of down) {
    const text = JSON.stringify(deviceId);
    const size = Buffer.byteLength(text) + 1;
    if (bytes + size > CHUNK_BYTES && bytes > 0) emit();
    downs.push(text);
    bytes += size;
  }
  if (ups.length > 0 || downs.length > 0 || bodies.length === 0) emit();
  for (let i = 0; i < bodies.length; i++) {
    const more = reset && i < bodies.length - 1;
    const json = `{"reset":${reset && i === 0},"more":${more},${bodies[i]}`;
    frames.push(unpooledFrame(FrameType.Peers, Buffer.from(json, 'utf8')));
  }
  return frames;
}
