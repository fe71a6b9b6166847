import { escapeControl } from '@mnedc/common';
import { PROGRAM, type Invocation, type SystemCommandName } from './args';
import { syncHosts, type SyncResult } from './hosts-sync';
import { watchHosts } from './hosts-watch';
import type { RunIo } from './run';
import { waitOnline } from './wait-online';

type CommandInvocation = Extract<Invocation, { kind: 'command' }>;

export function isSystemCommand(command: string): command is SystemCommandName {
  return command === 'wait-online' || command === 'sync-hosts';
}

function describeSync(result: SyncResult): string {
  const dropped = [result.skipped > 0 ? `${result.skipped} invalid lines` : '', result.badNames > 0 ? `${result.badNames} invalid names` : '']
    .filter(Boolean).join(' and ');
  const skipped = dropped ? `; skipped ${dropped} of /run/mnedc/hosts` : '';
  return `${PROGRAM}: /etc/hosts ${result.changed ? 'now lists' : 'already listed'} ${result.entries} mnedc devices${skipped}\n`;
}

/**
 * The commands systemd units run: exit 0 on success, 1 on failure (timeout, or a file that could not be
 * merged), with one line on stderr saying why; what they did goes to stdout, which is the unit's journal.
 */
export async function runSystemCommand(invocation: CommandInvocation, io: RunIo): Promise<number> {
  try {
    if (invocation.command === 'sync-hosts' && invocation.watch) {
      const removed = await watchHosts({
        log: (result) => io.stdout.write(describeSync(result)),
        warn: (message) => io.stderr.write(`${PROGRAM}: sync-hosts: ${escapeControl(message)}\n`),
        signal: io.signal ?? new AbortController().signal,
      });
      return removed ? 0 : 1;
    }
    if (invocation.command === 'sync-hosts') {
      io.stdout.write(describeSync(syncHosts({ remove: invocation.remove === true })));
      return 0;
    }
    const seconds = invocation.timeoutSec ?? 0;
    const socket = invocation.sockets[0]!;
    // 0 waits until interrupted: a day at a time is as good as forever for a setTimeout.
    const outcome = await waitOnline(socket, seconds > 0 ? seconds * 1000 : 2 ** 31 - 1, io.signal);
    if (outcome.online) {
      io.stdout.write(`${PROGRAM}: the overlay is up: ${outcome.detail}\n`);
      return 0;
    }
    io.stderr.write(`${PROGRAM}: the overlay is not up${io.signal?.aborted ? '' : ` after ${seconds} s`}: ${escapeControl(outcome.detail)}\n`);
    return io.signal?.aborted ? 130 : 1;
  } catch (err) {
    io.stderr.write(`${PROGRAM}: ${invocation.command}: ${escapeControl((err as Error).message)}\n`);
    return 1;
  }
}
