import type { ClientRequest } from 'node:http';
import { EtcdClient, EtcdError, GRPC, TransportError } from './client';
import { b64, decodeError, decodeWatchMessage, prefixEnd, type KeyValue, type WatchEvent } from './wire';

export interface PrefixWatchHandlers {
  /** Everything under the prefix as of `revision`: first, and again after any gap the events cannot fill. */
  reset(kvs: KeyValue[], revision: number): void;
  /** Changes after the last reset, in revision order, each batch once. */
  events(events: WatchEvent[], revision: number): void;
  /** The watch is live (events flow) or not (`error` says why; it keeps retrying). */
  state?(live: boolean, error?: Error): void;
}

export interface PrefixWatchOptions {
  /**
   * A stream that says nothing for this long is reopened from the last revision seen. A watch can go
   * silent without an error (a member cut off from its peers, a proxy dropping the stream: the issues
   * of etcd3 and clientv3 are full of them); reopening costs one request and loses nothing.
   */
  quietMs?: number;
  /** Backoff after a failure: from minRetryMs doubling to maxRetryMs. */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** A single stream message (one line of JSON) larger than this ends the stream. */
  maxMessageBytes?: number;
}

class Compacted extends Error {}
/** etcd ended the watch (an expired token, a member shutting down): list again, after a pause. */
class Canceled extends Error {}

/**
 * Follows every key under a prefix: a list at one revision, then a watch from the next, reopened from
 * the last revision seen whenever the stream ends, errs or goes quiet, and re-listed (reset) when etcd
 * says that revision is compacted or cancels the watch. Handlers see each change once, in order.
 */
export class PrefixWatch {
  private revision = 0;
  private needList = true;
  private closed = false;
  private request: ClientRequest | null = null;
  private wake: (() => void) | null = null;
  private live = false;
  /** The current stream's watch was created (etcd said so). */
  private created = false;
  private readonly quietMs: number;
  private readonly minRetryMs: number;
  private readonly maxRetryMs: number;
  private readonly maxMessage: number;
  /** Streams opened (tests and status: a reopened quiet stream counts). */
  streams = 0;
  /** Lists made: the first and one per reset. */
  lists = 0;

  constructor(private readonly client: EtcdClient, private readonly prefix: string, private readonly handlers: PrefixWatchHandlers, options: PrefixWatchOptions = {}) {
    this.quietMs = options.quietMs ?? 30_000;
    this.minRetryMs = options.minRetryMs ?? 200;
    this.maxRetryMs = options.maxRetryMs ?? 5_000;
    this.maxMessage = options.maxMessageBytes ?? 16 << 20;
    void this.run();
  }

  /** The last revision the handlers have seen. */
  get seen(): number {
    return this.revision;
  }

  close(): void {
    this.closed = true;
    this.request?.destroy();
    this.wake?.();
  }

  private setLive(live: boolean, error?: Error): void {
    if (live === this.live && live) return;
    this.live = live;
    this.handlers.state?.(live, error);
  }

  private async run(): Promise<void> {
    let backoff = this.minRetryMs;
    /** A stream is to be opened again from the revision seen (not right after a list). */
    let resuming = false;
    while (!this.closed) {
      try {
        if (this.needList) {
          const { kvs, revision } = await this.client.list(this.prefix);
          if (this.closed) return;
          this.lists++;
          this.revision = revision;
          this.needList = false;
          resuming = false;
          this.handlers.reset(kvs, revision);
        } else if (resuming) {
          await this.checkSeenRevision();
        }
        resuming = true;
        const ended = await this.stream();
        if (ended === 'refused') throw new TransportError('the watch stream ended before etcd created the watch');
        backoff = this.minRetryMs;
      } catch (err) {
        if (this.closed) return;
        if (err instanceof Compacted) {
          this.needList = true;
          continue;
        }
        if (err instanceof Canceled) {
          this.needList = true;
          if (/auth|token/i.test(err.message)) this.client.forgetToken();
        }
        this.setLive(false, err as Error);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.maxRetryMs);
      }
    }
  }

  /**
   * Before a stream is opened again: the revision last seen must still be readable. etcd takes a watch
   * from the very revision it compacted to without a word, and a delete at that revision is gone with
   * its tombstone: resumed there, the watch would miss it. Compacted past it: list again. Also the
   * ordinary request that tells a hung member (a quiet stream) from a calm prefix, and moves the client
   * to the next member when this one does not answer.
   */
  private async checkSeenRevision(): Promise<void> {
    try {
      await this.client.range(this.prefix, { countOnly: true, revision: this.revision });
    } catch (err) {
      if (err instanceof EtcdError && err.code === GRPC.OUT_OF_RANGE) throw new Compacted(`revision ${this.revision} compacted`);
      throw err;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  /** One watch stream from revision + 1: resolves when it ends or goes quiet, throws on errors and compaction. */
  private async stream(): Promise<'ended' | 'quiet' | 'refused'> {
    await this.client.ensureToken();
    const { index, token } = this.client.route;
    const body = JSON.stringify({
      create_request: { key: b64(this.prefix), range_end: prefixEnd(this.prefix), start_revision: String(this.revision + 1), progress_notify: true },
    });
    this.streams++;
    this.created = false;
    return new Promise<'ended' | 'quiet' | 'refused'>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error, how: 'ended' | 'quiet' = 'ended'): void => {
        if (settled) return;
        settled = true;
        this.request = null;
        request.destroy();
        if (err) reject(err);
        // Ended before etcd said "created": a proxy or a member that closes at once; retried with a backoff.
        else resolve(how === 'ended' && !this.created ? 'refused' : how);
      };
      const request = this.client.open(index, '/v3/watch', token, (response) => {
        if (response.statusCode !== 200) {
          let text = '';
          response.on('data', (c: Buffer) => { if (text.length < 4096) text += c.toString('utf8'); });
          response.on('end', () => finish(new TransportError(`watch answered HTTP ${response.statusCode}: ${decodeError(text).message}`)));
          return;
        }
        let pending = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          pending += chunk;
          let newline: number;
          while ((newline = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, newline).trim();
            pending = pending.slice(newline + 1);
            if (line === '') continue;
            try {
              this.message(JSON.parse(line));
            } catch (err) {
              finish(err as Error);
              return;
            }
          }
          if (pending.length > this.maxMessage) finish(new TransportError(`watch message over ${this.maxMessage} bytes`));
        });
        response.on('end', () => finish());
        response.on('error', (err) => finish(new TransportError(err.message)));
      }, this.quietMs);
      this.request = request;
      // A quiet stream: reopened from the last revision, no error.
      request.on('timeout', () => finish(undefined, 'quiet'));
      request.on('error', (err) => {
        if (!settled) this.client.failed(index);
        finish(err instanceof TransportError ? err : new TransportError(err.message || ((err as NodeJS.ErrnoException).code ?? 'failed')));
      });
      request.end(body);
    });
  }

  private message(value: unknown): void {
    const m = decodeWatchMessage(value);
    if (m.compactRevision > 0) throw new Compacted(`revision ${this.revision + 1} compacted (now ${m.compactRevision})`);
    if (m.canceled) throw new Canceled(`watch canceled: ${m.cancelReason || 'no reason given'}`);
    if (m.created) {
      this.created = true;
      this.setLive(true);
    }
    if (m.events.length === 0) {
      // A progress notification: nothing changed under the prefix up to its revision.
      if (m.revision > this.revision && !m.created) this.revision = m.revision;
      return;
    }
    // Events arrive in revision order; one message is one or more whole revisions. Any at or below what
    // was seen (a member replaying) were handled already.
    const fresh = m.events.filter((e) => e.kv.modRevision > this.revision);
    if (fresh.length === 0) return;
    const last = fresh[fresh.length - 1]!.kv.modRevision;
    try {
      this.handlers.events(fresh, last);
    } catch (err) {
      // Not past this batch: the stream ends with the error and is reopened to deliver it again.
      throw new TransportError(`a watch handler failed: ${(err as Error).message}`);
    }
    this.revision = Math.max(this.revision, last);
  }
}
