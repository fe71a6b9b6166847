import { encodeFrame, FrameType, MAX_CONTROL_PAYLOAD, type PeerInfo } from '@mnedc/protocol';

/** Whoever receives discovery frames: a session once its handshake is done. */
export interface PeerSubscriber {
  sendControl(frame: Buffer): void;
}

export interface DirectoryTimer {
  schedule(callback: () => void, delayMs: number): { cancel(): void };
}

/** Snapshot and delta frames stay well below the control frame limit even with long hostnames. */
const CHUNK_BYTES = Math.min(32 * 1024, MAX_CONTROL_PAYLOAD - 1024);

/**
 * Who is on the overlay, and telling everybody about changes without a storm.
 *
 * Changes are coalesced for `windowMs`: a thousand devices joining at once cost each subscriber one
 * delta (in a few chunked frames), not a thousand. Newcomers get their snapshot at the same flush, built
 * once and shared by all newcomers of that window; the snapshot already reflects the window's changes,
 * so newcomers skip its deltas.
 */
export class PeerDirectory {
  private readonly peers = new Map<string, PeerInfo>();
  /** deviceId → its latest info (up) or null (down), since the last flush. */
  private readonly pending = new Map<string, PeerInfo | null>();
  private readonly subscribers = new Set<PeerSubscriber>();
  private readonly newcomers = new Set<PeerSubscriber>();
  private flushTimer: { cancel(): void } | null = null;
  framesSent = 0;

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
      const frames = buildFrames(false, up, down);
      for (const subscriber of this.subscribers) this.send(subscriber, frames);
    }
    this.pending.clear();
    if (this.newcomers.size > 0) {
      const snapshot = buildFrames(true, [...this.peers.values()], []);
      for (const subscriber of this.newcomers) {
        this.send(subscriber, snapshot);
        this.subscribers.add(subscriber);
      }
      this.newcomers.clear();
    }
  }

  private send(subscriber: PeerSubscriber, frames: Buffer[]): void {
    for (const frame of frames) subscriber.sendControl(frame);
    this.framesSent += frames.length;
  }

  private scheduleFlush(): void {
    this.flushTimer ??= this.timer.schedule(() => this.flush(), this.windowMs);
  }
}

/** Splits a peer update into frames of at most CHUNK_BYTES; the first frame of a snapshot says reset. */
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
    const text = JSON.stringify(info);
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
    frames.push(encodeFrame(FrameType.Peers, Buffer.from(json, 'utf8')));
  }
  return frames;
}
