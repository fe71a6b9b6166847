import { parseArgs } from 'node:util';
import { DEFAULT_CLIENT_SOCKET, DEFAULT_SERVER_SOCKET, hasControl, MAX_FILTER_CHARS, MAX_LIMIT } from '@mnedc/common';
import { outputHelp } from './glossary';

export const PROGRAM = 'mnedcctl';

export type CommandName = 'status' | 'peers' | 'leases' | 'stats' | 'kick' | 'release' | 'forget' | 'join' | 'rotate-join' | 'cluster' | 'watch'
  | 'wait-online' | 'sync-hosts';

/** Commands that are not one RPC call and a rendering of its answer (system-commands.ts runs them). */
export type SystemCommandName = 'wait-online' | 'sync-hosts';

/** wait-online's bound when --timeout is not given; 0 waits forever. */
export const DEFAULT_WAIT_ONLINE_SEC = 60;

interface CommandSpec {
  /** The positional argument, if the command takes one. */
  operand?: 'ID';
  serverOnly: boolean;
  /** The RPC method, where it is not the command's own name. */
  method?: string;
  summary: string;
  description: string;
}

const COMMANDS: Record<CommandName, CommandSpec> = {
  status: {
    serverOnly: false,
    summary: 'what the daemon is and how it is doing',
    description: 'Shows the daemon\'s version, uptime and addresses; for a client also its connection state.',
  },
  peers: {
    serverOnly: false,
    summary: 'connected devices (server) or known peers (client)',
    description: 'On the server: every connected device with its traffic, rates, queue, round-trip time and drops.\n' +
      'On a client: the other devices the server announced.',
  },
  leases: {
    serverOnly: true,
    summary: 'address leases, online or not (server only)',
    description: 'Lists every device that holds an address lease, whether it is connected and when it was last seen.',
  },
  stats: {
    serverOnly: false,
    summary: 'packet and byte counters',
    description: 'On the server: totals, the server\'s own interface and each connected device, with drops by reason.\n' +
      'On a client: tunnel and session counters.',
  },
  kick: {
    operand: 'ID',
    serverOnly: true,
    summary: 'close the connection of device ID (server only)',
    description: 'Closes the connection of device ID on the server; its lease is kept.',
  },
  release: {
    operand: 'ID',
    serverOnly: true,
    summary: 'drop the lease of device ID (server only)',
    description: 'Removes the lease of device ID, so that its address can be given to another device.',
  },
  forget: {
    operand: 'ID',
    serverOnly: true,
    summary: 'forget device ID: lease and key binding (server only)',
    description: 'Disconnects device ID and forgets its lease and the device key bound to its ID, so that a\n' +
      'reinstalled device (with a new key) can join under the same ID.',
  },
  join: {
    serverOnly: true,
    summary: 'print the join string for new clients (server only)',
    description: 'Prints the join string (server certificate fingerprint and join secret) to put in a client\'s\n' +
      '[client] join setting. It is a secret: anyone holding it can join the overlay.',
  },
  'rotate-join': {
    serverOnly: true,
    method: 'rotateJoin',
    summary: 'replace the join secret; earlier join strings stop working (server only)',
    description: 'Creates a new join secret and prints the new join string. Connected devices stay connected;\n' +
      'any device that reconnects needs the new string.',
  },
  cluster: {
    serverOnly: true,
    summary: 'the relays of the cluster, their devices, and etcd (server only)',
    description: 'Lists the relays of this relay\'s cluster as etcd shows them, with the devices on each, and the\n' +
      'etcd member asked with its answer (version, leader, revision) or why it did not answer.\n' +
      'A relay without [cluster] etcd says it is a single relay.',
  },
  watch: {
    serverOnly: false,
    summary: 'print devices coming and going until interrupted',
    description: 'Prints one line per peer event until interrupted (exit 0) or until the daemon stops (exit 3).\n' +
      'With --json each line is one JSON object {"method", "params"}.',
  },
  'wait-online': {
    serverOnly: false,
    summary: 'wait until the client is connected and its address is on its TUN',
    description: 'Waits until the client daemon (default socket: the client\'s) is connected and its leased address\n' +
      'is on its interface: exit 0, or exit 1 after --timeout SEC (default 60; 0 waits forever).\n' +
      'mnedcd-client-wait-online.service runs it to reach mnedc-online.target at boot.',
  },
  'sync-hosts': {
    serverOnly: false,
    summary: 'merge the client\'s /run/mnedc/hosts into /etc/hosts (root)',
    description: 'Replaces the block between "# BEGIN mnedc peers" and "# END mnedc peers" in /etc/hosts with the\n' +
      '<name>.mnedc entries of /run/mnedc/hosts (checked line by line: an IPv4 address and names under .mnedc),\n' +
      'or removes it when that file is absent or with --remove. Every other line is kept as it is.\n' +
      'With --watch it keeps running: it merges at once and again after every change of that file,\n' +
      'and removes the block when stopped. mnedcd-client-hosts.service runs it beside the client.',
  },
};

export function isServerOnly(command: CommandName): boolean {
  return COMMANDS[command].serverOnly;
}

export function rpcMethod(command: CommandName): string {
  return COMMANDS[command].method ?? command;
}

/** The user asked for something we cannot do: exit 2 with a short usage. */
export class UsageError extends Error {
  constructor(message: string, readonly command?: CommandName, readonly showUsage = true) {
    super(message);
    this.name = 'UsageError';
  }
}

function synopsis(command?: CommandName): string {
  if (!command) return `usage: ${PROGRAM} [--socket PATH] <command> [args] [--json]`;
  if (command === 'wait-online') return `usage: ${PROGRAM} [--socket PATH] wait-online [--timeout SEC]`;
  if (command === 'sync-hosts') return `usage: ${PROGRAM} sync-hosts [--remove | --watch]`;
  if (takesListQuery(command)) return `usage: ${PROGRAM} [--socket PATH] ${command} [--filter TEXT] [--limit N] [--json]`;
  const operand = COMMANDS[command].operand;
  return `usage: ${PROGRAM} [--socket PATH] ${command}${operand ? ` ${operand}` : ''} [--json]`;
}

const OPTIONS_HELP =
  'Options:\n' +
  '  --socket PATH  the daemon\'s control socket (default: $MNEDC_SOCKET, else whichever of\n' +
  `                 ${DEFAULT_SERVER_SOCKET} and ${DEFAULT_CLIENT_SOCKET} answer)\n` +
  '  --json         print the daemon\'s answer as JSON, with the field names of the RPC API\n' +
  '  --filter TEXT  peers, leases: only devices whose ID, hostname or IP contains TEXT; with * or ?\n' +
  '                 in it, a glob matching a whole field (edge-1*, 10.0.3.*); case-insensitive\n' +
  '  --limit N      peers, leases: at most N rows (the daemon selects them)\n' +
  '  Table output goes through $PAGER (default "less -FRX") when stdout is a terminal; PAGER=cat turns it off.\n' +
  '  -h, --help     print this help\n';

const EXIT_HELP = 'Exit status: 0 ok, 1 the daemon reported an error, 2 usage error, 3 no daemon listening.\n';

/** Full help, for --help. */
export function helpText(command?: CommandName): string {
  if (command) {
    const output = outputHelp(command);
    return `${synopsis(command)}\n\n${COMMANDS[command].description}\n\n${output ? `${output}\n` : ''}${OPTIONS_HELP}\n${EXIT_HELP}`;
  }
  const names = Object.entries(COMMANDS).map(([name, spec]) => [spec.operand ? `${name} ${spec.operand}` : name, spec.summary]);
  const width = Math.max(...names.map(([name]) => name.length));
  const commands = names.map(([name, summary]) => `  ${name.padEnd(width)}  ${summary}`).join('\n');
  return `${synopsis()}\n\nCommands:\n${commands}\n\n${OPTIONS_HELP}\n${EXIT_HELP}` +
    `\nRun '${PROGRAM} <command> --help' for more about a command.\n`;
}

/** What a usage error prints after its message. */
export function shortUsage(command?: CommandName): string {
  return `${synopsis(command)}\nTry '${PROGRAM} ${command ? `${command} ` : ''}--help' for more information.\n`;
}

export type Invocation =
  | { kind: 'help'; text: string }
  | {
    kind: 'command';
    command: CommandName;
    /** The ID operand of kick and release. */
    id?: string;
    /** Sockets to try; more than one only when none was named, and then every live one is used. */
    sockets: string[];
    json: boolean;
    /** wait-online's bound in seconds (0: none). */
    timeoutSec?: number;
    /** sync-hosts --remove. */
    remove?: boolean;
    /** peers and leases: --filter and --limit, passed to the daemon. */
    filter?: string;
    limit?: number;
    /** sync-hosts --watch. */
    watch?: boolean;
  };

/** Commands whose rows the daemon selects with --filter and --limit. */
export function takesListQuery(command: CommandName): boolean {
  return command === 'peers' || command === 'leases';
}

function isCommand(name: string): name is CommandName {
  return Object.prototype.hasOwnProperty.call(COMMANDS, name);
}

/**
 * Options may come before or after the command (`mnedcctl peers --json`), as parseArgs allows.
 * `defaultSockets` is there for tests; the real defaults are the daemons' well-known paths.
 */
export function parseCommandLine(argv: string[], env: Record<string, string | undefined>,
  defaultSockets: string[] = [DEFAULT_SERVER_SOCKET, DEFAULT_CLIENT_SOCKET]): Invocation {
  let values: { socket?: string; json?: boolean; help?: boolean; timeout?: string; remove?: boolean; watch?: boolean; filter?: string; limit?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        timeout: { type: 'string' },
        remove: { type: 'boolean' },
        watch: { type: 'boolean' },
        filter: { type: 'string' },
        limit: { type: 'string' },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (err) {
    // Node's own text for an unknown option is long, and its advice about '--' rarely applies. The
    // command, when known, picks the right short usage.
    const { code, message } = err as NodeJS.ErrnoException;
    const unknown = /^Unknown option '([^']+)'/.exec(message);
    let text = message;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) text = `unknown option '${unknown[1]}'`;
    else if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && /argument missing/.test(message)) {
      const option = /--(timeout|filter|limit|socket)/.exec(message)?.[1];
      text = { timeout: '--timeout needs a number of seconds', filter: '--filter needs a text', limit: '--limit needs a number of rows' }[option ?? ''] ??
        '--socket needs a path';
    }
    throw new UsageError(text, argv.find(isCommand));
  }

  const [name, ...operands] = positionals;
  if (name === undefined) {
    if (values.help) return { kind: 'help', text: helpText() };
    throw new UsageError('no command given');
  }
  if (!isCommand(name)) throw new UsageError(`unknown command '${name}'`);
  if (values.help) return { kind: 'help', text: helpText(name) };

  const spec = COMMANDS[name];
  let id: string | undefined;
  if (spec.operand) {
    if (operands.length === 0) throw new UsageError(`${name} needs a device ${spec.operand}`, name);
    id = operands.shift();
    if (id === '') throw new UsageError(`${name}: the device ${spec.operand} is empty`, name);
    if (id !== undefined && hasControl(id)) {
      throw new UsageError(`${name}: the device ${spec.operand} ${JSON.stringify(id)} holds control characters; device IDs are letters, digits and . _ : @ -`, name);
    }
  }
  if (operands.length > 0) throw new UsageError(`unexpected argument '${operands[0]}'`, name);

  if (values.timeout !== undefined && name !== 'wait-online') throw new UsageError(`--timeout is an option of wait-online, not of ${name}`, name);
  for (const option of ['remove', 'watch'] as const) {
    if (values[option] !== undefined && name !== 'sync-hosts') throw new UsageError(`--${option} is an option of sync-hosts, not of ${name}`, name);
  }
  if (values.remove && values.watch) throw new UsageError('--remove and --watch: one or the other', name);
  let timeoutSec: number | undefined;
  if (name === 'wait-online') {
    timeoutSec = values.timeout === undefined ? DEFAULT_WAIT_ONLINE_SEC : Number(values.timeout);
    if (values.timeout?.trim() === '' || !Number.isFinite(timeoutSec) || timeoutSec < 0 || timeoutSec > 86_400) {
      throw new UsageError(`--timeout ${JSON.stringify(values.timeout)}: not a number of seconds from 0 to 86400`, name);
    }
    // Only the client has an overlay address to wait for.
    defaultSockets = defaultSockets.slice(-1);
  }
  for (const option of ['filter', 'limit'] as const) {
    if (values[option] !== undefined && !takesListQuery(name)) throw new UsageError(`--${option} is an option of peers and leases, not of ${name}`, name);
  }
  if (values.filter !== undefined && (values.filter === '' || values.filter.length > MAX_FILTER_CHARS || hasControl(values.filter))) {
    throw new UsageError(`--filter ${JSON.stringify(values.filter.slice(0, 40))}: give 1 to ${MAX_FILTER_CHARS} printable characters`, name);
  }
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && (!/^[0-9]+$/.test(values.limit!) || limit < 1 || limit > MAX_LIMIT)) {
    throw new UsageError(`--limit ${JSON.stringify(values.limit)}: not a whole number from 1 to ${MAX_LIMIT}`, name);
  }
  const extra = {
    ...(timeoutSec !== undefined ? { timeoutSec } : {}), ...(values.remove ? { remove: true } : {}), ...(values.watch ? { watch: true } : {}),
    ...(values.filter !== undefined ? { filter: values.filter } : {}), ...(limit !== undefined ? { limit } : {}),
  };
  let sockets = defaultSockets;
  if (values.socket !== undefined) {
    if (values.socket === '') throw new UsageError('--socket needs a path', name);
    sockets = [values.socket];
  } else if (env.MNEDC_SOCKET) {
    sockets = [env.MNEDC_SOCKET];
  }
  return { kind: 'command', command: name, ...(id !== undefined ? { id } : {}), sockets, json: values.json === true, ...extra };
}
