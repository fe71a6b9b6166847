import { parse as parseIni } from 'ini';

/**
 * INI configuration checked against a schema. Every problem names file, section and key, because the
 * person reading it is editing that file; unknown names are errors, because a typo silently ignored is a
 * setting silently not applied.
 */

/** Turns the text of one value into its typed form, or throws an Error whose message says what is wrong. */
export type ValueParser<T> = (text: string) => T;

export interface KeySpec<T> {
  parse: ValueParser<T>;
  /** Text of the default, parsed like a configured value; undefined means the key is required. */
  default?: string;
}

export type SectionSchema = Record<string, KeySpec<unknown>>;
export type Schema = Record<string, SectionSchema>;

export type ConfigOf<S extends Schema> = {
  [Section in keyof S]: { [Key in keyof S[Section]]: S[Section][Key] extends KeySpec<infer T> ? T : never };
};

export type ConfigProblem = 'syntax' | 'unknown' | 'invalid' | 'missing';

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problem: ConfigProblem,
    readonly detail: string,
    readonly section?: string,
    readonly key?: string,
  ) {
    const where = section === undefined ? file : key === undefined ? `${file}: [${section}]` : `${file}: [${section}] ${key}`;
    super(`${where}: ${detail}`);
    this.name = 'ConfigError';
  }
}

export function key<T>(parse: ValueParser<T>, defaultText?: string): KeySpec<T> {
  return defaultText === undefined ? { parse } : { parse, default: defaultText };
}

/** Parses INI text (the file name is only for messages). Pure: no file system access. */
export function parseConfig<S extends Schema>(schema: S, text: string, file: string): ConfigOf<S> {
  let raw: Record<string, unknown>;
  try {
    raw = parseIni(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(file, 'syntax', (err as Error).message);
  }
  const result: Record<string, Record<string, unknown>> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (typeof value !== 'object' || value === null) {
      throw new ConfigError(file, 'unknown', `"${name}" is outside any [section]`);
    }
    if (!Object.prototype.hasOwnProperty.call(schema, name)) {
      throw new ConfigError(file, 'unknown', `unknown section; known sections are ${listNames(schema)}`, name);
    }
  }
  for (const [sectionName, sectionSchema] of Object.entries(schema)) {
    const given = (raw[sectionName] ?? {}) as Record<string, unknown>;
    const section: Record<string, unknown> = {};
    for (const [keyName, value] of Object.entries(given)) {
      if (!Object.prototype.hasOwnProperty.call(sectionSchema, keyName)) {
        const hint = typeof value === 'object' && value !== null ? ' (dotted section names are not used)' : '';
        throw new ConfigError(file, 'unknown', `unknown key${hint}; known keys are ${listNames(sectionSchema)}`, sectionName, keyName);
      }
      if (typeof value === 'object' && value !== null) {
        throw new ConfigError(file, 'invalid', 'give one value (the key appears as a list or section)', sectionName, keyName);
      }
    }
    for (const [keyName, spec] of Object.entries(sectionSchema)) {
      const configured = given[keyName];
      // ini turns true/false/null into JS values; the parsers want the text the person wrote.
      const text = configured === undefined ? spec.default : String(configured ?? '');
      if (text === undefined) {
        throw new ConfigError(file, 'missing', 'is required but not set', sectionName, keyName);
      }
      try {
        section[keyName] = spec.parse(text.trim());
      } catch (err) {
        const origin = configured === undefined ? ' (default)' : '';
        throw new ConfigError(file, 'invalid', `${(err as Error).message}${origin}`, sectionName, keyName);
      }
    }
    result[sectionName] = section;
  }
  return result as ConfigOf<S>;
}

function listNames(object: object): string {
  return Object.keys(object).join(', ');
}

// Value parsers shared by both daemons. Messages start with the offending value so they read well after
// "file: [section] key: ".

export const parsers = {
  integer(min: number, max: number): ValueParser<number> {
    return (text) => {
      if (!/^-?\d+$/.test(text)) throw new Error(`${JSON.stringify(text)} is not a whole number`);
      const n = Number(text);
      if (n < min || n > max) throw new Error(`${n} is outside ${min}..${max}`);
      return n;
    };
  },

  oneOf<T extends string>(...choices: T[]): ValueParser<T> {
    return (text) => {
      if (!(choices as string[]).includes(text)) throw new Error(`${JSON.stringify(text)} is not one of ${choices.join(', ')}`);
      return text as T;
    };
  },

  absolutePath(text: string): string {
    if (!text.startsWith('/')) throw new Error(`${JSON.stringify(text)} is not an absolute path`);
    return text;
  },

  /** An absolute path, or empty to switch the feature off. */
  optionalPath(text: string): string {
    return text === '' ? '' : parsers.absolutePath(text);
  },

  /** Linux interface names: at most 15 bytes, no '/', ':' or white space; empty means "none". */
  interfaceName(text: string): string {
    if (text === '') return '';
    if (text.length > 15) throw new Error(`${JSON.stringify(text)} is longer than 15 characters (IFNAMSIZ)`);
    if (!/^[A-Za-z0-9_.%-]+$/.test(text) || text === '.' || text === '..') {
      throw new Error(`${JSON.stringify(text)} is not a valid interface name`);
    }
    return text;
  },

  hostPort(text: string): HostPort {
    return parseHostPort(text, 1);
  },

  /** Like hostPort, but port 0 (the kernel picks one) is allowed, which tests and ephemeral relays use. */
  listenAddress(text: string): HostPort {
    return parseHostPort(text, 0);
  },

  /** A listen address, or empty (null) to switch the feature off. */
  optionalListenAddress(text: string): HostPort | null {
    return text === '' ? null : parseHostPort(text, 0);
  },
};

/** host:port (IPv6 as [addr]:port), the port at least minPort; throws naming what is wrong. */
export function parseHostPort(text: string, minPort = 1): HostPort {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
    if (!match) throw new Error(`${JSON.stringify(text)} is not host:port (IPv6 as [addr]:port)`);
    const port = Number(match[3]);
    if (port < minPort || port > 65535) throw new Error(`port ${port} is outside ${minPort}..65535`);
    const host = match[1] ?? match[2]!;
    if (match[2] !== undefined && !/^[A-Za-z0-9.-]+$/.test(host)) throw new Error(`${JSON.stringify(host)} is not a host name or address`);
    return { host, port };
}

export interface HostPort {
  host: string;
  port: number;
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The "[section] key" names whose values differ between two parsed configurations (for SIGHUP). */
export function changedKeys<S extends Schema>(before: ConfigOf<S>, after: ConfigOf<S>): string[] {
  const changed: string[] = [];
  for (const section of Object.keys(after)) {
    const a = (before as Record<string, Record<string, unknown>>)[section] ?? {};
    const b = (after as Record<string, Record<string, unknown>>)[section]!;
    for (const key of Object.keys(b)) {
      if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) changed.push(`[${section}] ${key}`);
    }
  }
  return changed;
}
