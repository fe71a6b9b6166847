import { ControlClient, ControlConnectionClosed, escapeControl, escapeJsonText, NoDaemonError, RpcError, selectRows } from '@mnedc/common';
import type { DaemonKind, Status } from './api';
import {
  type CommandName, type Invocation, isServerOnly, parseCommandLine, PROGRAM, rpcMethod, shortUsage, takesListQuery, UsageError,
} from './args';
import { page, pagerCommand } from './pager';
import { renderNotification, renderResult } from './render';
import { isSystemCommand, runSystemCommand } from './system-commands';

export const EXIT = { ok: 0, daemonError: 1, usage: 2, noDaemon: 3, interrupted: 130 } as const;

export interface Output {
  write(text: string): unknown;
  /** A terminal: table output then goes through the pager. */
  isTTY?: boolean;
}

export interface RunIo {
  stdout: Output;
  stderr: Output;
  /** Default process.env; MNEDC_SOCKET and PAGER are read. */
  env?: Record<string, string | undefined>;
  /** Aborting ends the command: `watch` then exits 0, anything else 130. The CLI wires SIGINT/SIGTERM here. */
  signal?: AbortSignal;
  /** The clock relative times are computed against (tests fix it). */
  now?: () => number;
  /** Replaces DEFAULT_SERVER_SOCKET and DEFAULT_CLIENT_SOCKET (tests cannot use /run). */
  defaultSockets?: string[];
  /** Limit for connecting and for each answer; default 10 s. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** The daemon answered with a JSON-RPC error: exit 1. */
class DaemonError extends Error {
  constructor(readonly method: string, readonly error: RpcError) {
    super(`${method}: ${error.message}`);
  }
}

/** Nothing usable to talk to (gone, refused, silent): exit 3. */
class Unreachable extends Error {}

/** A connected daemon and what its status says it is. */
class Daemon {
  private constructor(readonly path: string, readonly client: ControlClient, readonly status: Status,
    private readonly timeoutMs: number) {}

  static async open(path: string, timeoutMs: number): Promise<Daemon> {
    const client = await ControlClient.connect(path, timeoutMs);
    try {
      const status = await callWithin<Status>(client, 'status', undefined, timeoutMs);
      const kind: unknown = (status as Partial<Status> | null)?.daemon;
      if (kind !== 'server' && kind !== 'client') {
        throw new Error(`${path}: the status reply names no known daemon (daemon: ${JSON.stringify(kind ?? null)})`);
      }
      return new Daemon(path, client, status, timeoutMs);
    } catch (err) {
      client.close();
      throw err;
    }
  }

  get kind(): DaemonKind {
    return this.status.daemon;
  }

  call<T>(method: string, params?: unknown): Promise<T> {
    return callWithin<T>(this.client, method, params, this.timeoutMs);
  }
}

/** A daemon that accepts but never answers must not hang a script calling mnedcctl. */
async function callWithin<T>(client: ControlClient, method: string, params: unknown, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Unreachable(`no answer to ${method} from the daemon on ${client.path} within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([client.call<T>(method, params), timeout]);
  } catch (err) {
    throw err instanceof RpcError ? new DaemonError(method, err) : err;
  } finally {
    clearTimeout(timer);
  }
}

/** The connections one run opens; any that finish connecting after the run ended are closed at once. */
class Connections {
  readonly daemons: Daemon[] = [];
  private ended = false;

  /**
   * With one path, that daemon or an error. With several (the defaults), every one that answers; those
   * with nothing listening are skipped unless none answers.
   */
  async open(paths: string[], timeoutMs: number, stderr: Output): Promise<Daemon[]> {
    const settled = await Promise.allSettled(paths.map((path) => Daemon.open(path, timeoutMs).then((d) => this.adopt(d))));
    const absent: NoDaemonError[] = [];
    for (const result of settled) {
      if (result.status === 'fulfilled') continue;
      if (!(result.reason instanceof NoDaemonError) || paths.length === 1) throw result.reason;
      absent.push(result.reason);
    }
    if (this.daemons.length === 0) throw new Unreachable(describeAbsent(absent));
    for (const err of absent) {
      // Probably a daemon the user may not talk to: say so rather than silently show only the other one.
      if (err.reason === 'permission denied') stderr.write(`${PROGRAM}: ${escapeControl(err.message)}\n`);
    }
    // Keep the order of `paths` (server before client), not the order they happened to answer in.
    this.daemons.sort((a, b) => paths.indexOf(a.path) - paths.indexOf(b.path));
    return this.daemons;
  }

  close(): void {
    this.ended = true;
    for (const daemon of this.daemons) daemon.client.close();
  }

  private adopt(daemon: Daemon): Daemon {
    if (this.ended) daemon.client.close();
    else this.daemons.push(daemon);
    return daemon;
  }
}

function describeAbsent(errors: NoDaemonError[]): string {
  if (errors.some((e) => e.reason === 'permission denied')) return errors.map((e) => e.message).join('; ');
  return `no daemon listening on ${errors.map((e) => `${e.path} (${e.reason})`).join(' or ')}`;
}

/** JSON for several daemons: keyed by what each is, or by path should two claim the same. */
function byDaemon(daemons: Daemon[], results: unknown[]): Record<string, unknown> {
  const kinds = new Set(daemons.map((d) => d.kind));
  const unique = kinds.size === daemons.length;
  return Object.fromEntries(daemons.map((d, i) => [unique ? d.kind : d.path, results[i]]));
}

/** Commands whose tables grow with the fleet. */
const PAGED = new Set<CommandName>(['peers', 'leases', 'stats']);

interface ListRow {
  deviceId: string;
  hostname: string;
  ip: string;
}

type QueryInvocation = Extract<Invocation, { kind: 'command' }> & { command: Exclude<CommandName, 'watch' | 'wait-online' | 'sync-hosts'> };

async function query(invocation: QueryInvocation, daemons: Daemon[], io: RunIo, now: () => number): Promise<number> {
  const { command } = invocation;
  let targets = daemons;
  if (isServerOnly(command)) {
    const server = daemons.find((d) => d.kind === 'server');
    if (!server) throw new UsageError(`${command} is a server command; ${daemons[0].path} is a client daemon`, command, false);
    targets = [server];
  }
  const { filter, limit } = invocation;
  const listQuery = takesListQuery(command) && (filter !== undefined || limit !== undefined)
    ? { ...(filter !== undefined ? { filter } : {}), ...(limit !== undefined ? { limit } : {}) } : undefined;
  const params = invocation.id !== undefined ? { deviceId: invocation.id } : listQuery;
  // status was already asked to learn which daemon answers; asking again could only disagree.
  let results = command === 'status'
    ? targets.map((d) => d.status)
    : await Promise.all(targets.map((d) => d.call(rpcMethod(command), params)));
  // A daemon from before --filter ignores it and answers everything: the same selection here.
  if (listQuery) results = results.map((rows) => selectRows(rows as ListRow[], (r) => [r.deviceId, r.hostname, r.ip], listQuery));

  if (invocation.json) {
    const value = results.length === 1 ? results[0] : byDaemon(targets, results);
    io.stdout.write(`${escapeJsonText(JSON.stringify(value, null, 2))}\n`);
    return EXIT.ok;
  }
  const text = results.length === 1
    ? renderResult(command, targets[0].kind, results[0], now(), targets[0].status)
    : targets.map((d, i) => `${d.kind} daemon (${d.path}):\n${renderResult(command, d.kind, results[i], now(), d.status)}`).join('\n');
  const env = io.env ?? process.env;
  const pager = PAGED.has(command) ? pagerCommand(env, io.stdout.isTTY === true, false) : undefined;
  if (!pager || !(await page(pager, text, env))) io.stdout.write(text);
  return EXIT.ok;
}

/** Runs until the caller aborts (handled by run) or a daemon closes the connection (exit 3). */
async function watch(json: boolean, daemons: Daemon[], io: RunIo, now: () => number): Promise<never> {
  const labelled = daemons.length > 1;
  for (const daemon of daemons) {
    daemon.client.onNotification((method, params) => {
      if (json) {
        const line = labelled ? { daemon: daemon.kind, method, params } : { method, params };
        io.stdout.write(`${escapeJsonText(JSON.stringify(line))}\n`);
      } else {
        io.stdout.write(renderNotification(method, params, now(), labelled ? daemon.kind : undefined));
      }
    });
  }
  await Promise.all(daemons.map((d) => d.call('watch')));
  // On stderr so that stdout stays pure events; scripts and tests wait for it to know no event is missed.
  io.stderr.write(`${PROGRAM}: watching ${daemons.map((d) => `the ${d.kind} daemon on ${d.path}`).join(' and ')}\n`);
  const gone = await Promise.race(daemons.map((d) => d.client.closed.then(() => d)));
  // The same error as a close during the `watch` call itself: which of the two happens is a race.
  throw new ControlConnectionClosed(gone.path);
}

/** Error messages carry a daemon's words (and echo arguments): escaped like everything else shown. */
function report(err: unknown, io: RunIo): number {
  if (err instanceof UsageError) {
    io.stderr.write(`${PROGRAM}: ${escapeControl(err.message)}\n${err.showUsage ? shortUsage(err.command) : ''}`);
    return EXIT.usage;
  }
  if (err instanceof DaemonError) {
    io.stderr.write(`${PROGRAM}: ${err.method}: ${escapeControl(String(err.error.message))}\n`);
    return EXIT.daemonError;
  }
  if (err instanceof NoDaemonError || err instanceof ControlConnectionClosed || err instanceof Unreachable) {
    io.stderr.write(`${PROGRAM}: ${escapeControl(err.message)}\n`);
    return EXIT.noDaemon;
  }
  io.stderr.write(`${PROGRAM}: ${escapeControl(err instanceof Error ? err.message : String(err))}\n`);
  return EXIT.daemonError;
}

function aborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!signal) return;
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/** mnedcctl itself, minus the process: returns the exit status. */
export async function run(argv: string[], io: RunIo): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(argv, io.env ?? process.env, io.defaultSockets);
  } catch (err) {
    return report(err, io);
  }
  if (invocation.kind === 'help') {
    io.stdout.write(invocation.text);
    return EXIT.ok;
  }

  if (isSystemCommand(invocation.command)) return runSystemCommand(invocation, io);
  const { command, json, sockets } = invocation;
  const now = io.now ?? Date.now;
  const timeoutMs = io.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const connections = new Connections();
  const work = (async () => {
    const daemons = await connections.open(sockets, timeoutMs, io.stderr);
    return command === 'watch'
      ? watch(json, daemons, io, now)
      : query({ ...invocation, command: command as QueryInvocation['command'] }, daemons, io, now);
  })();
  // Whatever `work` does after an interruption (typically failing because its connections were closed)
  // no longer matters, and must not surface as an unhandled rejection.
  work.catch(() => undefined);
  try {
    const outcome = await Promise.race([work, aborted(io.signal).then(() => 'interrupted' as const)]);
    if (outcome !== 'interrupted') return outcome;
    return command === 'watch' ? EXIT.ok : EXIT.interrupted;
  } catch (err) {
    return report(err, io);
  } finally {
    connections.close();
  }
}
