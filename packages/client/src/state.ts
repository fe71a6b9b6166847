import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIpv4 } from '@mnedc/protocol';
import { writeFileAtomic } from '@mnedc/common';
import { MAX_LEARNED_RELAYS } from './relay-choice';

/**
 * What the client remembers across restarts: the address it had, to ask for it again, and the relays of
 * its cluster the last WELCOME listed, to try when the configured ones are out of reach.
 */
export interface SavedState {
  lastIp?: string;
  server?: string;
  relays?: string[];
}

export function statePath(stateDir: string): string {
  return join(stateDir, 'client.json');
}

/** A missing or unreadable state file only costs the address preference, so it is not fatal. */
export function loadClientState(path: string): { state: SavedState; problem?: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: {} };
    return { state: {}, problem: (err as Error).message };
  }
  try {
    const data = JSON.parse(text) as SavedState;
    const state: SavedState = {};
    if (typeof data.lastIp === 'string' && isIpv4(data.lastIp)) state.lastIp = data.lastIp;
    if (typeof data.server === 'string') state.server = data.server;
    // Checked again as the WELCOME's were (RelayChoice.learn): a damaged file costs the list, nothing else.
    if (Array.isArray(data.relays)) state.relays = data.relays.filter((r): r is string => typeof r === 'string').slice(0, MAX_LEARNED_RELAYS);
    return { state };
  } catch (err) {
    return { state: {}, problem: `not valid JSON (${(err as Error).message})` };
  }
}

export function saveClientState(path: string, state: SavedState): void {
  writeFileAtomic(path, `${JSON.stringify(state)}\n`);
}
