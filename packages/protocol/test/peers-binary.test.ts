import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  checkHeader, encodePeersBinary, FrameDecoder, FrameType, HEADER_BYTES, MAX_CONTROL_PAYLOAD, parseHello, parsePeersBinary, parseWelcome,
  ProtocolError, type PeerInfo, type PeerUpdate,
} from '../src';

const peer = (i: number, extra: Partial<PeerInfo> = {}): PeerInfo => ({
  deviceId: `dev-${i}`, ip: `10.0.${i >> 8}.${i & 255}`, hostname: `host-${i}`, underlay: ['192.168.1.10', 'fe80::1'], since: 1_700_000_000_000 + i, ...extra,
});

function decodeAll(frames: Buffer[]): PeerUpdate[] {
  const updates: PeerUpdate[] = [];
  for (const frame of frames) {
    new FrameDecoder().push(frame, (f) => {
      assert.equal(f[0], FrameType.PeersBin);
      updates.push(parsePeersBinary(f.subarray(HEADER_BYTES)));
    });
  }
  return updates;
}

const isBad = (e: unknown) => e instanceof ProtocolError && e.code === 'bad-message' && e.message.startsWith('PEERS_BIN');

describe('PEERS_BIN', () => {
  it('round-trips a snapshot in chunks below the control limit: reset on the first, more on all but the last', () => {
    const many = Array.from({ length: 3000 }, (_, i) => peer(i, { hostname: `${'h'.repeat(60)}.${'x'.repeat(60)}.example` }));
    const frames = encodePeersBinary(true, many, []);
    assert.ok(frames.length > 3, `${frames.length} frames`);
    for (const f of frames) {
      assert.ok(f.length - HEADER_BYTES <= 32 * 1024 && f.length - HEADER_BYTES <= MAX_CONTROL_PAYLOAD);
      checkHeader(f[0]!, f.length - HEADER_BYTES, MAX_CONTROL_PAYLOAD);
    }
    const updates = decodeAll(frames);
    assert.deepEqual(updates.map((u) => u.reset), updates.map((_, i) => i === 0));
    assert.deepEqual(updates.map((u) => u.more), updates.map((_, i) => i < updates.length - 1));
    assert.deepEqual(updates.flatMap((u) => u.up), many);
  });

  it('a delta carries joins and leaves; a one-peer change costs the same few dozen bytes whatever the network size', () => {
    const [frame] = encodePeersBinary(false, [peer(7)], ['dev-3']);
    assert.deepEqual(decodeAll([frame!]), [{ reset: false, more: false, up: [peer(7)], down: ['dev-3'] }]);
    const join = encodePeersBinary(false, [peer(1)], []);
    assert.equal(join.length, 1);
    // 4 header + 5 head + 10 fixed + 6 id + 7 hostname + 1 + 13 + 8 underlay (the JSON delta is ~170 bytes)
    assert.ok(join[0]!.length < 64, `${join[0]!.length} bytes`);
    const leave = encodePeersBinary(false, [], ['dev-1']);
    assert.ok(leave[0]!.length < 20, `${leave[0]!.length} bytes`);
  });

  it('frames are unpooled, so the same Buffer can be queued to every subscriber without a copy', () => {
    for (const f of [...encodePeersBinary(false, [peer(1)], []), ...encodePeersBinary(true, [peer(1), peer(2)], [])]) {
      assert.equal(f.byteOffset, 0);
      assert.equal(f.buffer.byteLength, f.length);
    }
  });

  it('an empty snapshot is one frame saying reset', () => {
    const frames = encodePeersBinary(true, [], []);
    assert.deepEqual(decodeAll(frames), [{ reset: true, more: false, up: [], down: [] }]);
  });

  it('refuses every truncation, trailing bytes, unknown flags and counts the frame cannot hold', () => {
    const payload = encodePeersBinary(false, [peer(1), peer(2)], ['dev-9'])[0]!.subarray(HEADER_BYTES);
    for (let cut = 0; cut < payload.length; cut++) assert.throws(() => parsePeersBinary(payload.subarray(0, cut)), isBad, `cut at ${cut}`);
    assert.throws(() => parsePeersBinary(Buffer.concat([payload, Buffer.from([0])])), /after the last entry/);
    const flags = Buffer.from(payload);
    flags[0] = 4;
    assert.throws(() => parsePeersBinary(flags), /unknown flags/);
    const counts = Buffer.from(payload);
    counts.writeUInt16BE(0xffff, 1);
    assert.throws(() => parsePeersBinary(counts), /cannot fit/);
  });

  it('holds entries to the limits of JSON PEERS: device IDs, underlay count and form; hostnames sanitised', () => {
    const good = encodePeersBinary(false, [peer(1)], [])[0]!.subarray(HEADER_BYTES);
    const idAt = 5 + 10 + 1;
    const badId = Buffer.from(good);
    badId[idAt] = 0x20; // "dev-1" → " ev-1"
    assert.throws(() => parsePeersBinary(badId), /up\[0\]\.deviceId .* is not a device ID/);
    const tooMany = encodePeersBinary(false, [peer(1, { underlay: [] })], [])[0]!.subarray(HEADER_BYTES);
    const raw = Buffer.from(tooMany);
    raw[raw.length - 1] = 17;
    assert.throws(() => parsePeersBinary(raw), /17 underlay addresses/);
    const evil = encodePeersBinary(false, [peer(1, { underlay: ['<script>'] })], [])[0]!.subarray(HEADER_BYTES);
    assert.throws(() => parsePeersBinary(evil), /underlay\[0\] is not an address/);
    const name = encodePeersBinary(false, [peer(1, { hostname: 'Evil\nHost 127.0.0.1' })], [])[0]!.subarray(HEADER_BYTES);
    assert.equal(parsePeersBinary(name).up[0]!.hostname, 'evil-host-127.0.0.1');
  });
});

describe('HELLO.discovery and WELCOME.discovery', () => {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const hello = { version: 1, deviceId: 'dev-1', underlay: [] };
  const welcome = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 1000, deadAfterMs: 3000 };

  it('HELLO takes auto, full, names or off, and names the field for anything else; absent stays absent', () => {
    for (const mode of ['auto', 'full', 'names', 'off']) assert.equal(parseHello(json({ ...hello, discovery: mode })).discovery, mode);
    assert.equal(parseHello(json(hello)).discovery, undefined);
    assert.throws(() => parseHello(json({ ...hello, discovery: 'all' })), /HELLO\.discovery: "all" is not one of auto, full, names, off/);
    assert.throws(() => parseHello(json({ ...hello, discovery: 1 })), /HELLO\.discovery: must be a string/);
  });

  it('WELCOME keeps a known granted mode and leaves out one a newer relay may send', () => {
    assert.equal(parseWelcome(json({ ...welcome, discovery: 'names' })).discovery, 'names');
    assert.equal(parseWelcome(json({ ...welcome, discovery: 'dns-only' })).discovery, undefined);
    assert.equal(parseWelcome(json(welcome)).discovery, undefined);
  });
});
