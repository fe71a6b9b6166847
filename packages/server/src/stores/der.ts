/**
 * A minimal DER writer: the few ASN.1 types a self-signed X.509 certificate needs (see certificate.ts).
 * Pure; every function returns the complete encoding (tag, length, contents) of one value, so values
 * nest by concatenation. Only what DER allows is produced: minimal lengths and integers, DEFAULT values
 * left out by the caller, UTCTime only for the years RFC 5280 gives it.
 */

export class DerError extends Error {}

const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

/** The length octets: short form below 128, else 0x80 | count followed by the big-endian length. */
export function derLength(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new DerError(`DER length ${length} is not a non-negative integer`);
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One value with `tag` (a full identifier octet) around `contents`. */
export function derValue(tag: number, contents: Buffer): Buffer {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) throw new DerError(`DER tag ${tag} is not a low-number identifier octet`);
  return Buffer.concat([Buffer.from([tag]), derLength(contents.length), contents]);
}

export function derSequence(...items: Buffer[]): Buffer {
  return derValue(TAG.sequence, Buffer.concat(items));
}

/** A SET of one element (DER sorts SET OF members; one needs no sorting). */
export function derSetOfOne(item: Buffer): Buffer {
  return derValue(TAG.set, item);
}

/** An EXPLICIT context-specific tag, [n] constructed, around one value: the certificate's [0] version and [3] extensions. */
export function derExplicit(n: number, item: Buffer): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new DerError(`context tag [${n}] is out of the low-number range 0..30`);
  return derValue(0xa0 | n, item);
}

export function derBoolean(value: boolean): Buffer {
  return derValue(TAG.boolean, Buffer.from([value ? 0xff : 0x00]));
}

export function derNull(): Buffer {
  return derValue(TAG.null, Buffer.alloc(0));
}

/**
 * A non-negative INTEGER from its big-endian magnitude (a Buffer) or a small number. DER integers are
 * two's complement and minimal: leading zero octets go, and one comes back when the top bit is set.
 */
export function derUnsignedInteger(value: Buffer | number): Buffer {
  let magnitude: Buffer;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new DerError(`INTEGER ${value} is not a non-negative safe integer`);
    const bytes: number[] = [];
    for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
    magnitude = Buffer.from(bytes);
  } else {
    let start = 0;
    while (start < value.length && value[start] === 0) start++;
    magnitude = value.subarray(start);
  }
  if (magnitude.length === 0) magnitude = Buffer.from([0]);
  else if (magnitude[0]! & 0x80) magnitude = Buffer.concat([Buffer.from([0]), magnitude]);
  return derValue(TAG.integer, magnitude);
}

/** An OBJECT IDENTIFIER from dotted text: first two arcs as 40·a + b, every arc base 128, high bit = more. */
export function derOid(dotted: string): Buffer {
  if (!/^[0-9]+(\.[0-9]+)+$/.test(dotted)) throw new DerError(`OID "${dotted}" is not dotted decimal with at least two arcs`);
  const arcs = dotted.split('.').map(Number);
  const [first, second] = arcs as [number, number];
  if (arcs.some((arc) => !Number.isSafeInteger(arc))) throw new DerError(`OID "${dotted}" has an arc too large to encode here`);
  if (first > 2 || (first < 2 && second > 39)) throw new DerError(`OID "${dotted}" starts with an arc pair X.660 does not allow`);
  const bytes: number[] = [];
  for (const arc of [first * 40 + second, ...arcs.slice(2)]) {
    const group = [arc % 128];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) group.unshift(0x80 | (rest % 128));
    bytes.push(...group);
  }
  return derValue(TAG.oid, Buffer.from(bytes));
}

/** A BIT STRING of whole octets (a signature, a key): no unused bits. */
export function derBitString(bytes: Buffer): Buffer {
  return derValue(TAG.bitString, Buffer.concat([Buffer.from([0]), bytes]));
}

/**
 * A named-bit BIT STRING (keyUsage) with the given bit numbers set, bit 0 being the most significant bit
 * of the first octet. DER drops trailing zero bits, so the length and unused-bit count follow the highest bit.
 */
export function derNamedBits(bits: readonly number[]): Buffer {
  if (bits.some((bit) => !Number.isInteger(bit) || bit < 0 || bit > 255)) throw new DerError(`named bits ${bits.join(',')} are not all in 0..255`);
  if (bits.length === 0) return derValue(TAG.bitString, Buffer.from([0]));
  const highest = Math.max(...bits);
  const octets = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) octets[bit >> 3]! |= 0x80 >> (bit & 7);
  return derValue(TAG.bitString, Buffer.concat([Buffer.from([7 - (highest & 7)]), octets]));
}

export function derOctetString(bytes: Buffer): Buffer {
  return derValue(TAG.octetString, bytes);
}

export function derUtf8String(text: string): Buffer {
  return derValue(TAG.utf8String, Buffer.from(text, 'utf8'));
}

/**
 * A certificate validity time as RFC 5280 4.1.2.5 wants it: UTCTime (YYMMDDHHMMSSZ) through 2049,
 * GeneralizedTime (YYYYMMDDHHMMSSZ) from 2050, both in UTC with whole seconds.
 */
export function derTime(date: Date): Buffer {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new DerError('certificate time is not a valid date');
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new DerError(`certificate year ${year} is outside 0000..9999`);
  const two = (n: number) => String(n).padStart(2, '0');
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (year >= 1950 && year <= 2049) return derValue(TAG.utcTime, Buffer.from(`${two(year % 100)}${rest}`, 'ascii'));
  return derValue(TAG.generalizedTime, Buffer.from(`${String(year).padStart(4, '0')}${rest}`, 'ascii'));
}

/** PEM armour: base64 in 64-character lines between BEGIN and END `label`. */
export function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
