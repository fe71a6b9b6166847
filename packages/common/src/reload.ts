import { readFileSync } from 'node:fs';
import { changedKeys, type ConfigOf, type Schema } from './config';
import type { Logger, LogLevel } from './log';

/**
 * SIGHUP for a daemon: re-read the file, let `apply` take the keys that can change live and return the
 * configuration now in force, name the changed keys that need a restart, and keep running on a broken
 * file. The report is logged under the more verbose of the old and new levels, so neither raising nor
 * lowering the level hides it.
 */
export function reloadConfig<S extends Schema, C extends ConfigOf<S> & { log: { level: LogLevel } }>(
  path: string,
  current: C,
  parse: (text: string, file: string) => C,
  liveKeys: readonly string[],
  log: Logger,
  apply: (next: C) => C,
): C {
  let next: C;
  try {
    next = parse(readFileSync(path, 'utf8'), path);
  } catch (err) {
    log.error({ path }, `Reload failed, keeping the running configuration: ${(err as Error).message}`);
    return current;
  }
  const changed = changedKeys<S>(current, next);
  const applied = changed.filter((key) => liveKeys.includes(key));
  const needRestart = changed.filter((key) => !liveKeys.includes(key));
  const inForce = apply(next);
  const moreVerbose = log.levels.values[next.log.level]! < log.levels.values[log.level]!;
  if (moreVerbose) log.level = next.log.level;
  log.info({ applied, path }, applied.length > 0 ? `Reloaded ${path}: applied ${applied.join(', ')}` : `Reloaded ${path}: nothing to apply`);
  if (needRestart.length > 0) log.warn({ keys: needRestart }, `Changed settings need a restart to apply: ${needRestart.join(', ')}`);
  log.level = next.log.level;
  return inForce;
}
