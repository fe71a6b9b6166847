/**
 * What a failed connection attempt means, in one line an operator can act on, and whether it is an
 * outage (retry soon) or a mistake only an operator fixes (retry rarely). Pure: no sockets, no clock.
 */
import type { FailureKind } from './backoff';

export interface Failure {
  kind: FailureKind;
  /** One line (the caller names the server); never OpenSSL's multi-line text. */
  text: string;
}

/** TLS alerts and record errors that mean the other end is not a TLS 1.3 server at all. */
const NOT_TLS = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_HTTP_REQUEST',
  'ERR_SSL_HTTPS_PROXY_REQUEST', 'ERR_SSL_RECORD_LENGTH_MISMATCH', 'ERR_SSL_UNEXPECTED_RECORD', 'ERR_SSL_RECORD_LAYER_FAILURE']);
const OLD_TLS = new Set(['ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'ERR_SSL_UNSUPPORTED_PROTOCOL', 'ERR_SSL_NO_PROTOCOLS_AVAILABLE']);

const OUTAGE_TEXT: Record<string, string> = {
  ECONNREFUSED: 'connection refused (nothing listens there: the relay is down or restarting)',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed while sending',
  ENOTFOUND: 'name not found in DNS',
  EAI_AGAIN: 'name lookup failed for now (DNS)',
};

/**
 * A socket error of an attempt. `secured`: TLS was up, so an error is the link failing, not a sign of
 * what the server is.
 */
export function describeSocketError(err: { code?: unknown; message: string }, secured: boolean): Failure {
  const code = typeof err.code === 'string' ? err.code : '';
  if (!secured) {
    if (NOT_TLS.has(code)) return { kind: 'mistake', text: 'it does not speak TLS (a web, SSH or other server?); is it an mnedc relay? Check [client] server' };
    if (OLD_TLS.has(code)) return { kind: 'mistake', text: 'it speaks no TLS 1.3; is it an mnedc relay? Check [client] server' };
    if (code.startsWith('ERR_SSL_')) {
      return { kind: 'mistake', text: `the TLS handshake failed (${tlsReason(err.message, code)}); is it an mnedc relay? Check [client] server` };
    }
    if (code === 'ECONNRESET' && /before secure TLS connection/.test(err.message)) {
      // Also what a relay does to connections beyond its handshake limits, so it is retried like an outage.
      return { kind: 'outage', text: 'it closed the connection before TLS was up (a busy relay does this; if it persists, is it an mnedc relay?)' };
    }
  }
  if (code.startsWith('ERR_SSL_')) return { kind: 'outage', text: `TLS error (${tlsReason(err.message, code)})` };
  const known = OUTAGE_TEXT[code];
  return { kind: 'outage', text: known ?? firstLine(err.message) };
}

/** REJECT codes that retrying will not change; the others (busy, pool-full) come with the relay's own hint. */
export function rejectKind(code: string): FailureKind {
  return code === 'auth' || code === 'forbidden' || code === 'version' ? 'mistake' : 'outage';
}

/** OpenSSL's "…:SSL routines:func:the reason:file:line:" down to "the reason". */
function tlsReason(message: string, code: string): string {
  const parts = firstLine(message).split(':');
  const at = parts.indexOf('SSL routines');
  const reason = at >= 0 ? parts[at + 2] : undefined;
  return reason && reason.trim() ? reason.trim() : code;
}

function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? 'error';
}
