import { promises as fs } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import {
  JSONRPCErrorCode, JSONRPCErrorException, JSONRPCServer,
  createJSONRPCErrorResponse, createJSONRPCNotification,
  type JSONRPCErrorResponse, type JSONRPCID, type JSONRPCRequest,
} from 'json-rpc-2.0';
import { ListQueryError, parseListQuery, type ListQuery } from './list-query';

/*
 * The daemons' control channel: JSON-RPC 2.0 over a Unix stream socket, one JSON message per line in
 * each direction. Batch requests are answered with -32600: mnedcctl never sends them, and json-rpc-2.0
 * answers a one-element batch with a bare object, which would break a client that relies on batches.
 */

export const DEFAULT_SERVER_SOCKET = '/run/mnedc/server.sock';
export const DEFAULT_CLIENT_SOCKET = '/run/mnedc/client.sock';

/** A request line may not exceed this many bytes (without its newline). */
export const MAX_REQUEST_LINE = 1024 * 1024;
/** Replies can be big (leases of a /16), but a runaway daemon must not exhaust mnedcctl's memory. */
export const MAX_REPLY_LINE = 64 * 1024 * 1024;
/** A watcher that stops reading is dropped rather than letting its notifications pile up in the daemon. */
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;
const PROBE_TIMEOUT_MS = 1000;

export interface CallContext {
  /** Sends a JSON-RPC notification to the caller's connection (for subscriptions); no-op once closed. */
  notify(method: string, params: unknown): void;
  /** Registers a callback for when this connection closes (to drop subscriptions). */
  onClose(callback: () => void): void;
  /**
   * Peer credentials where available. SO_PEERCRED is not reachable from Node without native code, so
   * everything is undefined for now; the field exists so that an access check can be added later.
   */
  peer: { uid?: number; gid?: number; pid?: number };
}

export type RpcMethod = (params: unknown, context: CallContext) => unknown | Promise<unknown>;
export type RpcMethods = Record<string, RpcMethod>;

/** Thrown by methods for application errors; becomes a JSON-RPC error with this code. */
export class RpcError extends Error {
  // Deliberately not a subclass of JSONRPCErrorException: its constructor resets the prototype, so
  // instances of a subclass would fail `instanceof RpcError`.
  constructor(readonly code: number, message: string, readonly data?: unknown) {
    super(message);
    this.name = 'RpcError';
  }
}

export const RPC_ERRORS = { notFound: -32001, forbidden: -32002, invalidParams: -32602 } as const;

/** Another live daemon answers on the socket path. */
export class ControlSocketInUse extends Error {
  constructor(readonly path: string) {
    super(`another daemon is already serving ${path}; stop it first`);
    this.name = 'ControlSocketInUse';
  }
}

/** Nothing to talk to at the path; `reason` says why in a few words ("connection refused", …). */
export class NoDaemonError extends Error {
  constructor(readonly path: string, readonly reason: string) {
    // Permission denied usually means a daemon is there but the caller is not in its group.
    super(reason === 'permission denied' ? `cannot connect to ${path} (permission denied)` : `no daemon listening on ${path} (${reason})`);
    this.name = 'NoDaemonError';
  }
}

/** The daemon closed the connection before answering (it stopped or restarted). */
export class ControlConnectionClosed extends Error {
  constructor(readonly path: string) {
    super(`the daemon on ${path} closed the connection`);
    this.name = 'ControlConnectionClosed';
  }
}

/**
 * Reads a string parameter given by name (`{deviceId: "x"}`) or by position (`["x"]`), so that both
 * styles JSON-RPC allows work from scripts.
 */
export function stringParam(params: unknown, name: string, position = 0): string {
  let value: unknown;
  if (Array.isArray(params)) value = params[position];
  else if (params !== null && typeof params === 'object' && Object.prototype.hasOwnProperty.call(params, name)) {
    value = (params as Record<string, unknown>)[name];
  }
  if (typeof value !== 'string') throw new RpcError(RPC_ERRORS.invalidParams, `missing string parameter "${name}"`);
  return value;
}

/** The optional filter and limit of a list method (list-query.ts); bad ones are invalid params. */
export function listQueryParam(params: unknown): ListQuery {
  try {
    return parseListQuery(params);
  } catch (err) {
    if (err instanceof ListQueryError) throw new RpcError(RPC_ERRORS.invalidParams, err.message);
    throw err;
  }
}

/**
 * Splits a byte stream at newlines. Splitting bytes rather than decoded text is safe because no UTF-8
 * multi-byte sequence contains 0x0a, and it lets the length limit count bytes.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private stopped = false;

  constructor(private readonly maxLine: number, private readonly onLine: (line: string) => void,
    private readonly onOversize: () => void) {}

  push(chunk: Buffer): void {
    let start = 0;
    while (!this.stopped) {
      const end = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, end < 0 ? chunk.length : end);
      if (this.pendingBytes + piece.length > this.maxLine) {
        this.stop();
        this.onOversize();
        return;
      }
      if (end < 0) {
        if (piece.length > 0) {
          this.pending.push(piece);
          this.pendingBytes += piece.length;
        }
        return;
      }
      const line = this.pendingBytes > 0 ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      this.pendingBytes = 0;
      start = end + 1;
      const text = line.toString('utf8').replace(/\r$/, '');
      if (text.trim() !== '') this.onLine(text);
    }
  }

  stop(): void {
    this.stopped = true;
    this.pending = [];
  }
}

function errorResponse(id: JSONRPCID, error: unknown): JSONRPCErrorResponse {
  if (error instanceof RpcError || error instanceof JSONRPCErrorException) {
    return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
  }
  const message = error instanceof Error ? error.message : String(error);
  return createJSONRPCErrorResponse(id, JSONRPCErrorCode.InternalError, message || 'internal error');
}

export function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** /etc/group only: Node has no getgrnam(), and the daemons' group is a local system group anyway. */
async function groupId(name: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.readFile('/etc/group', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields.length >= 3 && /^\d+$/.test(fields[2])) return Number(fields[2]);
  }
  return undefined;
}

/** Whether a daemon answers on the path: 'live', 'stale' (a socket file nobody listens on) or 'gone'. */
function probe(path: string): Promise<'live' | 'stale' | 'gone'> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    // A daemon too busy to accept within the timeout is still alive: its socket must not be taken over.
    const timer = setTimeout(() => finish('live'), PROBE_TIMEOUT_MS);
    const finish = (result: 'live' | 'stale' | 'gone' | Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    socket.once('connect', () => finish('live'));
    socket.once('error', (err) => {
      const code = errnoCode(err);
      if (code === 'ECONNREFUSED') finish('stale');
      else if (code === 'ENOENT') finish('gone');
      else if (code === 'EAGAIN') finish('live');
      else finish(err);
    });
  });
}

async function prepareSocketPath(path: string): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o755 });
  let stat;
  try {
    stat = await fs.lstat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const state = await probe(path);
  if (state === 'live') throw new ControlSocketInUse(path);
  // Left behind by a daemon that crashed: nobody can be using it.
  if (state === 'stale') await fs.rm(path, { force: true });
}

export interface ControlServerOptions {
  /** Permissions of the socket file; default 0o660 (root and the group may connect). */
  mode?: number;
  /** Group of the socket file when that group exists in /etc/group; default 'mnedc'. */
  group?: string;
  /**
   * Told about failures the caller never sees as an application error: methods throwing something other
   * than RpcError (answered with -32603) and close callbacks throwing. Default: ignore.
   */
  onError?: (message: string, error: unknown) => void;
}

/** Serves RPC methods on a Unix socket; every connection may call any method. */
export class ControlServer {
  private readonly rpc: JSONRPCServer<CallContext>;
  private readonly sockets = new Set<Socket>();
  private readonly listener: Server;
  private closing: Promise<void> | undefined;

  private constructor(readonly path: string, methods: RpcMethods, private readonly onError: (message: string, error: unknown) => void) {
    this.rpc = new JSONRPCServer<CallContext>({
      errorListener: (message, error) => {
        if (!(error instanceof RpcError) && !(error instanceof JSONRPCErrorException)) onError(message, error);
      },
    });
    this.rpc.mapErrorToJSONRPCErrorResponse = errorResponse;
    for (const [name, method] of Object.entries(methods)) {
      // `undefined` would drop the "result" member when serialised, leaving an invalid response.
      this.rpc.addMethod(name, async (params, context) => (await method(params, context)) ?? null);
    }
    this.listener = createServer((socket) => this.accept(socket));
  }

  static async listen(path: string, methods: RpcMethods, options: ControlServerOptions = {}): Promise<ControlServer> {
    await prepareSocketPath(path);
    const server = new ControlServer(path, methods, options.onError ?? (() => undefined));
    await server.start(options.mode ?? 0o660, options.group ?? 'mnedc');
    return server;
  }

  get connections(): number {
    return this.sockets.size;
  }

  /** Closes the listener and every connection; the socket file is removed. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
      for (const socket of this.sockets) socket.destroy();
      await closed;
      await fs.rm(this.path, { force: true });
    })();
    return this.closing;
  }

  private async start(mode: number, group: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => reject(errnoCode(err) === 'EADDRINUSE' ? new ControlSocketInUse(this.path) : err);
      this.listener.once('error', fail);
      this.listener.listen(this.path, () => {
        this.listener.off('error', fail);
        resolve();
      });
    });
    this.listener.on('error', (err) => this.onError('control socket error', err));
    try {
      // bind() applied the umask; with the usual 022 the file is not group-writable, so connecting
      // (which needs write permission) would fail for the group.
      await fs.chmod(this.path, mode);
      const gid = await groupId(group);
      // Under systemd (User=mnedc, no chown syscalls allowed) the socket already has the group.
      if (gid !== undefined && (await fs.stat(this.path)).gid !== gid) await fs.chown(this.path, -1, gid);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    let open = true;
    const closeCallbacks: Array<() => void> = [];
    const runCallback = (callback: () => void) => {
      try {
        callback();
      } catch (err) {
        this.onError('control connection close callback failed', err);
      }
    };
    const context: CallContext = {
      notify: (method, params) => {
        if (open) this.send(socket, createJSONRPCNotification(method, params));
      },
      onClose: (callback) => {
        if (open) closeCallbacks.push(callback);
        else queueMicrotask(() => runCallback(callback));
      },
      peer: {},
    };
    const lines = new LineSplitter(MAX_REQUEST_LINE, (line) => this.handle(socket, line, context), () => {
      this.send(socket, createJSONRPCErrorResponse(null, JSONRPCErrorCode.InvalidRequest,
        `request line exceeds ${MAX_REQUEST_LINE} bytes`));
      socket.end(() => socket.destroy());
    });
    socket.on('data', (chunk: Buffer) => lines.push(chunk));
    // A caller vanishing mid-reply is its own problem; 'close' follows and cleans up.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      open = false;
      lines.stop();
      this.sockets.delete(socket);
      for (const callback of closeCallbacks.splice(0)) runCallback(callback);
    });
  }

  private handle(socket: Socket, line: string, context: CallContext): void {
    let payload: unknown;
    try {
      payload = JSON.parse(line);
    } catch {
      this.send(socket, createJSONRPCErrorResponse(null, JSONRPCErrorCode.ParseError, 'Parse error'));
      return;
    }
    if (Array.isArray(payload)) {
      this.send(socket, createJSONRPCErrorResponse(null, JSONRPCErrorCode.InvalidRequest, 'batch requests are not supported'));
      return;
    }
    if (payload === null || typeof payload !== 'object') {
      this.send(socket, createJSONRPCErrorResponse(null, JSONRPCErrorCode.InvalidRequest, 'Invalid Request'));
      return;
    }
    const request = payload as JSONRPCRequest;
    this.rpc.receive(request, context).then((response) => {
      if (response) this.send(socket, response);
    }, (err: unknown) => {
      this.onError('control request failed', err);
      if (request.id !== undefined) this.send(socket, errorResponse(request.id, err));
    });
  }

  private send(socket: Socket, message: object): void {
    if (socket.destroyed || !socket.writable) return;
    let text: string;
    try {
      text = JSON.stringify(message);
    } catch (err) {
      // BigInt or a cycle in a result: the caller still deserves an answer to its request.
      const id = (message as { id?: JSONRPCID }).id;
      this.onError('control message cannot be encoded as JSON', err);
      if (id === undefined) return;
      text = JSON.stringify(createJSONRPCErrorResponse(id, JSONRPCErrorCode.InternalError,
        `result cannot be encoded as JSON: ${(err as Error).message}`));
    }
    socket.write(`${text}\n`);
    if (socket.writableLength > MAX_UNSENT_BYTES) socket.destroy();
  }
}
