import { intToIpv4, ipv4ToInt } from './ipv4';
import { isValidDeviceId, isUnderlayAddress, LIMITS, type PeerInfo, type PeerUpdate } from './messages';
import { sanitizeHostname } from './names';
import { FrameType, HEADER_BYTES, MAX_CONTROL_PAYLOAD, ProtocolError, writeHeader } from './wire';

/**
 * PEERS_BIN (0x06): the compact discovery frame of capability "peers-bin"; the byte layout is in wire.ts
 * (DISCOVERY). Binary rather than gzip'd JSON: an entry costs ~25 bytes plus its names with no
 * compression state, so a one-peer delta stays a few dozen bytes; the relay builds it without zlib CPU on
 * its event loop; and the client checks every length against the bytes it holds before reading, so a
 * hostile relay cannot make it inflate a bomb or allocate beyond the frame.
 */

const FLAG_RESET = 1;
const FLAG_MORE = 2;
const HEAD_BYTES = 5;
/** Payload bytes per frame: a snapshot of any size goes in frames well below the control limit. */
export const PEERS_BIN_CHUNK = Math.min(32 * 1024, MAX_CONTROL_PAYLOAD - 1024);
/** The largest up/down count a frame may state (u16). */
const MAX_COUNT = 0xffff;

/**
 * A frame in memory of its own, never a slice of Node's shared allocation pool: the same Buffer is queued
 * to every subscriber, and a pool slice would be copied per device (send-budget.ts copyIfPinning).
 */
export function unpooledFrame(type: FrameType, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafeSlow(HEADER_BYTES + payload.length);
  writeHeader(frame, 0, type, payload.length);
  payload.copy(frame, HEADER_BYTES);
  return frame;
}

function ascii(text: string, max: number): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  if (bytes.length > max) throw new RangeError(`"${text.slice(0, 40)}" is longer than ${max} bytes`);
  return bytes;
}

/** One up entry: ip u32, since u48, deviceId, hostname, underlay count and addresses (u8 lengths). */
export function encodePeerEntry(info: PeerInfo): Buffer {
  const parts = [ascii(info.deviceId, LIMITS.deviceIdLength), ascii(info.hostname, LIMITS.hostnameLength)];
  const underlay = info.underlay.slice(0, LIMITS.underlayAddresses).map((a) => ascii(a, LIMITS.addressLength));
  const size = 10 + 1 + parts[0]!.length + 1 + parts[1]!.length + 1 + underlay.reduce((n, a) => n + 1 + a.length, 0);
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32BE(ipv4ToInt(info.ip), 0);
  out.writeUIntBE(Math.max(0, Math.min(info.since, 2 ** 48 - 1)), 4, 6);
  let at = 10;
  for (const part of parts) {
    out[at++] = part.length;
    at += part.copy(out, at);
  }
  out[at++] = underlay.length;
  for (const a of underlay) {
    out[at++] = a.length;
    at += a.copy(out, at);
  }
  return out;
}

function encodeDown(deviceId: string): Buffer {
  const id = ascii(deviceId, LIMITS.deviceIdLength);
  return Buffer.concat([Buffer.from([id.length]), id]);
}

/**
 * A peer update as PEERS_BIN frames of at most PEERS_BIN_CHUNK payload bytes; a snapshot (reset) says
 * reset on its first frame and more on all but its last. Each frame is unpooled (shared by every receiver).
 * `entry` may hand back an up entry encoded earlier (the relay caches them: a snapshot is then copies).
 */
export function encodePeersBinary(reset: boolean, up: readonly PeerInfo[], down: readonly string[],
  entry: (info: PeerInfo) => Buffer = encodePeerEntry): Buffer[] {
  const chunks: Array<{ up: Buffer[]; down: Buffer[] }> = [];
  let current = { up: [] as Buffer[], down: [] as Buffer[] };
  let bytes = HEAD_BYTES;
  const add = (entry: Buffer, into: 'up' | 'down'): void => {
    const list = current[into];
    if ((bytes + entry.length > PEERS_BIN_CHUNK || list.length === MAX_COUNT) && bytes > HEAD_BYTES) {
      chunks.push(current);
      current = { up: [], down: [] };
      bytes = HEAD_BYTES;
    }
    current[into].push(entry);
    bytes += entry.length;
  };
  for (const info of up) add(entry(info), 'up');
  for (const id of down) add(encodeDown(id), 'down');
  chunks.push(current);
  return chunks.map((chunk, i) => {
    const head = Buffer.alloc(HEAD_BYTES);
    head[0] = (reset && i === 0 ? FLAG_RESET : 0) | (reset && i < chunks.length - 1 ? FLAG_MORE : 0);
    head.writeUInt16BE(chunk.up.length, 1);
    head.writeUInt16BE(chunk.down.length, 3);
    return unpooledFrame(FrameType.PeersBin, Buffer.concat([head, ...chunk.up, ...chunk.down]));
  });
}

/** Reads with every length checked against the bytes there are: a hostile frame is a ProtocolError. */
class Reader {
  at = 0;
  constructor(private readonly bytes: Buffer) {}

  fail(problem: string): never {
    throw new ProtocolError('bad-message', `PEERS_BIN at byte ${this.at}: ${problem}`);
  }

  need(count: number, what: string): void {
    if (this.at + count > this.bytes.length) this.fail(`${what} runs past the end of the frame (${this.bytes.length} bytes)`);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.at++]!;
  }

  uint(size: number, what: string): number {
    this.need(size, what);
    const value = this.bytes.readUIntBE(this.at, size);
    this.at += size;
    return value;
  }

  text(what: string, max: number): string {
    const length = this.u8(`${what} length`);
    if (length > max) this.fail(`${what} of ${length} bytes (max ${max})`);
    this.need(length, what);
    const value = this.bytes.toString('latin1', this.at, this.at + length);
    this.at += length;
    return value;
  }

  deviceId(what: string): string {
    const id = this.text(what, LIMITS.deviceIdLength);
    if (!isValidDeviceId(id)) this.fail(`${what} ${JSON.stringify(id.slice(0, 40))} is not a device ID`);
    return id;
  }
}

/** A PEERS_BIN payload as the PeerUpdate it stands for, held to the same limits as JSON PEERS. */
export function parsePeersBinary(payload: Buffer): PeerUpdate {
  const r = new Reader(payload);
  const flags = r.u8('flags');
  if (flags & ~(FLAG_RESET | FLAG_MORE)) r.fail(`unknown flags 0x${flags.toString(16)}`);
  const upCount = r.uint(2, 'up count');
  const downCount = r.uint(2, 'down count');
  // Each entry takes at least 14 (up) or 2 (down) bytes: counts the frame cannot hold fail before any work.
  if (upCount * 14 + downCount * 2 > payload.length - HEAD_BYTES) r.fail(`${upCount} up and ${downCount} down entries cannot fit ${payload.length} bytes`);
  const up: PeerInfo[] = [];
  for (let i = 0; i < upCount; i++) {
    const ip = intToIpv4(r.uint(4, `up[${i}].ip`));
    const since = r.uint(6, `up[${i}].since`);
    const deviceId = r.deviceId(`up[${i}].deviceId`);
    const hostname = sanitizeHostname(r.text(`up[${i}].hostname`, LIMITS.hostnameLength));
    const addresses = r.u8(`up[${i}].underlay count`);
    if (addresses > LIMITS.underlayAddresses) r.fail(`up[${i}] has ${addresses} underlay addresses (max ${LIMITS.underlayAddresses})`);
    const underlay: string[] = [];
    for (let a = 0; a < addresses; a++) {
      const address = r.text(`up[${i}].underlay[${a}]`, LIMITS.addressLength);
      if (!isUnderlayAddress(address)) r.fail(`up[${i}].underlay[${a}] is not an address`);
      underlay.push(address);
    }
    up.push({ deviceId, ip, hostname, underlay, since });
  }
  const down: string[] = [];
  for (let i = 0; i < downCount; i++) down.push(r.deviceId(`down[${i}]`));
  if (r.at !== payload.length) r.fail(`${payload.length - r.at} bytes after the last entry`);
  return { reset: (flags & FLAG_RESET) !== 0, more: (flags & FLAG_MORE) !== 0, up, down };
}
