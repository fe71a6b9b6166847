import { networkInterfaces } from 'node:os';
import { ControlClient } from '@mnedc/common';
import type { ClientStatus } from './api';

/** How often the client's status is asked while waiting: boot waits on this, the socket is local and cheap. */
const POLL_MS = 200;

/** True when the kernel has `ip` on `name`: what a service binding that address needs, not what the client says. */
export function addressOnInterface(name: string, ip: string): boolean {
  return (networkInterfaces()[name] ?? []).some((a) => a.family === 'IPv4' && a.address === ip);
}

export interface WaitOutcome {
  online: boolean;
  /** Online: `ip on interface`; otherwise why not, for the message. */
  detail: string;
}

/** A daemon that accepts but never answers must not stretch the wait past its bound. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** `ms`, or less when `signal` aborts; the abort listener goes with the pause, not with the whole wait. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

function why(status: ClientStatus): string {
  if (status.state === 'connected') return `connected as ${status.ip}, but ${status.ip} is not on ${status.interface} yet`;
  return `the client is ${status.state}${status.lastError ? `: ${status.lastError}` : ''}`;
}

/**
 * Waits, at most `timeoutMs`, until the client daemon on `socket` is connected and its leased address is on
 * its TUN. No daemon listening yet (it is starting, or restarting) is a reason to keep waiting, not to fail:
 * boot orders this after the client's start, but a restart may come between.
 */
export async function waitOnline(socket: string, timeoutMs: number, signal?: AbortSignal,
  isOnInterface: (name: string, ip: string) => boolean = addressOnInterface): Promise<WaitOutcome> {
  const deadline = Date.now() + timeoutMs;
  let client: ControlClient | null = null;
  let detail = `no client daemon answered on ${socket}`;
  try {
    while (!signal?.aborted) {
      try {
        client ??= await ControlClient.connect(socket, Math.max(100, Math.min(2000, deadline - Date.now())));
        const status = await within(client.call<ClientStatus>('status'), Math.max(100, Math.min(2000, deadline - Date.now())));
        if (status?.daemon !== 'client') return { online: false, detail: `${socket} is not a client daemon's socket` };
        if (status.state === 'connected' && isOnInterface(status.interface, status.ip)) {
          return { online: true, detail: `${status.ip} on ${status.interface}` };
        }
        detail = why(status);
      } catch (err) {
        client?.close();
        client = null;
        detail = (err as Error).message;
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      await pause(Math.min(POLL_MS, left), signal);
    }
    return { online: false, detail };
  } finally {
    client?.close();
  }
}
