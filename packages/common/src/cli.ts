import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from './config';

/** sysexits.h: systemd and packaging scripts tell "usage" from "configuration" failures by these. */
export const EXIT_USAGE = 2;
export const EXIT_CONFIG = 78;

export interface DaemonArgs {
  configPath: string;
}

export function parseDaemonArgs(program: string, argv: string[], defaultConfig: string, version: string): DaemonArgs {
  const usage = `usage: ${program} [--config FILE]\n\n` +
    `  --config FILE   configuration file (default ${defaultConfig})\n` +
    `  --version       print the version and exit\n  --help          print this help and exit\n`;
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    process.stderr.write(`${program}: ${(err as Error).message}\n${usage}`);
    process.exit(EXIT_USAGE);
  }
  if (parsed.values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  if (parsed.values.version) {
    process.stdout.write(`${program} ${version}\n`);
    process.exit(0);
  }
  return { configPath: parsed.values.config ?? defaultConfig };
}

/**
 * Reads and validates the configuration, or ends the process with one line naming the problem.
 * A missing required setting is EX_CONFIG so that systemd units can refuse to restart-loop on it.
 */
export function loadConfigOrExit<T>(program: string, path: string, parse: (text: string, file: string) => T): T {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    process.stderr.write(`${program}: cannot read configuration ${path}: ${(err as Error).message}\n`);
    process.exit(EXIT_USAGE);
  }
  try {
    return parse(text, path);
  } catch (err) {
    process.stderr.write(`${program}: ${(err as Error).message}\n`);
    process.exit(err instanceof ConfigError && err.problem === 'missing' ? EXIT_CONFIG : EXIT_USAGE);
  }
}
