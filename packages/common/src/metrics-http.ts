import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EXIT_CONFIG } from './cli';
import { formatHostPort, type HostPort } from './config';
import type { CallContext } from './control';
import type { Logger } from './log';
import { renderMetrics } from './metrics';
import type { ClientStats, DaemonKind, ServerStats } from './rpc-types';

/*
 * The [metrics] listen endpoint: GET /metrics and nothing else, unauthenticated (the README says to bind
 * it to loopback). It must never cost the daemon more than a few sockets, so connections are capped,
 * slow or idle ones are closed, request bodies are never read, and every answer closes its connection.
 */

export interface MetricsServerOptions {
  /** Connections open at once; more are closed as they arrive. */
  maxConnections?: number;
  /** The whole request head must arrive within this. */
  headersTimeoutMs?: number;
  /** A connection with nothing moving for this long is closed. */
  idleTimeoutMs?: number;
  /** Told about failures no HTTP client sees (the stats failing, the listener's errors). */
  onError?: (message: string, error: unknown) => void;
}

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export class MetricsServer {
  private constructor(private readonly server: Server, readonly address: HostPort) {}

  /** Listens on `at`; rejects with the listen error (EADDRINUSE, EADDRNOTAVAIL, ...) when it cannot. */
  static async listen(at: HostPort, render: () => string | Promise<string>, options: MetricsServerOptions = {}): Promise<MetricsServer> {
    const onError = options.onError ?? (() => undefined);
    const headersTimeout = options.headersTimeoutMs ?? 5_000;
    const server = createServer({
      headersTimeout,
      requestTimeout: headersTimeout * 2,
      // Node checks the two timeouts above on this period (30 s by default, longer than they are).
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, headersTimeout / 2)),
    }, (req, res) => {
      handle(req, res, render).catch((err: unknown) => {
        onError(`Metrics request failed: ${(err as Error).message}`, err);
        res.destroy();
      });
    });
    server.maxConnections = options.maxConnections ?? 16;
    server.timeout = options.idleTimeoutMs ?? 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // After the start, an error (EMFILE on accept) is reported; unhandled it would end the daemon.
    server.on('error', (err) => onError(`Metrics listener: ${err.message}`, err));
    const bound = server.address() as AddressInfo;
    return new MetricsServer(server, { host: bound.address, port: bound.port });
  }

  get url(): string {
    return `http://${formatHostPort(this.address)}/metrics`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, render: () => string | Promise<string>): Promise<void> {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/metrics') return reply(res, 404, 'not found: the metrics are at /metrics\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, `method ${req.method ?? ''} not allowed: use GET\n`, { Allow: 'GET, HEAD' });
  let body: string;
  try {
    body = await render();
  } catch (err) {
    reply(res, 500, 'cannot read the counters\n');
    throw err;
  }
  reply(res, 200, body, { 'Content-Type': EXPOSITION_CONTENT_TYPE });
}

function reply(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.headersSent) return;
  // Closing after each answer means a request body is never read nor kept.
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close', ...headers });
  res.end(body);
}

/** A stats call made by the daemon itself: nobody to notify, no connection to close. */
const OWN_CALL: CallContext = { notify: () => undefined, onClose: () => undefined, peer: {} };

type StatsMethod<S> = (params: unknown, context: CallContext) => S | Promise<S>;

/**
 * Serves a daemon's `stats` answer at [metrics] listen, if set. A listener that cannot start (port taken,
 * address not on this host) is a configuration problem: the daemon exits with EX_CONFIG naming the key
 * rather than run without the metrics the operator asked for.
 */
export async function serveMetricsOrExit(
  configPath: string,
  listen: HostPort | null,
  daemon: DaemonKind,
  methods: { stats: StatsMethod<ServerStats> } | { stats: StatsMethod<ClientStats> },
  log: Logger,
): Promise<MetricsServer | null> {
  if (!listen) return null;
  const stats = methods.stats as StatsMethod<ServerStats | ClientStats>;
  try {
    const server = await MetricsServer.listen(listen, async () => renderMetrics(daemon, await stats(undefined, OWN_CALL)), {
      onError: (message, err) => log.error({ err }, message),
    });
    log.info({ metrics: server.url }, `Prometheus metrics at ${server.url}`);
    return server;
  } catch (err) {
    log.fatal({ err }, `${configPath}: [metrics] listen: cannot listen on ${formatHostPort(listen)}: ${(err as Error).message}`);
    process.exit(EXIT_CONFIG);
  }
}
