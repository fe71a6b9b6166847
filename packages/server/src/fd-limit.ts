import { readFileSync } from 'node:fs';

/**
 * The open-file limit against what the relay may hold open at once: one socket per connected device
 * ([limits] max_clients, 0 meaning the subnet's size), one per handshake in progress (max_handshakes), and
 * a fixed margin for the rest (listener, control socket and mnedcctl connections, metrics, journals, TUN,
 * Node's own descriptors). Node has no getrlimit: the limit is read from /proc/self/limits.
 */
export const FD_MARGIN = 256;

export interface FdLimit {
  soft: number;
  hard: number;
}

/** The "Max open files" line of /proc/PID/limits ("unlimited" is Infinity); undefined if absent. */
export function parseOpenFileLimit(limits: string): FdLimit | undefined {
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)\s/m.exec(limits);
  if (!match) return undefined;
  const value = (text: string) => (text === 'unlimited' ? Infinity : Number(text));
  return { soft: value(match[1]!), hard: value(match[2]!) };
}

/** Descriptors the relay may need: devices connected at once, handshakes in progress, the margin. */
export function fdsNeeded(maxClients: number, poolCapacity: number, maxHandshakes: number): number {
  return (maxClients > 0 ? Math.min(maxClients, poolCapacity) : poolCapacity) + maxHandshakes + FD_MARGIN;
}

/** This process's limit; undefined where /proc cannot tell. */
export function readOpenFileLimit(): FdLimit | undefined {
  try {
    return parseOpenFileLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

/** The warning for a limit that does not fit, naming both numbers; undefined when it fits (or is unknown). */
export function fdLimitWarning(limit: FdLimit | undefined, maxClients: number, poolCapacity: number, maxHandshakes: number):
  { fields: Record<string, number>; message: string } | undefined {
  const needed = fdsNeeded(maxClients, poolCapacity, maxHandshakes);
  if (!limit || limit.soft >= needed) return undefined;
  const clients = maxClients > 0 ? Math.min(maxClients, poolCapacity) : poolCapacity;
  return {
    fields: { openFiles: limit.soft, needed },
    message: `The open-file limit is ${limit.soft}, but ${needed} may be needed: ${clients} devices ([limits] max_clients` +
      `${maxClients > 0 ? '' : ' 0: the subnet\'s size'}) + ${maxHandshakes} handshakes (max_handshakes) + ${FD_MARGIN}; ` +
      'beyond it new connections fail (EMFILE). Raise LimitNOFILE= (systemctl edit mnedcd-server) or lower max_clients',
  };
}
