import { createConnection, type Socket } from 'node:net';
import { JSONRPCClient, JSONRPCErrorException, isJSONRPCResponse } from 'json-rpc-2.0';
import { ControlConnectionClosed, errnoCode, LineSplitter, MAX_REPLY_LINE, NoDaemonError, RpcError } from './control';

/* mnedcctl's side of the control channel (control.ts): one connection, calls and notifications. */

/** One connection to a daemon's control socket. */
export class ControlClient {
  /** Resolves when the connection is closed, by either side. */
  readonly closed: Promise<void>;
  private readonly rpc: JSONRPCClient;
  private readonly listeners: Array<(method: string, params: unknown) => void> = [];
  private readonly closedFailure: Promise<never>;
  private isClosed = false;

  private constructor(readonly path: string, private readonly socket: Socket) {
    this.rpc = new JSONRPCClient((payload) => {
      socket.write(`${JSON.stringify(payload)}\n`);
    });
    let failPending: (err: Error) => void = () => undefined;
    this.closedFailure = new Promise<never>((_, reject) => { failPending = reject; });
    this.closedFailure.catch(() => undefined);
    this.closed = new Promise<void>((resolve) => {
      socket.on('close', () => {
        this.isClosed = true;
        // Rejecting the race first makes pending calls fail with ControlConnectionClosed rather than
        // with the library's generic code-0 error.
        failPending(new ControlConnectionClosed(path));
        this.rpc.rejectAllPendingRequests('connection closed');
        resolve();
      });
    });
    const lines = new LineSplitter(MAX_REPLY_LINE, (line) => this.receive(line), () => socket.destroy());
    socket.on('data', (chunk: Buffer) => lines.push(chunk));
    socket.on('error', () => undefined);
  }

  /** Rejects with NoDaemonError when nothing listens on the path (missing, refused, not permitted, timed out). */
  static connect(path: string, timeoutMs = 2000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new NoDaemonError(path, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(connectError(path, err));
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', fail);
        resolve(new ControlClient(path, socket));
      });
    });
  }

  /**
   * Rejects with RpcError when the daemon answers with an error, ControlConnectionClosed when the
   * connection closes first.
   */
  async call<T = unknown>(method: string, params?: unknown): Promise<T> {
    if (this.isClosed) throw new ControlConnectionClosed(this.path);
    try {
      return await Promise.race([this.rpc.request(method, params) as Promise<T>, this.closedFailure]);
    } catch (err) {
      if (err instanceof JSONRPCErrorException) throw new RpcError(err.code, err.message, err.data);
      throw err;
    }
  }

  onNotification(callback: (method: string, params: unknown) => void): void {
    this.listeners.push(callback);
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      return;
    }
    if (message === null || typeof message !== 'object') return;
    const { method, id, params } = message as { method?: unknown; id?: unknown; params?: unknown };
    if (typeof method === 'string') {
      // Requests from the daemon (with an id) are not part of the protocol.
      if (id === undefined) for (const listener of this.listeners) listener(method, params);
    } else if (isJSONRPCResponse(message)) {
      this.rpc.receive(message);
    }
  }
}

function connectError(path: string, err: Error): Error {
  switch (errnoCode(err)) {
    case 'ENOENT': return new NoDaemonError(path, 'no such socket');
    case 'ENOTDIR': return new NoDaemonError(path, 'not a directory');
    case 'ECONNREFUSED': return new NoDaemonError(path, 'connection refused');
    case 'EACCES': return new NoDaemonError(path, 'permission denied');
    default: return err;
  }
}
