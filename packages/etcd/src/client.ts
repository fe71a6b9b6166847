import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import {
  b64, decodeError, decodeRange, decodeTxn, encodeCompare, encodeOp, headerRevision, prefixEnd, EtcdProtocolError,
  type Compare, type KeyValue, type Op, type TxnResult,
} from './wire';

export interface EtcdTls {
  /** PEM: the CA that signed the members' certificates; absent: the system's. */
  ca?: string | Buffer;
  /** PEM: a client certificate and key, for members started with --client-cert-auth. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface EtcdOptions {
  /** Client URLs of the members, http:// or https://. Requests go to one and move on when it fails. */
  endpoints: string[];
  tls?: EtcdTls;
  /** etcd's own users (`etcdctl user add`): a token is fetched, and fetched again when it expires. */
  auth?: { user: string; password: string };
  /** One request to one member; past it, the next member is tried. */
  timeoutMs?: number;
  /** A larger answer is refused: a member (or anything posing as one) cannot make us hold more. */
  maxResponseBytes?: number;
}

/**
 * A write sent to a follower just as the leader died waits, unanswered, until etcd gives up on it (5 s
 * and more); by 3 s a new leader is elected (1-2 s election timeout), so the next member answers. A
 * device waits 10 s for its WELCOME, so one member lost never costs a join.
 */
const DEFAULT_TIMEOUT_MS = 3_000;
/** The largest answer we ask for is a page of PAGE keys, well under a MiB with our small values. */
const DEFAULT_MAX_RESPONSE = 8 << 20;
/** A prefix listed in pages stops here: far beyond any network (65,533 devices), short of exhausting memory. */
const MAX_LISTED = 1_000_000;
/** Keys per page when listing a prefix: a page stays a few hundred KiB. */
const PAGE = 2_000;

/** gRPC status codes etcd answers with (google.golang.org/grpc/codes). */
export const GRPC = { NOT_FOUND: 5, FAILED_PRECONDITION: 9, OUT_OF_RANGE: 11, UNAVAILABLE: 14, UNAUTHENTICATED: 16, INVALID_ARGUMENT: 3 } as const;

/** etcd answered, and said no. `code` is the gRPC status code. */
export class EtcdError extends Error {
  constructor(message: string, readonly code: number, readonly endpoint: string) {
    super(message);
  }
}

/** No member answered; `causes` says why for each one tried. */
export class EtcdUnavailableError extends Error {
  constructor(readonly causes: string[]) {
    super(`etcd unavailable: ${causes.join('; ')}`);
  }
}

/** A member we could not get an answer from: worth trying the next one. */
class TransportError extends Error {}

function retriable(err: unknown): boolean {
  if (err instanceof TransportError) return true;
  // No leader, or a member that is stopping or cut off: another member may do.
  return err instanceof EtcdError && err.code === GRPC.UNAVAILABLE;
}

/**
 * A small etcd v3 client over the JSON gateway (wire.ts): KV reads and writes, transactions, leases,
 * status, and watches (watch.ts). Requests go to the current member; a member that does not answer (or
 * answers "unavailable") makes the client move to the next for this and later requests.
 *
 * A write whose answer was lost may have been applied; the next member then sees it done. Every write
 * the relay makes is either idempotent or a transaction whose failure branch reads what is there, so
 * the caller can tell "someone else's" from "mine, applied before".
 */
export class EtcdClient {
  private readonly endpoints: URL[];
  private current = 0;
  private token: string | null = null;
  private readonly agents: Array<HttpAgent | HttpsAgent>;
  private readonly timeoutMs: number;
  private readonly maxResponse: number;
  private closed = false;

  constructor(private readonly options: EtcdOptions) {
    if (options.endpoints.length === 0) throw new Error('etcd: no endpoints');
    this.endpoints = options.endpoints.map((e) => {
      let url: URL;
      try {
        url = new URL(e);
      } catch {
        throw new Error(`etcd endpoint ${JSON.stringify(e)} is not a URL like http://10.1.0.5:2379`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`etcd endpoint ${e}: only http:// and https:// are spoken`);
      return url;
    });
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxResponse = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
    this.agents = this.endpoints.map((url) => url.protocol === 'https:'
      ? new HttpsAgent({ keepAlive: true, maxSockets: 8, ...options.tls })
      : new HttpAgent({ keepAlive: true, maxSockets: 8 }));
  }

  /** The member requests go to now. */
  get endpoint(): string {
    return this.endpoints[this.current]!.origin;
  }

  close(): void {
    this.closed = true;
    for (const agent of this.agents) agent.destroy();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    return (await this.range(key)).kvs[0];
  }

  async range(key: string, options: { prefix?: boolean; limit?: number; revision?: number; keysOnly?: boolean; countOnly?: boolean } = {}): Promise<ReturnType<typeof decodeRange>> {
    return decodeRange(await this.call('/v3/kv/range', {
      key: b64(key),
      ...(options.prefix ? { range_end: prefixEnd(key) } : {}),
      ...(options.limit ? { limit: String(options.limit) } : {}),
      ...(options.revision ? { revision: String(options.revision) } : {}),
      ...(options.keysOnly ? { keys_only: true } : {}),
      ...(options.countOnly ? { count_only: true } : {}),
    }));
  }

  /**
   * Every key under `prefix` as of one revision, read in pages (so no answer grows with the fleet).
   * Throws EtcdError OUT_OF_RANGE if that revision is compacted while paging; the caller lists again.
   */
  async list(prefix: string, pageSize = PAGE): Promise<{ kvs: KeyValue[]; revision: number }> {
    const end = prefixEnd(prefix);
    const kvs: KeyValue[] = [];
    let from = b64(prefix);
    let revision = 0;
    for (;;) {
      const page = decodeRange(await this.call('/v3/kv/range', {
        key: from, range_end: end, limit: String(pageSize), ...(revision ? { revision: String(revision) } : {}),
      }));
      if (revision === 0) revision = page.revision;
      kvs.push(...page.kvs);
      if (!page.more || page.kvs.length === 0) return { kvs, revision };
      if (kvs.length > MAX_LISTED) throw new EtcdProtocolError(`${prefix} lists more than ${MAX_LISTED} keys`);
      // The next page starts just after the last key: the key with a zero byte appended. It must move on.
      const next = Buffer.concat([Buffer.from(page.kvs[page.kvs.length - 1]!.key, 'utf8'), Buffer.from([0])]);
      if (Buffer.compare(next, Buffer.from(from, 'base64')) <= 0) throw new EtcdProtocolError(`listing ${prefix} does not move on past ${JSON.stringify(page.kvs[page.kvs.length - 1]!.key)}`);
      from = next.toString('base64');
    }
  }

  async put(key: string, value: string, options: { lease?: string } = {}): Promise<number> {
    return headerRevision(await this.call('/v3/kv/put', { key: b64(key), value: b64(value), ...(options.lease ? { lease: options.lease } : {}) }));
  }

  async delete(key: string, options: { prefix?: boolean } = {}): Promise<number> {
    const r = await this.call('/v3/kv/deleterange', { key: b64(key), ...(options.prefix ? { range_end: prefixEnd(key) } : {}) });
    return Number(r.deleted ?? 0);
  }

  /** If every compare holds, the success ops, else the failure ops: atomically. */
  async txn(compare: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    return decodeTxn(await this.call('/v3/kv/txn', { compare: compare.map(encodeCompare), success: success.map(encodeOp), failure: failure.map(encodeOp) }));
  }

  /** A lease of `ttlSeconds`; keys put with it go when it is revoked or not kept alive. */
  async grantLease(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const r = await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (typeof r.error === 'string' && r.error) throw new EtcdError(`lease grant: ${r.error}`, 0, this.endpoint);
    const id = typeof r.ID === 'string' ? r.ID : '';
    if (!/^\d{1,20}$/.test(id) || id === '0') throw new EtcdProtocolError(`lease grant answered ID ${JSON.stringify(r.ID)}`);
    return { id, ttl: Number(r.TTL ?? 0) };
  }

  /** Renews the lease; the TTL it now has, 0 when it is gone (expired or revoked: its keys are deleted). */
  async keepAlive(id: string): Promise<number> {
    const r = await this.call('/v3/lease/keepalive', { ID: id });
    const result = (typeof r.result === 'object' && r.result !== null ? r.result : r) as Record<string, unknown>;
    const ttl = Number(result.TTL ?? 0);
    if (!Number.isFinite(ttl)) throw new EtcdProtocolError(`lease keepalive answered TTL ${JSON.stringify(result.TTL)}`);
    return ttl;
  }

  async revokeLease(id: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id });
    } catch (err) {
      if (!(err instanceof EtcdError && err.code === GRPC.NOT_FOUND)) throw err;
    }
  }

  /** Drops history before `revision` (what the members' auto-compaction does on its own). */
  async compact(revision: number): Promise<void> {
    await this.call('/v3/kv/compaction', { revision: String(revision), physical: true });
  }

  /** The member's view: its version, the leader's member ID (0: none), and the store revision. */
  async status(): Promise<{ endpoint: string; version: string; leader: string; revision: number; dbSize: number }> {
    const r = await this.call('/v3/maintenance/status', {});
    return {
      endpoint: this.endpoint, version: String(r.version ?? ''), leader: String(r.leader ?? '0'),
      revision: headerRevision(r), dbSize: Number(r.dbSize ?? 0),
    };
  }

  /** A POST to the current member, moving on to the next as long as members fail to answer. */
  async call(path: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const causes: string[] = [];
    for (let tried = 0; tried < this.endpoints.length; tried++) {
      const index = this.current;
      try {
        return await this.callOne(index, path, body);
      } catch (err) {
        if (!retriable(err)) throw err;
        causes.push(`${this.endpoints[index]!.origin}: ${(err as Error).message}`);
        if (this.current === index) this.current = (index + 1) % this.endpoints.length;
      }
    }
    throw new EtcdUnavailableError(causes);
  }

  private async callOne(index: number, path: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.options.auth && this.token === null) await this.authenticate(index);
    try {
      return await this.post(index, path, body, this.token);
    } catch (err) {
      // Tokens expire (etcd's simple tokens after 5 minutes unused) and do not survive a member restart.
      if (!(this.options.auth && err instanceof EtcdError && /invalid auth token|token/i.test(err.message) && err.code !== GRPC.UNAVAILABLE)) throw err;
      await this.authenticate(index);
      return this.post(index, path, body, this.token);
    }
  }

  private async authenticate(index: number): Promise<void> {
    const { user, password } = this.options.auth!;
    const r = await this.post(index, '/v3/auth/authenticate', { name: user, password }, null);
    if (typeof r.token !== 'string' || r.token === '') throw new EtcdProtocolError('authenticate answered no token');
    this.token = r.token;
  }

  /** One request to one member: the decoded JSON of a 200, EtcdError for an answer of etcd's, TransportError otherwise. */
  post(index: number, path: string, body: Record<string, unknown>, token: string | null): Promise<Record<string, unknown>> {
    let deadline: NodeJS.Timeout | undefined;
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const request = this.open(index, path, token, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxResponse) {
            request.destroy(new TransportError(`answer larger than ${this.maxResponse} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const origin = this.endpoints[index]!.origin;
          if (response.statusCode !== 200) {
            const { code, message } = decodeError(text);
            // A proxy's or a stopping member's page, not etcd's answer.
            if (code === 0 && (response.statusCode ?? 0) >= 500) reject(new TransportError(`HTTP ${response.statusCode}: ${message}`));
            else reject(new EtcdError(message, code, origin));
            return;
          }
          try {
            const parsed: unknown = JSON.parse(text);
            if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
            resolve(parsed as Record<string, unknown>);
          } catch (err) {
            reject(new EtcdProtocolError(`${origin}${path} answered unreadable JSON (${(err as Error).message})`));
          }
        });
        response.on('error', (err) => reject(new TransportError(err.message)));
      });
      request.on('error', (err) => reject(err instanceof TransportError ? err : new TransportError(err.message || ((err as NodeJS.ErrnoException).code ?? 'failed'))));
      // A deadline for the whole answer: the idle timeout alone lets a member that trickles a byte a second hold it for ever.
      deadline = setTimeout(() => request.destroy(new TransportError(`no whole answer in ${this.timeoutMs} ms`)), this.timeoutMs);
      request.end(JSON.stringify(body));
    }).finally(() => clearTimeout(deadline));
  }

  /** A request to member `index` (the watch keeps its response open); times out after timeoutMs without an answer. */
  open(index: number, path: string, token: string | null, onResponse: (response: IncomingMessage) => void, timeoutMs = this.timeoutMs): ClientRequest {
    if (this.closed) throw new TransportError('client closed');
    const url = this.endpoints[index]!;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send({
      protocol: url.protocol, hostname: url.hostname, port: url.port, path, method: 'POST', agent: this.agents[index],
      headers: { 'content-type': 'application/json', ...(token ? { authorization: token } : {}) },
      ...(url.protocol === 'https:' ? this.options.tls : {}),
    }, onResponse);
    request.setTimeout(timeoutMs, () => request.destroy(new TransportError(`no answer in ${timeoutMs} ms`)));
    return request;
  }

  /** The index requests go to now, and the token, for a watch that opens its own long request. */
  get route(): { index: number; token: string | null } {
    return { index: this.current, token: this.token };
  }

  /** A watch found member `index` unreachable: later requests start with the next one. */
  failed(index: number): void {
    if (this.current === index) this.current = (index + 1) % this.endpoints.length;
  }

  /** The token was refused where no retry could tell us (a watch): the next request fetches another. */
  forgetToken(): void {
    this.token = null;
  }

  /** Fetches a token if auth is configured and none is held (a watch's first request). */
  async ensureToken(): Promise<void> {
    if (this.options.auth && this.token === null) await this.authenticate(this.current);
  }
}

export { TransportError };
