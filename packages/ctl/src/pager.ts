import { spawn } from 'node:child_process';

/** As git: quit if it fits one screen, keep colours, leave the text on the screen afterwards. */
export const DEFAULT_PAGER = 'less -FRX';

/**
 * The pager a table goes through, or undefined to write it straight out: only to a terminal, never
 * with --json (scripts), and not when $PAGER is empty or "cat" (how a user turns it off).
 */
export function pagerCommand(env: Record<string, string | undefined>, isTTY: boolean, json: boolean): string | undefined {
  if (!isTTY || json) return undefined;
  const command = (env.PAGER ?? DEFAULT_PAGER).trim();
  return command === '' || command === 'cat' ? undefined : command;
}

/**
 * Runs `command` through the shell (as git does, so "less -R" works) with `text` on its stdin, the
 * terminal on its stdout; resolves when the user quits it. false if it could not run (e.g. less is
 * not installed): the caller then writes the text itself.
 */
export function page(command: string, text: string, env: Record<string, string | undefined>): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'inherit', 'inherit'], env: { LESS: 'FRX', ...env } });
    child.once('error', () => resolve(false));
    // The user quitting before reading everything closes the pipe: not an error.
    child.stdin.on('error', () => {});
    child.once('close', (code) => resolve(code !== 127 && code !== 126));
    child.stdin.end(text);
  });
}
