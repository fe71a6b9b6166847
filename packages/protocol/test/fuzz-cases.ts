/**
 * Property-based fuzz cases for the frame decoder and the handshake/control message parsers, shared by the
 * `npm test` run (test/fuzz.test.ts, ≥ 100,000 cases in total) and the long run (scripts/fuzz.js, which
 * requires the compiled dist/test/fuzz-cases.js).
 *
 * Every generator produces a compact *description* (piece lists, cut lists, JSON fragments) that the
 * predicate materialises, so a counterexample prints small even when it stands for a 64 KiB frame or a
 * 20,000-deep JSON nesting.
 *
 * Settings (both runners): MNEDC_FUZZ_SEED=<integer> replaces the fixed default seed; MNEDC_FUZZ_RUNS is
 * either an absolute total over all cases ("250000") or a multiplier of the runner's default total when
 * it ends or starts with "x" ("4x", "x0.1"). The total is split over the cases by their `share`.
 */
import { strict as assert } from 'node:assert';
import * as fc from 'fast-check';
import { FrameDecoder } from '../src/decoder';
import { PEERS_BINARY_CASE } from './fuzz-peers-binary';
import { intToIpv4, ipv4ToInt, isUnicast, prefixMask } from '../src/ipv4';
import { isDnsName, sanitizeHostname } from '../src/names';
import {
  parseGoodbye, parseHello, parsePeerUpdate, parseReject, parseWelcome,
} from '../src/messages';
import {
  encodeFrame, FrameType, GSO_HEADER_BYTES, HEADER_BYTES, MAX_CONTROL_PAYLOAD, MAX_GSO_PAYLOAD, MAX_PACKET, MAX_PAYLOAD,
  MIN_IPV4_PACKET, PING_BYTES, ProtocolError,
} from '../src/wire';

// ---------------------------------------------------------------------------------------------------
// Settings

export const DEFAULT_SEED = 0x6d6e6564; // "mned"
/** Total runs over all cases in `npm test`. */
export const TEST_TOTAL_RUNS = 100_000;
/** Total runs over all cases in the long run (scripts/fuzz.js). */
export const LONG_TOTAL_RUNS = 2_000_000;

export interface FuzzSettings {
  seed: number;
  totalRuns: number;
}

/** Reads MNEDC_FUZZ_SEED and MNEDC_FUZZ_RUNS (see the header comment) over the given defaults. */
export function fuzzSettings(defaultTotal: number, env: NodeJS.ProcessEnv = process.env): FuzzSettings {
  let seed = DEFAULT_SEED;
  const seedText = env.MNEDC_FUZZ_SEED?.trim();
  if (seedText) {
    seed = Number(seedText);
    if (!Number.isInteger(seed)) throw new Error(`MNEDC_FUZZ_SEED=${seedText} is not an integer`);
    seed |= 0; // fast-check seeds are 32-bit
  }
  return { seed, totalRuns: parseRuns(env.MNEDC_FUZZ_RUNS, defaultTotal, 'MNEDC_FUZZ_RUNS') };
}

/** "250000" → 250000; "4x" / "x4" → 4 × defaultTotal; empty → defaultTotal. */
export function parseRuns(text: string | undefined, defaultTotal: number, what = 'runs'): number {
  const t = text?.trim().toLowerCase();
  if (!t) return defaultTotal;
  const multiplier = /^x([0-9.]+)$/.exec(t) ?? /^([0-9.]+)x$/.exec(t);
  const value = multiplier ? Number(multiplier[1]) * defaultTotal : Number(t.replace(/_/g, ''));
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${what}=${text}: expected a total like 250000 or a multiplier like 4x`);
  }
  return Math.max(1, Math.round(value));
}

export interface FuzzCase {
  name: string;
  /** Fraction of the total runs this case gets. */
  share: number;
  property(): fc.IProperty<any>;
}

/** Runs per case for a total; every case gets at least one run and the sum is at least `total`. */
export function runsFor(fuzzCase: FuzzCase, total: number): number {
  const shares = FUZZ_CASES.reduce((sum, c) => sum + c.share, 0);
  return Math.max(1, Math.ceil((total * fuzzCase.share) / shares - 1e-9));
}

// ---------------------------------------------------------------------------------------------------
// Frame descriptions

/** Smallest DATA_GSO payload: the virtio header and an IPv4 header. */
const MIN_GSO_FRAME = GSO_HEADER_BYTES + MIN_IPV4_PACKET;
const CONTROL_TYPES = [FrameType.Hello, FrameType.Welcome, FrameType.Reject, FrameType.Peers, FrameType.Goodbye];
/** Frames held to MAX_CONTROL_PAYLOAD: the JSON ones and the binary PEERS_BIN. */
const CONTROL_SIZED: readonly number[] = [...CONTROL_TYPES, FrameType.PeersBin, FrameType.Endorse, FrameType.MeshHello, FrameType.MeshWelcome];
const KNOWN_TYPES: readonly number[] = [...CONTROL_SIZED, FrameType.Data, FrameType.DataGso, FrameType.Ping, FrameType.Pong];
const UNKNOWN_TYPES: readonly number[] = Array.from({ length: 256 }, (_, i) => i).filter((t) => !KNOWN_TYPES.includes(t));

/** A valid frame: its payload is `head` then `fill` repeated up to `length` (cheap to build at 64 KiB). */
export interface FrameSpec {
  type: number;
  length: number;
  head: Uint8Array;
  fill: number;
}

/** A piece of a byte stream. */
export type Piece =
  | { k: 'frame'; f: FrameSpec }
  | { k: 'bytes'; b: Uint8Array }
  | { k: 'header'; type: number; length: number }
  | { k: 'fill'; length: number; byte: number };

/** Split points: absolute offsets (mod stream length + 1) and offsets relative to a piece's start. */
export interface Cuts {
  abs: number[];
  rel: Array<[piece: number, delta: number]>;
}

function payloadOf(spec: FrameSpec): Buffer {
  const payload = Buffer.alloc(spec.length, spec.fill);
  payload.set(spec.head.subarray(0, spec.length));
  return payload;
}

/** Builds a frame by hand (not with encodeFrame) so the test does not trust the code under test. */
function frameBytes(spec: FrameSpec): Buffer {
  const frame = Buffer.alloc(HEADER_BYTES + spec.length, spec.fill);
  frame[0] = spec.type;
  frame[1] = (spec.length >>> 16) & 0xff;
  frame[2] = (spec.length >>> 8) & 0xff;
  frame[3] = spec.length & 0xff;
  frame.set(spec.head.subarray(0, spec.length), HEADER_BYTES);
  return frame;
}

function pieceBytes(piece: Piece): Buffer {
  switch (piece.k) {
    case 'frame':
      return frameBytes(piece.f);
    case 'bytes':
      return Buffer.from(piece.b);
    case 'header': {
      const b = Buffer.alloc(4);
      b[0] = piece.type & 0xff;
      b.writeUIntBE(piece.length & 0xffffff, 1, 3);
      return b;
    }
    case 'fill':
      return Buffer.alloc(piece.length, piece.byte);
  }
}

export function materialize(pieces: readonly Piece[], cuts: Cuts): { stream: Buffer; starts: number[]; cuts: number[] } {
  const parts = pieces.map(pieceBytes);
  const starts: number[] = [];
  let at = 0;
  for (const p of parts) {
    starts.push(at);
    at += p.length;
  }
  const stream = Buffer.concat(parts, at);
  const points = cuts.abs.map((n) => n % (stream.length + 1));
  if (starts.length > 0) {
    for (const [piece, delta] of cuts.rel) {
      points.push(Math.min(stream.length, Math.max(0, starts[piece % starts.length]! + delta)));
    }
  }
  // Duplicates stay: they become empty pushes, which the decoder must also take.
  points.sort((a, b) => a - b);
  return { stream, starts, cuts: points };
}

const smallBytes = (maxLength: number) => fc.uint8Array({ maxLength });

function lengthArb(min: number, max: number, edges: number[]): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min, max: Math.min(max, min + 300) }) },
    { weight: 2, arbitrary: fc.constantFrom(...edges.filter((e) => e >= min && e <= max)) },
    { weight: 1, arbitrary: fc.integer({ min, max }) },
  );
}

export const frameSpecArb: fc.Arbitrary<FrameSpec> = fc.oneof(
  fc.record({
    type: fc.constant(FrameType.Data as number),
    length: lengthArb(MIN_IPV4_PACKET, MAX_PAYLOAD, [MIN_IPV4_PACKET, 21, 576, 1500, 9000, MAX_PACKET, MAX_PACKET + 1, MAX_PAYLOAD - 1, MAX_PAYLOAD]),
    head: smallBytes(64),
    fill: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    type: fc.constant(FrameType.DataGso as number),
    length: lengthArb(MIN_GSO_FRAME, MAX_GSO_PAYLOAD, [MIN_GSO_FRAME, MIN_GSO_FRAME + 1, 1410, MAX_GSO_PAYLOAD - 1, MAX_GSO_PAYLOAD]),
    head: smallBytes(64),
    fill: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    type: fc.constantFrom<number>(FrameType.Ping, FrameType.Pong),
    length: fc.constant(PING_BYTES),
    head: smallBytes(PING_BYTES),
    fill: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    type: fc.constantFrom<number>(...CONTROL_TYPES),
    length: lengthArb(0, MAX_CONTROL_PAYLOAD, [0, 1, 2, 1024, MAX_CONTROL_PAYLOAD - 1, MAX_CONTROL_PAYLOAD]),
    head: smallBytes(64),
    fill: fc.integer({ min: 0, max: 255 }),
  }),
);

/** Headers of every kind: mostly known types with lengths at and around each rule's edges. */
const headerArb = fc.record({
  type: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...KNOWN_TYPES) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
  length: fc.oneof(
    fc.constantFrom(0, 1, 7, 8, 9, 19, 20, 21, MAX_CONTROL_PAYLOAD, MAX_CONTROL_PAYLOAD + 1, MAX_PACKET, MAX_PAYLOAD,
      MAX_PAYLOAD + 1, 0x7fffff, 0xffffff),
    fc.integer({ min: 0, max: 300 }),
    fc.integer({ min: 0, max: 0xffffff }),
  ),
});

/** An invalid header: it must make the decoder fail once its 4 bytes are in. */
export const badHeaderArb: fc.Arbitrary<{ type: number; length: number }> = fc.oneof(
  fc.record({ type: fc.constantFrom(...UNKNOWN_TYPES), length: fc.integer({ min: 0, max: 0xffffff }) }),
  fc.record({
    type: fc.constant(FrameType.Data as number),
    length: fc.oneof(fc.integer({ min: 0, max: MIN_IPV4_PACKET - 1 }), fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffff })),
  }),
  fc.record({
    type: fc.constant(FrameType.DataGso as number),
    length: fc.oneof(fc.integer({ min: 0, max: MIN_GSO_FRAME - 1 }), fc.integer({ min: MAX_GSO_PAYLOAD + 1, max: 0xffffff })),
  }),
  fc.record({
    type: fc.constantFrom<number>(FrameType.Ping, FrameType.Pong),
    length: fc.integer({ min: 0, max: 0xffffff }).filter((n) => n !== PING_BYTES),
  }),
  fc.record({
    type: fc.constantFrom<number>(...CONTROL_TYPES),
    length: fc.integer({ min: MAX_CONTROL_PAYLOAD + 1, max: 0xffffff }),
  }),
);

export const anyPieceArb: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 3, arbitrary: frameSpecArb.map((f): Piece => ({ k: 'frame', f })) },
  { weight: 3, arbitrary: smallBytes(48).map((b): Piece => ({ k: 'bytes', b })) },
  { weight: 3, arbitrary: headerArb.map((h): Piece => ({ k: 'header', ...h })) },
  {
    weight: 1,
    arbitrary: fc.record({ length: lengthArb(0, 70_000, [MAX_CONTROL_PAYLOAD, MAX_PAYLOAD, MAX_PAYLOAD + 4]), byte: fc.integer({ min: 0, max: 255 }) })
      .map((x): Piece => ({ k: 'fill', ...x })),
  },
);

export const cutsArb: fc.Arbitrary<Cuts> = fc.record({
  abs: fc.array(fc.nat(), { maxLength: 12 }),
  rel: fc.array(fc.tuple(fc.nat({ max: 63 }), fc.integer({ min: -6, max: 6 })), { maxLength: 24 }),
});

// ---------------------------------------------------------------------------------------------------
// Decoder oracle

type ErrorCode = ProtocolError['code'];

/** The frame rules of wire.ts, written out independently of checkHeader. */
export function headerProblem(type: number, length: number): ErrorCode | null {
  if (type === FrameType.Data) {
    if (length > MAX_PAYLOAD) return 'oversize';
    return length < MIN_IPV4_PACKET ? 'bad-length' : null;
  }
  if (type === FrameType.DataGso) {
    if (length > MAX_PAYLOAD) return 'oversize';
    return length < MIN_GSO_FRAME || length > MAX_PACKET + GSO_HEADER_BYTES ? 'bad-length' : null;
  }
  if (type === FrameType.Ping || type === FrameType.Pong) return length === PING_BYTES ? null : 'bad-length';
  if (CONTROL_SIZED.includes(type)) return length > MAX_CONTROL_PAYLOAD ? 'oversize' : null;
  return 'unknown-type';
}

interface Reference {
  frames: Array<{ start: number; end: number }>;
  error: { at: number; code: ErrorCode } | null;
  /** Bytes left over (a partial frame) when there is no error. */
  rest: number;
}

/** Decodes a whole stream the obvious way: what any split of it must produce. */
export function referenceDecode(stream: Buffer): Reference {
  const frames: Reference['frames'] = [];
  let pos = 0;
  while (stream.length - pos >= HEADER_BYTES) {
    const type = stream[pos]!;
    const length = (stream[pos + 1]! << 16) | (stream[pos + 2]! << 8) | stream[pos + 3]!;
    const problem = headerProblem(type, length);
    if (problem) return { frames, error: { at: pos, code: problem }, rest: 0 };
    const end = pos + HEADER_BYTES + length;
    if (end > stream.length) break;
    frames.push({ start: pos, end });
    pos = end;
  }
  return { frames, error: null, rest: stream.length - pos };
}

/** Largest buffer a decoder may hold: one maximal frame. */
export const MEMORY_BOUND = HEADER_BYTES + MAX_PAYLOAD;

export interface DecodeOutcome {
  frames: Buffer[];
  error: ProtocolError | null;
  reference: Reference;
}

/**
 * Feeds `stream` to a fresh FrameDecoder in the chunks given by `cuts` and checks it against the reference
 * after every push: only ProtocolError escapes, and exactly on the push that completes the bad header; every
 * frame is delivered on the push that completes it, byte for byte; delivered + buffered = pushed; nothing
 * above one maximal frame is ever held; a failed decoder keeps throwing the same error.
 */
export function checkDecoder(stream: Buffer, cuts: readonly number[]): DecodeOutcome {
  const reference = referenceDecode(stream);
  const decoder = new FrameDecoder();
  const frames: Buffer[] = [];
  let deliveredBytes = 0;
  let error: ProtocolError | null = null;
  let previous = 0;
  const onFrame = (frame: Buffer): void => {
    assert.ok(Buffer.isBuffer(frame), 'frame is not a Buffer');
    assert.ok(frame.length >= HEADER_BYTES && frame.length <= MEMORY_BOUND, `frame of ${frame.length} bytes`);
    const length = (frame[1]! << 16) | (frame[2]! << 8) | frame[3]!;
    assert.equal(frame.length, HEADER_BYTES + length, 'frame length disagrees with its header');
    assert.equal(headerProblem(frame[0]!, length), null, `invalid frame delivered: type ${frame[0]}, length ${length}`);
    const expected = reference.frames[frames.length];
    assert.ok(expected, `frame #${frames.length} delivered beyond the ${reference.frames.length} in the stream`);
    assert.ok(frame.equals(stream.subarray(expected.start, expected.end)), `frame #${frames.length} differs from the stream`);
    frames.push(frame);
    deliveredBytes += frame.length;
  };
  for (const cut of [...cuts, stream.length]) {
    const chunk = stream.subarray(previous, cut);
    previous = cut;
    if (error) {
      const failed = error;
      assert.throws(() => decoder.push(chunk, () => assert.fail('frame delivered after a failure')), (e) => e === failed,
        'a failed decoder must keep throwing its error');
      continue;
    }
    try {
      decoder.push(chunk, onFrame);
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        throw new Error(`an exception other than ProtocolError escaped push(): ${describeError(err)}`);
      }
      error = err;
      assert.ok(reference.error, `ProtocolError on a valid stream: ${err.code}: ${err.message}`);
      assert.equal(err.code, reference.error.code, `wrong error code (${err.message})`);
      const completes = reference.error.at + HEADER_BYTES;
      assert.ok(cut >= completes && cut - chunk.length < completes,
        `error thrown on the push ending at ${cut}, but the bad header ends at ${completes}`);
      assert.equal(frames.length, reference.frames.length, 'frames before the bad header were not all delivered');
      continue;
    }
    const buffered = decoder.buffered;
    assert.ok(buffered >= 0 && buffered <= MEMORY_BOUND, `buffered = ${buffered} exceeds ${MEMORY_BOUND}`);
    const held = (decoder as unknown as { partial?: unknown }).partial;
    if (Buffer.isBuffer(held)) assert.ok(held.length <= MEMORY_BOUND, `partial buffer of ${held.length} bytes`);
    assert.equal(deliveredBytes + buffered, cut, 'delivered + buffered bytes differ from the bytes pushed');
    const due = reference.frames.filter((f) => f.end <= cut).length;
    assert.equal(frames.length, due, `after ${cut} bytes: ${frames.length} frames delivered, ${due} complete`);
  }
  if (reference.error) {
    assert.ok(error, `no ProtocolError for the bad header at ${reference.error.at} (${reference.error.code})`);
  } else {
    assert.equal(frames.length, reference.frames.length);
    assert.equal(decoder.buffered, reference.rest, 'bytes of the trailing partial frame');
  }
  return { frames, error, reference };
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.constructor.name}: ${err.message}\n${err.stack ?? ''}`;
  return `non-Error value ${String(err)}`;
}

// ---------------------------------------------------------------------------------------------------
// Message oracles

const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const ADDRESS_RE = /^[0-9A-Fa-f.:]+$/;
const CAPABILITY_RE = /^[a-z0-9-]+$/;
const REJECT_CODES = ['version', 'bad-hello', 'pool-full', 'auth', 'busy', 'forbidden'];
const GOODBYE_CODES = ['shutdown', 'replaced', 'kicked', 'dead', 'protocol'];

/** Dotted-quad IPv4 without leading zeros, checked without the regex the code under test uses. */
export function isDottedIpv4(text: unknown): boolean {
  if (typeof text !== 'string') return false;
  const parts = text.split('.');
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isInt(v: unknown, min: number, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

function isDeviceId(v: unknown): boolean {
  return typeof v === 'string' && v.length >= 1 && v.length <= 128 && DEVICE_ID_RE.test(v);
}

function isStr(v: unknown, max: number): boolean {
  return typeof v === 'string' && v.length <= max;
}

function isList(v: unknown, maxItems: number, item: (x: unknown) => boolean): boolean {
  return Array.isArray(v) && v.length <= maxItems && v.every(item);
}

function present(source: Record<string, unknown>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(source, key) && source[key] !== null && source[key] !== undefined;
}

/** The parsed value must be what the source object said (or the documented default for an absent field). */
function sameAs(result: Record<string, unknown>, source: Record<string, unknown>, key: string, absent: unknown): void {
  const expected = present(source, key) ? source[key] : absent;
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(result[key]) && (result[key] as unknown[]).length === expected.length, `${key}: list differs`);
    (result[key] as unknown[]).forEach((x, i) => assert.ok(Object.is(x, expected[i]), `${key}[${i}] differs`));
  } else {
    assert.ok(Object.is(result[key], expected), `${key}: parsed ${String(result[key])}, sent ${String(expected)}`);
  }
}

/** Hostnames are not passed through but reduced to RFC 1123 form (names.ts): the sanitised value sent. */
function sameHostname(result: Record<string, unknown>, source: Record<string, unknown>): void {
  const expected = present(source, 'hostname') ? sanitizeHostname(source.hostname as string) : '';
  assert.equal(result.hostname, expected, 'hostname: not the sanitised value sent');
}

function ownKeysWithin(result: object, allowed: readonly string[], what: string): void {
  assert.equal(Object.getPrototypeOf(result), Object.prototype, `${what}: result prototype is not Object.prototype`);
  for (const key of Reflect.ownKeys(result)) {
    assert.ok(typeof key === 'string' && allowed.includes(key), `${what}: unexpected own key ${String(key)}`);
  }
}

function checkHelloResult(r: Record<string, unknown>, src: Record<string, unknown>): void {
  ownKeysWithin(r, ['version', 'deviceId', 'hostname', 'underlay', 'previousIp', 'auth', 'software', 'capabilities', 'discovery'], 'HELLO');
  assert.ok(isInt(r.version, 0, 0xffff), 'HELLO.version');
  assert.ok(isDeviceId(r.deviceId), 'HELLO.deviceId');
  assert.ok(r.hostname === '' || isDnsName(r.hostname as string), 'HELLO.hostname is RFC 1123 or empty');
  assert.ok(isList(r.underlay, 16, (a) => isStr(a, 45) && ADDRESS_RE.test(a as string)), 'HELLO.underlay');
  assert.ok(isList(r.capabilities, 32, (c) => isStr(c, 64) && CAPABILITY_RE.test(c as string)), 'HELLO.capabilities');
  assert.ok(r.previousIp === undefined || isDottedIpv4(r.previousIp), 'HELLO.previousIp');
  assert.ok(r.auth === undefined || isPlainObject(r.auth), 'HELLO.auth');
  assert.ok(r.software === undefined || isStr(r.software, 128), 'HELLO.software');
  for (const key of ['version', 'deviceId']) sameAs(r, src, key, undefined);
  sameHostname(r, src);
  sameAs(r, src, 'underlay', []);
  sameAs(r, src, 'capabilities', []);
  for (const key of ['previousIp', 'auth', 'software']) {
    // auth is handed on as the parsed object itself; compare identity-free: present iff sent.
    if (key === 'auth') assert.equal(r.auth !== undefined, present(src, 'auth'), 'HELLO.auth presence');
    else sameAs(r, src, key, undefined);
  }
}

function checkWelcomeResult(r: Record<string, unknown>, src: Record<string, unknown>): void {
  ownKeysWithin(r, ['ip', 'prefix', 'mtu', 'serverIp', 'keepaliveMs', 'deadAfterMs', 'capabilities', 'discovery'], 'WELCOME');
  assert.ok(isList(r.capabilities, 32, (c) => isStr(c, 64) && CAPABILITY_RE.test(c as string)), 'WELCOME.capabilities');
  sameAs(r, src, 'capabilities', []);
  assert.ok(isDottedIpv4(r.ip) && isDottedIpv4(r.serverIp), 'WELCOME addresses');
  assert.ok(isInt(r.prefix, 16, 30) && isInt(r.mtu, 576, 65535), 'WELCOME prefix/mtu');
  assert.ok(isInt(r.keepaliveMs, 100, 600_000) && isInt(r.deadAfterMs, 200, 3_600_000), 'WELCOME timers');
  assert.ok((r.deadAfterMs as number) >= 2 * (r.keepaliveMs as number), 'WELCOME deadAfterMs below twice keepaliveMs');
  // What the client will put on its TUN: two distinct unicast hosts of one subnet, never its edges.
  const mask = prefixMask(r.prefix as number);
  const [ip, server] = [ipv4ToInt(r.ip as string), ipv4ToInt(r.serverIp as string)];
  const network = (ip & mask) >>> 0;
  const broadcast = (network | ~mask) >>> 0;
  assert.ok(isUnicast(ip), 'WELCOME.ip not unicast');
  assert.ok(((server & mask) >>> 0) === network, 'WELCOME.serverIp outside the subnet');
  assert.ok(ip !== server && ![network, broadcast].includes(ip) && ![network, broadcast].includes(server), 'WELCOME edge addresses');
  for (const key of ['ip', 'prefix', 'mtu', 'serverIp', 'keepaliveMs', 'deadAfterMs']) sameAs(r, src, key, undefined);
}

function checkRejectResult(r: Record<string, unknown>, src: Record<string, unknown>): void {
  ownKeysWithin(r, ['code', 'reason', 'retryAfterMs'], 'REJECT');
  assert.ok(REJECT_CODES.includes(r.code as string), 'REJECT.code');
  assert.ok(isStr(r.reason, 512), 'REJECT.reason');
  assert.ok(r.retryAfterMs === undefined || isInt(r.retryAfterMs, 0, 3_600_000), 'REJECT.retryAfterMs');
  assert.ok(isStr(src.code, 32), 'REJECT.code accepted although not a string of ≤ 32 characters');
  assert.equal(r.code, REJECT_CODES.includes(src.code as string) ? src.code : 'forbidden', 'REJECT.code mapping');
  sameAs(r, src, 'reason', undefined);
  sameAs(r, src, 'retryAfterMs', undefined);
}

function checkGoodbyeResult(r: Record<string, unknown>, src: Record<string, unknown>): void {
  ownKeysWithin(r, ['code', 'reason', 'reconnectMs'], 'GOODBYE');
  assert.ok(GOODBYE_CODES.includes(r.code as string), 'GOODBYE.code');
  assert.ok(isStr(r.reason, 512), 'GOODBYE.reason');
  assert.ok(r.reconnectMs === undefined || isInt(r.reconnectMs, 0, 3_600_000), 'GOODBYE.reconnectMs');
  assert.ok(isStr(src.code, 32), 'GOODBYE.code accepted although not a string of ≤ 32 characters');
  assert.equal(r.code, GOODBYE_CODES.includes(src.code as string) ? src.code : 'shutdown', 'GOODBYE.code mapping');
  sameAs(r, src, 'reason', undefined);
  sameAs(r, src, 'reconnectMs', undefined);
}

function checkPeersResult(r: Record<string, unknown>, src: Record<string, unknown>): void {
  ownKeysWithin(r, ['reset', 'more', 'up', 'down'], 'PEERS');
  assert.ok(typeof r.reset === 'boolean' && typeof r.more === 'boolean', 'PEERS flags');
  sameAs(r, src, 'reset', false);
  sameAs(r, src, 'more', false);
  assert.ok(isList(r.down, Number.MAX_SAFE_INTEGER, isDeviceId), 'PEERS.down');
  sameAs(r, src, 'down', []);
  assert.ok(Array.isArray(r.up), 'PEERS.up');
  const sentUp = present(src, 'up') ? (src.up as unknown[]) : [];
  assert.equal((r.up as unknown[]).length, sentUp.length, 'PEERS.up length');
  (r.up as Array<Record<string, unknown>>).forEach((p, i) => {
    ownKeysWithin(p, ['deviceId', 'ip', 'hostname', 'underlay', 'since'], `PEERS.up[${i}]`);
    assert.ok(isDeviceId(p.deviceId) && isDottedIpv4(p.ip) && (p.hostname === '' || isDnsName(p.hostname as string)), `PEERS.up[${i}] fields`);
    assert.ok(isList(p.underlay, 16, (a) => isStr(a, 45) && ADDRESS_RE.test(a as string)), `PEERS.up[${i}].underlay`);
    assert.ok(isInt(p.since, 0, Number.MAX_SAFE_INTEGER), `PEERS.up[${i}].since`);
    const s = sentUp[i] as Record<string, unknown>;
    for (const key of ['deviceId', 'ip', 'since']) sameAs(p, s, key, undefined);
    sameHostname(p, s);
    sameAs(p, s, 'underlay', []);
  });
}

type Checker = (result: Record<string, unknown>, source: Record<string, unknown>) => void;

export const PARSERS: ReadonlyArray<{ name: string; parse: (payload: Buffer) => object; check: Checker }> = [
  { name: 'HELLO', parse: parseHello, check: checkHelloResult },
  { name: 'WELCOME', parse: parseWelcome, check: checkWelcomeResult },
  { name: 'REJECT', parse: parseReject, check: checkRejectResult },
  { name: 'PEERS', parse: parsePeerUpdate, check: checkPeersResult },
  { name: 'GOODBYE', parse: parseGoodbye, check: checkGoodbyeResult },
];

const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort().join(',');

/** Throws unless Object.prototype is exactly as it was when this module loaded. */
export function assertNoPollution(after: string): void {
  const probe = {} as { polluted?: unknown };
  assert.equal(probe.polluted, undefined, `Object.prototype polluted after ${after}`);
  assert.equal(Object.getOwnPropertyNames(Object.prototype).sort().join(','), PROTOTYPE_KEYS,
    `Object.prototype gained properties after ${after}`);
  assert.equal(Object.getPrototypeOf(probe), Object.prototype);
}

/**
 * Runs one parser on a payload: it returns a well-formed result that agrees with the JSON sent, or throws a
 * ProtocolError; nothing else, and the global prototype is untouched either way.
 */
export function checkParse(parser: (typeof PARSERS)[number], payload: Buffer): 'ok' | 'rejected' {
  let result: object;
  try {
    result = parser.parse(payload);
  } catch (err) {
    if (!(err instanceof ProtocolError)) {
      throw new Error(`parse${parser.name} let an exception other than ProtocolError escape: ${describeError(err)}`);
    }
    assert.ok(err.code === 'bad-json' || err.code === 'bad-message', `parse${parser.name}: unexpected code ${err.code}`);
    assertNoPollution(`a rejected ${parser.name}`);
    return 'rejected';
  }
  assertNoPollution(`an accepted ${parser.name}`);
  // Accepted, so the payload is a JSON object; parse it again as the oracle's view of what was sent.
  const source = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  assert.ok(isPlainObject(source), `parse${parser.name} accepted a non-object`);
  parser.check(result as Record<string, unknown>, source);
  return 'ok';
}

function checkAllParsers(payload: Buffer): void {
  for (const parser of PARSERS) checkParse(parser, payload);
}

// ---------------------------------------------------------------------------------------------------
// JSON fragments: JSON text described compactly, including what JSON.stringify of an object cannot make
// (own "__proto__" keys, duplicate keys, 20,000-deep nesting, 1e400, lone surrogates).

export type Fragment =
  | { j: fc.JsonValue }
  | { raw: string }
  | { huge: number; ch: string }
  | { deep: number; open: '[' | '{' }
  | { obj: Array<[string, Fragment]> }
  | { arr: Fragment[] }
  | { rep: number; of: Fragment };

export function fragmentText(f: Fragment): string {
  if ('j' in f) return JSON.stringify(f.j) ?? 'null';
  if ('raw' in f) return f.raw;
  if ('huge' in f) return JSON.stringify(f.ch.repeat(f.huge));
  if ('deep' in f) {
    return f.open === '[' ? '['.repeat(f.deep) + ']'.repeat(f.deep) : '{"a":'.repeat(f.deep) + '1' + '}'.repeat(f.deep);
  }
  if ('rep' in f) return `[${Array.from({ length: f.rep }, () => fragmentText(f.of)).join(',')}]`;
  if ('obj' in f) return `{${f.obj.map(([k, v]) => `${JSON.stringify(k)}:${fragmentText(v)}`).join(',')}}`;
  return `[${f.arr.map(fragmentText).join(',')}]`;
}

/**
 * One UTF-16 unit or astral character: controls, BMP, lone surrogates and astral planes. (fast-check's own
 * 'binary' unit builds an ~80 MiB table on first use, which would dwarf what this test measures.)
 */
const utf16UnitArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)) },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xffff }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)) },
);

const SPECIAL_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'polluted', ''];

const RAW_VALUES = [
  '1e400', '-1e400', '-0', '-1', '0.5', '1.0', '1e2', '65535', '65536', '4294967296', '9007199254740993', '-9007199254740993',
  'true', 'false', 'null', '""', '[]', '{}', '[null]', '[1]', '[""]', '"\\u0000"', '"\\ud800"', '"\\udfff\\ud800"',
  '"0.0.0.0"', '"255.255.255.255"', '"256.1.1.1"', '"01.2.3.4"', '"1.2.3"', '"1.2.3.4 "', '" 1.2.3.4"', '"1.2.3.4\\n"',
  '"1..2.3"', '"::1"', '"::ffff:10.0.0.1"', '"a"', '"A-b.c:d@e_f"', '"-x"', '"x y"', '"x\\u0000"', '"\\u212a"',
  '{"polluted":1}', '{"prototype":{"polluted":1}}', '{"__proto__":{"polluted":1}}',
];

const BOUNDARY_LENGTHS = [15, 16, 32, 33, 45, 46, 64, 65, 128, 129, 253, 254, 512, 513];

/** Lists of n copies of one (often valid) item, with n around the list limits (16 addresses, 32 capabilities). */
const repeatedArb: fc.Arbitrary<Fragment> = fc.record({
  rep: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1, 15, 16, 17, 31, 32, 33) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }) }),
  of: fc.oneof(
    fc.constantFrom('"10.0.0.1"', '"fe80::1"', '"cap-1"', '"dev-1"', '"A"', '1', 'null', '{}').map((raw): Fragment => ({ raw })),
    fc.record({ huge: fc.constantFrom(...BOUNDARY_LENGTHS), ch: fc.constantFrom('1', 'a', ':') }).map((x): Fragment => x),
  ),
});

export const fragmentArb: fc.Arbitrary<Fragment> = fc.letrec<{ frag: Fragment }>((tie) => ({
  frag: fc.oneof(
    { depthSize: 'small', maxDepth: 3, withCrossShrink: true },
    { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((j): Fragment => ({ j })) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2, stringUnit: utf16UnitArb }).map((j): Fragment => ({ j })) },
    { weight: 6, arbitrary: fc.constantFrom(...RAW_VALUES).map((raw): Fragment => ({ raw })) },
    {
      weight: 2,
      arbitrary: fc.record({
        huge: fc.oneof(
          { weight: 3, arbitrary: fc.constantFrom(...BOUNDARY_LENGTHS) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 60_000 }) },
        ),
        ch: fc.constantFrom('a', '1', '.', ':', '-', '\u00e9', '\u{1f600}', '\u0000', '"'),
      }).map((x): Fragment => x),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        deep: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 1000, max: 20_000 }) }),
        open: fc.constantFrom<'[' | '{'>('[', '{'),
      }).map((x): Fragment => x),
    },
    {
      weight: 3,
      arbitrary: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...SPECIAL_KEYS), fc.string({ maxLength: 8 })), tie('frag')), { maxLength: 4 })
        .map((obj): Fragment => ({ obj })),
    },
    { weight: 1, arbitrary: fc.array(tie('frag'), { maxLength: 4 }).map((arr): Fragment => ({ arr })) },
    { weight: 2, arbitrary: repeatedArb },
  ),
})).frag;

/** A JSON object as an ordered entry list, so it can hold own "__proto__" and duplicate keys. */
export type Entries = Array<[string, Fragment]>;

export function entriesText(entries: Entries): string {
  return fragmentText({ obj: entries });
}

export type Mutation =
  | { op: 'set'; key: string; value: Fragment }
  | { op: 'delete'; key: string }
  | { op: 'append'; key: string; value: Fragment };

export function mutate(entries: Entries, mutations: readonly Mutation[]): Entries {
  let out = entries.slice();
  for (const m of mutations) {
    if (m.op === 'delete') out = out.filter(([k]) => k !== m.key);
    else if (m.op === 'append' || !out.some(([k]) => k === m.key)) out.push([m.key, m.value]);
    else out = out.map(([k, v]) => [k, k === m.key ? m.value : v]);
  }
  return out;
}

const rawOf = (...texts: string[]): fc.Arbitrary<Fragment> => fc.constantFrom(...texts).map((raw): Fragment => ({ raw }));
const intsAround = (...edges: number[]): fc.Arbitrary<Fragment> => fc.oneof(
  { weight: 3, arbitrary: rawOf(...edges.map(String)) },
  { weight: 1, arbitrary: rawOf(...edges.flatMap((n) => [`${n}.5`, `"${n}"`]), 'null', 'true', '[]', '1e400') },
);
const hugeOf = (lengths: number[], chars: string[]): fc.Arbitrary<Fragment> =>
  fc.record({ huge: fc.constantFrom(...lengths), ch: fc.constantFrom(...chars) }).map((x): Fragment => x);
const repOf = (counts: number[], item: fc.Arbitrary<Fragment>): fc.Arbitrary<Fragment> =>
  fc.record({ rep: fc.constantFrom(...counts), of: item }).map((x): Fragment => x);
const IPV4_EDGES = rawOf('"0.0.0.0"', '"255.255.255.255"', '"256.0.0.1"', '"1.2.3.04"', '"1.2.3"', '"1.2.3.4.5"', '"1.2.3.4 "',
  '"1.2.3.4\\n"', '"١.٢.٣.٤"', '"+1.2.3.4"', '"1.2.3.-4"', '"::ffff:1.2.3.4"', '"10.0.0.1"', '1', '{}');
const DEVICE_ID_EDGES = fc.oneof(hugeOf([127, 128, 129], ['a', '0']),
  rawOf('""', '"-a"', '".a"', '"_a"', '"a b"', '"a/b"', '"a\\n"', '"é"', '"a.b:c@d-e_f"', '"A"'));

/**
 * Values just inside and just outside each field's documented limit: a random JSON value almost never
 * hits "exactly 17 valid addresses" or "a 46-character address", these do.
 */
const FIELD_EDGES: Readonly<Record<string, fc.Arbitrary<Fragment>>> = {
  version: intsAround(-1, 0, 1, 65535, 65536),
  deviceId: DEVICE_ID_EDGES,
  hostname: hugeOf([252, 253, 254], ['a', '\u00e9', '\u{1f600}']),
  underlay: fc.oneof(
    repOf([0, 15, 16, 17], rawOf('"10.0.0.1"', '"fe80::1"', '"::"')),
    repOf([1], fc.oneof(hugeOf([44, 45, 46], ['1', ':', 'f']), rawOf('"1.2.3.4/24"', '"g::1"', '"10.0.0.1 "', '""', '1', 'null'))),
  ),
  capabilities: fc.oneof(
    repOf([0, 31, 32, 33], rawOf('"cap"', '"a-1"')),
    repOf([1], fc.oneof(hugeOf([63, 64, 65], ['a', '-', '9']), rawOf('"Cap"', '"a_b"', '""', '"a b"', '1'))),
  ),
  previousIp: IPV4_EDGES,
  ip: IPV4_EDGES,
  serverIp: IPV4_EDGES,
  auth: fc.oneof(rawOf('{}', '[]', 'null', '"x"', '1', 'false', '{"__proto__":{"polluted":1}}'),
    fc.record({ deep: fc.constantFrom(1, 100, 10_000), open: fc.constant<'{'>('{') }).map((x): Fragment => x)),
  software: hugeOf([127, 128, 129], ['a', '\u{1f600}']),
  prefix: intsAround(0, 1, 32, 33),
  mtu: intsAround(575, 576, 65535, 65536),
  keepaliveMs: intsAround(99, 100, 600_000, 600_001),
  deadAfterMs: intsAround(199, 200, 3_600_000, 3_600_001),
  code: fc.oneof(rawOf(...[...REJECT_CODES, ...GOODBYE_CODES].map((c) => JSON.stringify(c)), '"AUTH"', '""'), hugeOf([32, 33], ['a'])),
  reason: hugeOf([511, 512, 513], ['a', '\u{1f600}']),
  retryAfterMs: intsAround(-1, 0, 3_600_000, 3_600_001),
  reconnectMs: intsAround(-1, 0, 3_600_000, 3_600_001),
  reset: rawOf('true', 'false', 'null', '0', '1', '"true"', '[]'),
  more: rawOf('true', 'false', 'null', '0', '1', '"false"', '{}'),
  down: fc.oneof(repOf([0, 1, 500], rawOf('"dev"', '"A.b"')), repOf([1], DEVICE_ID_EDGES)),
  up: fc.oneof(rawOf('[]', '{}', 'null', '[null]', '[[]]', '["p"]'),
    repOf([1, 300], rawOf('{"deviceId":"p","ip":"10.0.0.2","since":0}', '{"deviceId":"p","ip":"10.0.0.2"}'))),
  since: intsAround(-1, 0, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1),
};

function mutationsArb(fields: readonly string[], maxLength = 4): fc.Arbitrary<Mutation[]> {
  const edged = fields.filter((f) => FIELD_EDGES[f]);
  const edge = fc.constantFrom(...edged).chain((key) => FIELD_EDGES[key]!.map((value): Mutation => ({ op: 'set', key, value })));
  const key = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...fields) },
    { weight: 2, arbitrary: fc.constantFrom(...SPECIAL_KEYS) },
    { weight: 1, arbitrary: fc.string({ maxLength: 10 }) },
  );
  return fc.array(
    fc.oneof(
      { weight: 5, arbitrary: edge },
      { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), key, value: fragmentArb }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), key }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('append' as const), key, value: fragmentArb }) },
    ),
    { minLength: 1, maxLength },
  );
}

// Valid messages, as entry lists.

const devIdArb = fc.oneof(
  { weight: 5, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,30}$/) },
  { weight: 1, arbitrary: fc.constantFrom('a'.repeat(128), `Z${'.:@-_'.repeat(25)}12`) },
);
const j = (value: fc.JsonValue): Fragment => ({ j: value });
const addressArb = fc.oneof(fc.ipV4(), fc.ipV6().filter((a) => a.length <= 45 && ADDRESS_RE.test(a)));

function optionalEntry(key: string, arb: fc.Arbitrary<fc.JsonValue>): fc.Arbitrary<Entries> {
  return fc.option(arb, { nil: undefined }).map((v) => (v === undefined ? [] : [[key, j(v)]]));
}

export const validHelloArb: fc.Arbitrary<Entries> = fc.tuple(
  fc.record({
    version: fc.integer({ min: 0, max: 0xffff }),
    deviceId: devIdArb,
    hostname: fc.oneof(fc.string({ maxLength: 40 }), fc.constant('h'.repeat(253))),
    underlay: fc.array(addressArb, { maxLength: 16 }),
    capabilities: fc.array(fc.stringMatching(/^[a-z0-9-]{1,16}$/), { maxLength: 6 }),
  }).map((r) => Object.entries(r).map(([k, v]): [string, Fragment] => [k, j(v)])),
  optionalEntry('previousIp', fc.ipV4()),
  optionalEntry('auth', fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 })),
  optionalEntry('software', fc.string({ maxLength: 128 })),
).map(([base, ...rest]) => [...base, ...rest.flat()]);

/** A WELCOME a relay could send: a unicast /16../30, two distinct host addresses in it, sane timers. */
export const validWelcomeArb: fc.Arbitrary<Entries> = fc.tuple(
  fc.record({
    prefix: fc.integer({ min: 16, max: 30 }),
    base: fc.integer({ min: 1, max: 223 }).filter((first) => first !== 127).chain((first) => fc.tuple(fc.constant(first), fc.integer({ min: 0, max: 0xffffff }))),
    hosts: fc.tuple(fc.nat(), fc.nat()),
    mtu: fc.integer({ min: 576, max: 65535 }),
    keepaliveMs: fc.integer({ min: 100, max: 600_000 }),
    slack: fc.integer({ min: 0, max: 2_400_000 }),
  }).map((r) => {
    const size = 2 ** (32 - r.prefix);
    const network = (((r.base[0] << 24) | r.base[1]) & ~(size - 1)) >>> 0;
    const first = 1 + (r.hosts[0] % (size - 2));
    const second = 1 + ((first - 1 + 1 + (r.hosts[1] % (size - 3))) % (size - 2));
    const fields = {
      ip: intToIpv4(network + first),
      prefix: r.prefix,
      mtu: r.mtu,
      serverIp: intToIpv4(network + second),
      keepaliveMs: r.keepaliveMs,
      deadAfterMs: Math.min(3_600_000, 2 * r.keepaliveMs + r.slack),
    };
    return Object.entries(fields).map(([k, v]): [string, Fragment] => [k, j(v)]);
  }),
  optionalEntry('capabilities', fc.array(fc.stringMatching(/^[a-z0-9-]{1,16}$/), { maxLength: 6 })),
).map(([base, capabilities]) => [...base, ...capabilities]);

function codeReasonArb(codes: string[], timerKey: string): fc.Arbitrary<Entries> {
  return fc.tuple(
    fc.oneof(fc.constantFrom(...codes), fc.string({ maxLength: 32 })),
    fc.string({ maxLength: 80 }),
    optionalEntry(timerKey, fc.integer({ min: 0, max: 3_600_000 })),
  ).map(([code, reason, timer]): Entries => [['code', j(code)], ['reason', j(reason)], ...timer]);
}

const peerArb = fc.record({
  deviceId: devIdArb,
  ip: fc.ipV4(),
  hostname: fc.string({ maxLength: 20 }),
  underlay: fc.array(addressArb, { maxLength: 3 }),
  since: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});

export const validPeersArb: fc.Arbitrary<Entries> = fc.record({
  reset: fc.boolean(),
  more: fc.boolean(),
  up: fc.array(peerArb, { maxLength: 4 }),
  down: fc.array(devIdArb, { maxLength: 4 }),
}).map((r) => Object.entries(r).map(([k, v]): [string, Fragment] => [k, j(v)]));

const MESSAGES = [
  { parser: PARSERS[0]!, valid: validHelloArb, fields: ['version', 'deviceId', 'hostname', 'underlay', 'previousIp', 'auth', 'software', 'capabilities'] },
  { parser: PARSERS[1]!, valid: validWelcomeArb, fields: ['ip', 'prefix', 'mtu', 'serverIp', 'keepaliveMs', 'deadAfterMs', 'capabilities'] },
  { parser: PARSERS[2]!, valid: codeReasonArb(REJECT_CODES, 'retryAfterMs'), fields: ['code', 'reason', 'retryAfterMs'] },
  { parser: PARSERS[3]!, valid: validPeersArb, fields: ['reset', 'more', 'up', 'down'] },
  { parser: PARSERS[4]!, valid: codeReasonArb(GOODBYE_CODES, 'reconnectMs'), fields: ['code', 'reason', 'reconnectMs'] },
];

// Peer entries inside PEERS.up get mutated too, so the per-peer validator sees hostile values: valid peers
// around one peer with a single mutation (more would make nearly every list invalid for a boring reason).
const peerEntries = (p: Record<string, fc.JsonValue>): Entries => Object.entries(p).map(([k, v]): [string, Fragment] => [k, j(v)]);
const mutatedPeerListArb: fc.Arbitrary<Fragment> = fc.tuple(
  fc.array(peerArb, { maxLength: 3 }),
  peerArb,
  mutationsArb(['deviceId', 'ip', 'hostname', 'underlay', 'since'], 1),
  fc.nat(),
).map(([valid, peer, mutations, at]): Fragment => {
  const list: Fragment[] = valid.map((p): Fragment => ({ obj: peerEntries(p) }));
  list.splice(at % (list.length + 1), 0, { obj: mutate(peerEntries(peer), mutations) });
  return { arr: list };
});

// ---------------------------------------------------------------------------------------------------
// The cases

export const FUZZ_CASES: readonly FuzzCase[] = [
  {
    name: 'decoder: arbitrary byte streams, arbitrary splits → frames or ProtocolError, memory bounded',
    share: 0.26,
    property: () => fc.property(fc.array(anyPieceArb, { maxLength: 10 }), cutsArb, (pieces, cuts) => {
      const { stream, cuts: points } = materialize(pieces, cuts);
      checkDecoder(stream, points);
    }),
  },
  {
    name: 'decoder: valid frame sequences round-trip exactly for any split',
    share: 0.2,
    property: () => fc.property(fc.array(frameSpecArb, { maxLength: 10 }), cutsArb, (specs, cuts) => {
      const { stream, cuts: points } = materialize(specs.map((f): Piece => ({ k: 'frame', f })), cuts);
      const { frames, error } = checkDecoder(stream, points);
      assert.equal(error, null);
      assert.equal(frames.length, specs.length);
      specs.forEach((spec, i) => {
        assert.ok(frames[i]!.equals(encodeFrame(spec.type, payloadOf(spec))), `frame ${i} differs from encodeFrame`);
      });
    }),
  },
  {
    name: 'decoder: valid frames then garbage → every valid frame delivered, then ProtocolError',
    share: 0.14,
    property: () => fc.property(
      fc.array(frameSpecArb, { maxLength: 8 }),
      badHeaderArb,
      fc.nat({ max: 3 }),
      fc.array(anyPieceArb, { maxLength: 3 }),
      cutsArb,
      (specs, bad, headerBytes, after, cuts) => {
        // Sometimes only part of the bad header arrives: then nothing fails yet and it stays buffered.
        const truncated = headerBytes > 0 && after.length === 0;
        const badPiece: Piece = truncated
          ? { k: 'bytes', b: pieceBytes({ k: 'header', ...bad }).subarray(0, headerBytes) }
          : { k: 'header', ...bad };
        const pieces: Piece[] = [...specs.map((f): Piece => ({ k: 'frame', f })), badPiece, ...after];
        const { stream, cuts: points } = materialize(pieces, cuts);
        const { frames, error } = checkDecoder(stream, points);
        assert.equal(frames.length, specs.length, 'not every valid frame before the garbage was delivered');
        if (truncated) assert.equal(error, null);
        else assert.ok(error instanceof ProtocolError && error.code === headerProblem(bad.type, bad.length));
      },
    ),
  },
  {
    name: 'parsers: arbitrary bytes → result within limits or ProtocolError',
    share: 0.1,
    property: () => fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.string({ unit: utf16UnitArb, maxLength: 80 }).map((s) => new Uint8Array(Buffer.from(s, 'utf8'))),
        fc.tuple(fc.json({ maxDepth: 3 }), fc.nat()).map(([text, cut]) => new Uint8Array(Buffer.from(text.slice(0, cut % (text.length + 1))))),
        fc.tuple(fc.json({ maxDepth: 3 }), fc.uint8Array({ minLength: 1, maxLength: 4 }), fc.nat()).map(([text, junk, at]) => {
          const b = Buffer.from(text);
          const p = at % (b.length + 1);
          return new Uint8Array(Buffer.concat([b.subarray(0, p), junk, b.subarray(p)]));
        }),
      ),
      (bytes) => checkAllParsers(Buffer.from(bytes)),
    ),
  },
  {
    name: 'parsers: arbitrary JSON values → result within limits or ProtocolError',
    share: 0.1,
    property: () => fc.property(fragmentArb, (fragment) => checkAllParsers(Buffer.from(fragmentText(fragment), 'utf8'))),
  },
  {
    name: 'parsers: mutated valid HELLO (hostile values, huge strings, deep nesting, __proto__) → valid or ProtocolError',
    share: 0.12,
    property: () => fc.property(validHelloArb, mutationsArb(MESSAGES[0]!.fields), (entries, mutations) => {
      // The unmutated HELLO must be accepted, or the generator (or the parser) is wrong.
      assert.equal(checkParse(PARSERS[0]!, Buffer.from(entriesText(entries))), 'ok', 'a valid HELLO was rejected');
      checkParse(PARSERS[0]!, Buffer.from(entriesText(mutate(entries, mutations)), 'utf8'));
    }),
  },
  {
    name: 'parsers: mutated valid WELCOME/REJECT/PEERS/GOODBYE → valid or ProtocolError',
    share: 0.06,
    property: () => fc.property(
      fc.nat({ max: MESSAGES.length - 2 }).chain((i) => {
        const m = MESSAGES[i + 1]!;
        return fc.tuple(fc.constant(i + 1), m.valid, mutationsArb(m.fields), fc.option(mutatedPeerListArb, { nil: undefined, freq: 3 }));
      }),
      ([index, entries, mutations, hostileUp]) => {
        const m = MESSAGES[index]!;
        assert.equal(checkParse(m.parser, Buffer.from(entriesText(entries))), 'ok', `a valid ${m.parser.name} was rejected`);
        let mutated = mutate(entries, mutations);
        if (hostileUp && m.parser.name === 'PEERS') mutated = mutate(mutated, [{ op: 'set', key: 'up', value: hostileUp }]);
        checkParse(m.parser, Buffer.from(entriesText(mutated), 'utf8'));
      },
    ),
  },
  {
    name: 'parsers: __proto__ / constructor.prototype payloads never pollute Object.prototype',
    share: 0.02,
    property: () => fc.property(
      fc.constantFrom(...MESSAGES),
      fc.constantFrom('__proto__', 'constructor', 'prototype'),
      fc.constantFrom<Fragment>(
        { raw: '{"polluted":1}' },
        { raw: '{"prototype":{"polluted":1}}' },
        { raw: '{"__proto__":{"polluted":1}}' },
        { raw: '[{"__proto__":{"polluted":1}}]' },
      ),
      fc.nat({ max: 8 }),
      (message, key, value, where) => {
        // Put the hostile key at the top level, inside a field, or inside every PEERS.up entry.
        const field = message.fields[where % message.fields.length]!;
        const nested: Fragment = { obj: [[key, value]] };
        const base: Entries = [
          ...(message.parser.name === 'HELLO'
            ? [['version', j(1)], ['deviceId', j('d')], ['auth', nested]] as Entries
            : message.parser.name === 'PEERS'
              ? [['up', { arr: [{ obj: [['deviceId', j('p')], ['ip', j('10.0.0.2')], ['since', j(1)], [key, value]] }] }]] as Entries
              : []),
          [key, value],
          [field, nested],
        ];
        checkParse(message.parser, Buffer.from(entriesText(base)));
        // The same with the hostile key only at the top level of an otherwise valid message.
        checkParse(message.parser, Buffer.from(entriesText([[key, value], ...fc.sample(message.valid, { numRuns: 1, seed: where })[0]!])));
      },
    ),
  },
  {
    name: 'parsers: WELCOME at its subnet rules\' edges (prefix 15/16/30/31, network/broadcast/equal/outside/non-unicast addresses, deadAfterMs ≈ 2 × keepaliveMs) → refused exactly when a rule is broken',
    share: 0.04,
    property: () => fc.property(welcomeProbeArb, ({ probe, entries }) => {
      const text = entriesText(entries);
      const broken = welcomeRuleBroken(JSON.parse(text) as Record<string, unknown>);
      const outcome = checkParse(PARSERS[1]!, Buffer.from(text));
      assert.equal(outcome, broken ? 'rejected' : 'ok', `probe ${probe}: ${broken ?? 'no rule broken'}, but the WELCOME was ${outcome}`);
    }),
  },
  PEERS_BINARY_CASE,
];

// ---------------------------------------------------------------------------------------------------
// WELCOME's subnet rules at their edges. A random mutation almost never lands exactly on the network
// address of the subnet it announces, or on /31; these probes move one value of a sound WELCOME there.

type WelcomeProbe = 'prefix' | 'ip-network' | 'ip-broadcast' | 'server-network' | 'server-broadcast' | 'server-equal' |
  'server-outside' | 'not-unicast' | 'dead-edge';
const WELCOME_PROBES: readonly WelcomeProbe[] = ['prefix', 'ip-network', 'ip-broadcast', 'server-network', 'server-broadcast',
  'server-equal', 'server-outside', 'not-unicast', 'dead-edge'];

function entryValue(entries: Entries, key: string): fc.JsonValue | undefined {
  const entry = entries.find(([k]) => k === key)?.[1];
  return entry && 'j' in entry ? entry.j : undefined;
}

/** Dotted quad → integer, by arithmetic rather than ipv4.ts. */
function quad(text: string): number {
  return text.split('.').reduce((sum, part) => sum * 256 + Number(part), 0);
}

function dotted(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

export const welcomeProbeArb: fc.Arbitrary<{ probe: WelcomeProbe; entries: Entries }> = fc.tuple(
  validWelcomeArb, fc.constantFrom(...WELCOME_PROBES), fc.nat(),
).map(([entries, probe, n]) => {
  const ip = quad(entryValue(entries, 'ip') as string);
  const server = quad(entryValue(entries, 'serverIp') as string);
  const prefix = entryValue(entries, 'prefix') as number;
  const keepalive = entryValue(entries, 'keepaliveMs') as number;
  const size = 2 ** (32 - prefix);
  const network = ip - (ip % size);
  const set = (key: string, value: fc.JsonValue): Entries => mutate(entries, [{ op: 'set', key, value: j(value) }]);
  switch (probe) {
    case 'prefix': return { probe, entries: set('prefix', [15, 16, 30, 31][n % 4]!) };
    case 'ip-network': return { probe, entries: set('ip', dotted(network)) };
    case 'ip-broadcast': return { probe, entries: set('ip', dotted(network + size - 1)) };
    case 'server-network': return { probe, entries: set('serverIp', dotted(network)) };
    case 'server-broadcast': return { probe, entries: set('serverIp', dotted(network + size - 1)) };
    case 'server-equal': return { probe, entries: set('serverIp', dotted(ip)) };
    // Flipping the lowest network bit keeps the host part and leaves the subnet.
    case 'server-outside': {
      const flipped = Math.floor(server / size) % 2 === 0 ? server + size : server - size;
      return { probe, entries: set('serverIp', dotted(flipped)) };
    }
    case 'not-unicast': {
      // Both addresses move to the same first octet, so they stay in one subnet (prefix ≥ 16).
      const first = [0, 127, 224, 239, 240, 255][n % 6]!;
      const move = (a: number): string => dotted(first * 2 ** 24 + (a % 2 ** 24));
      return { probe, entries: mutate(entries, [{ op: 'set', key: 'ip', value: j(move(ip)) }, { op: 'set', key: 'serverIp', value: j(move(server)) }]) };
    }
    case 'dead-edge': return { probe, entries: set('deadAfterMs', 2 * keepalive - 1 + (n % 3)) };
  }
});

/** The WELCOME rules of messages.ts, restated without its code, over the parsed JSON: null when a relay may say this. */
export function welcomeRuleBroken(fields: Record<string, unknown>): string | null {
  const v = (key: string) => fields[key];
  const int = (x: unknown, min: number, max: number) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max;
  if (!isDottedIpv4(v('ip')) || !isDottedIpv4(v('serverIp'))) return 'address syntax';
  if (!int(v('prefix'), 16, 30)) return 'prefix outside 16..30';
  if (!int(v('mtu'), 576, 65535) || !int(v('keepaliveMs'), 100, 600_000) || !int(v('deadAfterMs'), 200, 3_600_000)) return 'range';
  if ((v('deadAfterMs') as number) < 2 * (v('keepaliveMs') as number)) return 'deadAfterMs below 2 × keepaliveMs';
  const [ip, server, size] = [quad(v('ip') as string), quad(v('serverIp') as string), 2 ** (32 - (v('prefix') as number))];
  const first = Math.floor(ip / 2 ** 24);
  if (first === 0 || first === 127 || first >= 224) return 'ip not unicast';
  const network = ip - (ip % size);
  if (server - (server % size) !== network) return 'serverIp outside the subnet';
  const edges = [network, network + size - 1];
  if (edges.includes(ip) || edges.includes(server) || ip === server) return 'edge or equal addresses';
  return null;
}

/** For the client's fuzz cases (packages/client/test/fuzz-cases.ts), which send these to a RelayClient. */
export const validRejectArb: fc.Arbitrary<Entries> = codeReasonArb(REJECT_CODES, 'retryAfterMs');
export const validGoodbyeArb: fc.Arbitrary<Entries> = codeReasonArb(GOODBYE_CODES, 'reconnectMs');
export const MESSAGE_FIELDS: Readonly<Record<'WELCOME' | 'REJECT' | 'PEERS' | 'GOODBYE', readonly string[]>> = {
  WELCOME: MESSAGES[1]!.fields,
  REJECT: MESSAGES[2]!.fields,
  PEERS: MESSAGES[3]!.fields,
  GOODBYE: MESSAGES[4]!.fields,
};
export { mutatedPeerListArb, mutationsArb };
