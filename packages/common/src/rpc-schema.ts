/*
 * A small runtime description of JSON values, from which the TypeScript type is derived, so that a
 * daemon's RPC results can be checked at run time against the very declaration the compiler uses.
 */

/** One field's kind. Objects are closed unless `open`: then any further key holds a number (a counter). */
export type Kind =
  | 'string' | 'number' | 'boolean' | 'null'
  /** The literal `true` an action answers with ({ kicked: true }). */
  | 'true'
  | { readonly oneOf: readonly string[] }
  | { readonly array: Kind }
  | { readonly nullable: Kind }
  | { readonly object: Shape; readonly open?: true }
  /** Allowed to be absent: a field added later, that an older daemon does not send. */
  | { readonly optional: Kind };

export type Shape = { readonly [field: string]: Kind };

type Flat<T> = { -readonly [K in keyof T]: T[K] };
type OptionalKeys<S> = { [K in keyof S]: S[K] extends { readonly optional: Kind } ? K : never }[keyof S];
type ObjectOf<S> = Flat<
  { -readonly [K in Exclude<keyof S, OptionalKeys<S>>]: TypeOf<S[K]> } &
  { -readonly [K in OptionalKeys<S>]?: S[K] extends { readonly optional: infer E } ? TypeOf<E> : never }
>;

/** The TypeScript type a kind describes. */
export type TypeOf<K> =
  K extends 'string' ? string
    : K extends 'number' ? number
      : K extends 'boolean' ? boolean
        : K extends 'null' ? null
          : K extends 'true' ? true
          : K extends { readonly oneOf: readonly (infer L)[] } ? L
            : K extends { readonly array: infer E } ? Array<TypeOf<E>>
              : K extends { readonly nullable: infer E } ? TypeOf<E> | null
                : K extends { readonly object: infer S; readonly open: true } ? ObjectOf<S> & { [counter: string]: number }
                  : K extends { readonly object: infer S } ? ObjectOf<S>
                    : never;

/** Builders that keep literal types, so `TypeOf` sees field names and string literals. */
export const kind = {
  object: <const S extends Shape>(shape: S) => ({ object: shape }) as const,
  open: <const S extends Shape>(shape: S) => ({ object: shape, open: true }) as const,
  oneOf: <const L extends readonly string[]>(...values: L) => ({ oneOf: values }) as const,
  array: <const E extends Kind>(element: E) => ({ array: element }) as const,
  nullable: <const E extends Kind>(element: E) => ({ nullable: element }) as const,
  optional: <const E extends Kind>(element: E) => ({ optional: element }) as const,
};

export interface CheckOptions {
  /** Fields marked optional must be present too: what a current daemon, which sends every field, is held to. */
  requireOptional?: boolean;
}

/**
 * Every way `value` departs from `kind`, one line each naming the path ("peers[0].drops.spoofed: ..."):
 * an undeclared field, a missing one, a wrong kind. Empty when it agrees.
 */
export function checkKind(value: unknown, k: Kind, path = '$', options: CheckOptions = {}): string[] {
  const wrong = (expected: string) => [`${path}: expected ${expected}, got ${describe(value)}`];
  if (typeof k === 'string') {
    if (k === 'null') return value === null ? [] : wrong('null');
    if (k === 'true') return value === true ? [] : wrong('true');
    // JSON has no NaN or Infinity: a counter that became one would reach mnedcctl as null.
    if (k === 'number') return typeof value === 'number' && Number.isFinite(value) ? [] : wrong('a finite number');
    return typeof value === k ? [] : wrong(`a ${k}`);
  }
  if ('optional' in k) return checkKind(value, k.optional, path, options);
  if ('nullable' in k) return value === null ? [] : checkKind(value, k.nullable, path, options);
  if ('oneOf' in k) {
    return typeof value === 'string' && k.oneOf.includes(value) ? [] : wrong(`one of ${k.oneOf.map((v) => JSON.stringify(v)).join(', ')}`);
  }
  if ('array' in k) {
    if (!Array.isArray(value)) return wrong('an array');
    return value.flatMap((element, i) => checkKind(element, k.array, `${path}[${i}]`, options));
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return wrong('an object');
  const record = value as Record<string, unknown>;
  const problems: string[] = [];
  for (const [field, fieldKind] of Object.entries(k.object)) {
    if (!Object.hasOwn(record, field)) {
      const optional = typeof fieldKind === 'object' && 'optional' in fieldKind;
      if (!optional || options.requireOptional) problems.push(`${path}.${field}: missing`);
      continue;
    }
    problems.push(...checkKind(record[field], fieldKind, `${path}.${field}`, options));
  }
  for (const field of Object.keys(record)) {
    if (Object.hasOwn(k.object, field)) continue;
    if (k.open) problems.push(...checkKind(record[field], 'number', `${path}.${field}`, options));
    else problems.push(`${path}.${field}: not declared`);
  }
  return problems;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number') return String(value);
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
