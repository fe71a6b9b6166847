import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from './config';
import { defaultLogFormat, LOG_FORMATS, startupError, type LogFormat } from './log';

/** sysexits.h: systemd and packaging scripts tell "usage" from "configuration" failures by these. */
export const EXIT_USAGE = 2;
export const EXIT_CONFIG = 78;

export interface DaemonArgs {
  configPath: string;
  logFormat: LogFormat;
  /** Server only: print the join string (creating the identity if needed) and exit. */
  printJoin: boolean;
  /** Server only: endorse the relay whose certificate is in this file (--endorse FILE --relay-id ID [--days N]). */
  endorse?: { certificateFile: string; relayId: string; days: number };
}

export interface DaemonArgsOptions {
  /** Extra usage lines for options only this daemon has. */
  extraUsage?: string;
  allowPrintJoin?: boolean;
  /** --endorse FILE, --relay-id ID, --days N (the server). */
  allowEndorse?: boolean;
}

export function parseDaemonArgs(program: string, argv: string[], defaultConfig: string, version: string, options: DaemonArgsOptions = {}): DaemonArgs {
  const usage = `usage: ${program} [--config FILE] [--log-format text|json|journal]\n\n` +
    `  --config FILE        configuration file (default ${defaultConfig})\n` +
    '  --log-format FORMAT  journal (priority-prefixed lines, the default under systemd), text\n' +
    '                       (readable lines, the default elsewhere) or json (one JSON object a line)\n' +
    (options.extraUsage ?? '') +
    '  --version            print the version and exit\n  --help               print this help and exit\n';
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        'log-format': { type: 'string' },
        ...(options.allowPrintJoin ? { 'print-join': { type: 'boolean' as const } } : {}),
        ...(options.allowEndorse ? { endorse: { type: 'string' as const }, 'relay-id': { type: 'string' as const }, days: { type: 'string' as const } } : {}),
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
  const format = parsed.values['log-format'] ?? defaultLogFormat();
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    process.stderr.write(`${program}: --log-format must be one of ${LOG_FORMATS.join(', ')}, not ${JSON.stringify(format)}\n${usage}`);
    process.exit(EXIT_USAGE);
  }
  const values = parsed.values as Record<string, unknown>;
  const printJoin = values['print-join'] === true;
  const usageError = (text: string): never => {
    process.stderr.write(`${program}: ${text}\n${usage}`);
    process.exit(EXIT_USAGE);
  };
  let endorse: DaemonArgs['endorse'];
  if (typeof values.endorse === 'string') {
    if (typeof values['relay-id'] !== 'string') usageError('--endorse needs --relay-id ID: the name the relay goes by in the cluster');
    const days = values.days === undefined ? 365 : Number(values.days);
    if (!Number.isInteger(days) || days < 1 || days > 36_500) usageError(`--days wants a whole number of days from 1 to 36500, not ${JSON.stringify(values.days)}`);
    endorse = { certificateFile: values.endorse, relayId: values['relay-id'] as string, days };
  } else if (values['relay-id'] !== undefined || values.days !== undefined) {
    usageError('--relay-id and --days go with --endorse FILE');
  }
  return { configPath: parsed.values.config ?? defaultConfig, logFormat: format as LogFormat, printJoin, ...(endorse ? { endorse } : {}) };
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
    startupError(`${program}: cannot read configuration ${path}: ${(err as Error).message}`);
    process.exit(EXIT_USAGE);
  }
  try {
    return parse(text, path);
  } catch (err) {
    startupError(`${program}: ${(err as Error).message}`);
    process.exit(err instanceof ConfigError && err.problem === 'missing' ? EXIT_CONFIG : EXIT_USAGE);
  }
}
