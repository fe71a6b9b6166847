/**
 * etcd v3's JSON gateway (etcd ≥ 3.4 serves it at /v3/ on every client URL): the request and response
 * shapes we use, and their checked decoding. Pure.
 *
 * The gateway is gRPC's protobuf mapped to JSON: bytes (keys, values) are base64; int64 and uint64 are
 * decimal strings (revisions fit a JavaScript number for 285,000 years at 1,000 writes a second, lease
 * IDs do not and stay strings); fields at their zero value are left out, so an absent `succeeded` is
 * false and an event without `type` is a PUT. An error is a non-200 answer with {code, message} (gRPC
 * status code and etcd's text).
 */

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** "0" when not attached to a lease. */
  lease: string;
}

export type CompareTarget = 'CREATE' | 'MOD' | 'VERSION' | 'VALUE' | 'LEASE';
export type CompareResult = 'EQUAL' | 'NOT_EQUAL' | 'GREATER' | 'LESS';

/** One condition of a transaction: e.g. { key, target: 'CREATE', result: 'EQUAL', value: 0 } is "key absent". */
export interface Compare {
  key: string;
  target: CompareTarget;
  result: CompareResult;
  value: number | string;
}

export type Op =
  | { put: { key: string; value: string; lease?: string } }
  | { get: { key: string; prefix?: boolean } }
  | { delete: { key: string; prefix?: boolean } };

export type OpResult =
  | { put: { revision: number } }
  | { get: { kvs: KeyValue[]; count: number } }
  | { delete: { deleted: number } };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  results: OpResult[];
}

export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

/** One message of a watch stream. */
export interface WatchMessage {
  revision: number;
  created: boolean;
  canceled: boolean;
  /** Non-zero: the revision asked for was compacted away; the watch is over and the caller must re-list. */
  compactRevision: number;
  cancelReason: string;
  events: WatchEvent[];
}

export class EtcdProtocolError extends Error {}

export const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

/** The key that ends a prefix range: the prefix with its last byte raised (etcd's clientv3.GetPrefixRangeEnd). */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'utf8');
  // "\0" is etcd's "to the end of the keyspace"; UTF-8 has no 0xff byte, so raising the last never carries.
  if (bytes.length === 0) return b64('\0');
  bytes[bytes.length - 1]!++;
  return bytes.toString('base64');
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new EtcdProtocolError(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function int(value: unknown, what: string): number {
  if (value === undefined) return 0;
  const n = typeof value === 'string' && /^-?\d{1,16}$/.test(value) ? Number(value) : typeof value === 'number' ? value : NaN;
  if (!Number.isSafeInteger(n)) throw new EtcdProtocolError(`${what} ${JSON.stringify(value)} is not an integer`);
  return n;
}

/** A lease ID: int64 as a decimal string, kept as text. */
function id(value: unknown, what: string): string {
  if (value === undefined) return '0';
  const text = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
  if (typeof text !== 'string' || !/^-?\d{1,20}$/.test(text)) throw new EtcdProtocolError(`${what} ${JSON.stringify(value)} is not an ID`);
  return text;
}

function bytes(value: unknown, what: string): string {
  if (value === undefined) return '';
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new EtcdProtocolError(`${what} is not base64`);
  return Buffer.from(value, 'base64').toString('utf8');
}

function list(value: unknown, what: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new EtcdProtocolError(`${what} is not a list`);
  return value;
}

export function decodeKeyValue(value: unknown): KeyValue {
  const kv = object(value, 'kv');
  return {
    key: bytes(kv.key, 'kv.key'), value: bytes(kv.value, 'kv.value'),
    createRevision: int(kv.create_revision, 'create_revision'), modRevision: int(kv.mod_revision, 'mod_revision'),
    version: int(kv.version, 'version'), lease: id(kv.lease, 'kv.lease'),
  };
}

/** The revision of a response's header: the store's revision when it was served. */
export function headerRevision(response: Record<string, unknown>): number {
  return int(object(response.header ?? {}, 'header').revision, 'header.revision');
}

export function decodeRange(value: unknown): { kvs: KeyValue[]; more: boolean; count: number; revision: number } {
  const r = object(value, 'range response');
  return { kvs: list(r.kvs, 'kvs').map(decodeKeyValue), more: r.more === true, count: int(r.count, 'count'), revision: headerRevision(r) };
}

export function encodeCompare(c: Compare): Record<string, unknown> {
  const field = { CREATE: 'create_revision', MOD: 'mod_revision', VERSION: 'version', VALUE: 'value', LEASE: 'lease' }[c.target];
  const value = c.target === 'VALUE' ? b64(String(c.value)) : String(c.value);
  return { key: b64(c.key), target: c.target, result: c.result, [field]: value };
}

export function encodeOp(op: Op): Record<string, unknown> {
  if ('put' in op) {
    return { request_put: { key: b64(op.put.key), value: b64(op.put.value), ...(op.put.lease ? { lease: op.put.lease } : {}) } };
  }
  const { key, prefix } = 'get' in op ? op.get : op.delete;
  const range = { key: b64(key), ...(prefix ? { range_end: prefixEnd(key) } : {}) };
  return 'get' in op ? { request_range: range } : { request_delete_range: range };
}

export function decodeTxn(value: unknown): TxnResult {
  const r = object(value, 'txn response');
  const results = list(r.responses, 'responses').map((item): OpResult => {
    const one = object(item, 'txn response item');
    if (one.response_put !== undefined) return { put: { revision: headerRevision(object(one.response_put, 'response_put')) } };
    if (one.response_range !== undefined) {
      const range = decodeRange(one.response_range);
      return { get: { kvs: range.kvs, count: range.count } };
    }
    if (one.response_delete_range !== undefined) {
      return { delete: { deleted: int(object(one.response_delete_range, 'response_delete_range').deleted, 'deleted') } };
    }
    throw new EtcdProtocolError(`txn response item has none of response_put, response_range, response_delete_range`);
  });
  return { succeeded: r.succeeded === true, revision: headerRevision(r), results };
}

/** One line of the watch stream: {"result": {...}} or {"error": {...}}. */
export function decodeWatchMessage(value: unknown): WatchMessage {
  const outer = object(value, 'watch message');
  if (outer.error !== undefined) {
    const e = object(outer.error, 'watch error');
    throw new EtcdProtocolError(`watch stream error: ${typeof e.message === 'string' ? e.message : JSON.stringify(e)}`);
  }
  const r = object(outer.result, 'watch result');
  return {
    revision: headerRevision(r),
    created: r.created === true,
    canceled: r.canceled === true,
    compactRevision: int(r.compact_revision, 'compact_revision'),
    cancelReason: typeof r.cancel_reason === 'string' ? r.cancel_reason : '',
    events: list(r.events, 'events').map((item) => {
      const e = object(item, 'event');
      if (e.type !== undefined && e.type !== 'PUT' && e.type !== 'DELETE') throw new EtcdProtocolError(`event type ${JSON.stringify(e.type)}`);
      return { type: e.type === 'DELETE' ? 'delete' as const : 'put' as const, kv: decodeKeyValue(e.kv) };
    }),
  };
}

/** What a non-200 answer says: gRPC status code (0 when absent) and etcd's message. */
export function decodeError(body: string): { code: number; message: string } {
  try {
    const e = object(JSON.parse(body), 'error');
    const message = typeof e.message === 'string' ? e.message : typeof e.error === 'string' ? e.error : body.slice(0, 200);
    return { code: typeof e.code === 'number' ? e.code : 0, message };
  } catch {
    return { code: 0, message: body.slice(0, 200) };
  }
}
