import { checkKind, kind } from './rpc-schema';

/**
 * `peers` and `leases` at 10,000 devices: the daemon selects rows before answering, so a filtered or
 * limited answer is not shipped whole to be cut. Pure; the daemons and mnedcctl share it (mnedcctl runs
 * the same selection on the answer, which is a no-op against a daemon that already did it and keeps
 * --filter meaningful against an older daemon that ignores the parameters).
 *
 * FILTER: with `*` or `?` in it, a glob that must match a whole field (`edge-1*`, `10.0.3.*`); otherwise
 * a substring. Either way case-insensitive, tried on the device ID, hostname and IP address.
 */
export const listParams = kind.object({ filter: kind.optional('string'), limit: kind.optional('number') });

export interface ListQuery {
  filter?: string;
  limit?: number;
}

export const MAX_FILTER_CHARS = 256;
export const MAX_LIMIT = 1_000_000;

export class ListQueryError extends Error {}

/** The parameters of a list call (absent: everything); throws ListQueryError saying what is wrong. */
export function parseListQuery(params: unknown): ListQuery {
  if (params === undefined || params === null) return {};
  const problems = checkKind(params, listParams, 'params');
  if (problems.length > 0) throw new ListQueryError(problems.join('; '));
  const { filter, limit } = params as ListQuery;
  if (filter !== undefined && (filter.length === 0 || filter.length > MAX_FILTER_CHARS)) {
    throw new ListQueryError(`filter: ${filter.length} characters; give 1 to ${MAX_FILTER_CHARS}`);
  }
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= MAX_LIMIT)) {
    throw new ListQueryError(`limit: ${limit} is not a whole number from 1 to ${MAX_LIMIT}`);
  }
  return { ...(filter !== undefined ? { filter } : {}), ...(limit !== undefined ? { limit } : {}) };
}

/** Whether a row with these fields matches FILTER (see above). */
export function fieldMatcher(filter: string): (fields: readonly string[]) => boolean {
  const wanted = filter.toLowerCase();
  if (!/[*?]/.test(filter)) return (fields) => fields.some((f) => f.toLowerCase().includes(wanted));
  const source = [...wanted].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.|+()[\]{}]/g, '\\$&'))).join('');
  const glob = new RegExp(`^${source}$`, 's');
  return (fields) => fields.some((f) => glob.test(f.toLowerCase()));
}

/**
 * The rows a query selects, in their order, stopping at the limit: a caller that builds each answer row
 * from the selected ones only (map after select) does no work for the rest.
 */
export function selectRows<T>(rows: Iterable<T>, fields: (row: T) => readonly string[], query: ListQuery): T[] {
  const matches = query.filter === undefined ? undefined : fieldMatcher(query.filter);
  const limit = query.limit ?? Infinity;
  const out: T[] = [];
  if (limit <= 0) return out;
  for (const row of rows) {
    if (matches && !matches(fields(row))) continue;
    out.push(row);
    if (out.length >= limit) break;
  }
  return out;
}
