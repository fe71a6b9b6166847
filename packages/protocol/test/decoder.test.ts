import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, HEADER_BYTES, MAX_CONTROL_PAYLOAD, MAX_PAYLOAD,
  ProtocolError,
} from '../src';

/** Deterministic PRNG so a failing split pattern can be reproduced from the seed in the message. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 0x100000000;
  };
}

function sampleFrames(random: () => number, count: number): Buffer[] {
  const frames: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const kind = Math.floor(random() * 4);
    if (kind === 0) frames.push(encodeFrame(FrameType.Ping, randomBytes(8)));
    else if (kind === 1) frames.push(encodeJsonFrame(FrameType.Peers, { reset: false, up: [], down: [`d${i}`] }));
    else {
      // Sizes cover tiny, MTU-ish and maximum packets so header and body splits both happen.
      const sizes = [20, 21, 1400, 1500, 9000, 65535];
      const size = sizes[Math.floor(random() * sizes.length)]!;
      frames.push(encodeFrame(FrameType.Data, randomBytes(size)));
    }
  }
  return frames;
}

function decodeAll(stream: Buffer, cuts: number[]): Buffer[] {
  const decoder = new FrameDecoder();
  const out: Buffer[] = [];
  let last = 0;
  for (const cut of [...cuts, stream.length]) {
    decoder.push(stream.subarray(last, cut), (f) => out.push(Buffer.from(f)));
    last = cut;
  }
  assert.equal(decoder.buffered, 0, 'nothing may be left buffered after a whole stream');
  return out;
}

describe('FrameDecoder', () => {
  it('reassembles frames identically for random split points', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = rng(seed);
      const frames = sampleFrames(random, 1 + Math.floor(random() * 12));
      const stream = Buffer.concat(frames);
      const cuts = new Set<number>();
      const cutCount = Math.floor(random() * 20);
      for (let i = 0; i < cutCount; i++) cuts.add(Math.floor(random() * stream.length));
      const sorted = [...cuts].sort((a, b) => a - b);
      const out = decodeAll(stream, sorted);
      assert.equal(out.length, frames.length, `seed ${seed}: frame count`);
      out.forEach((f, i) => assert.ok(f.equals(frames[i]!), `seed ${seed}: frame ${i} differs`));
    }
  });

  it('reassembles frames fed one byte at a time', () => {
    const frames = sampleFrames(rng(7), 10).filter((f) => f.length < 10_000);
    const stream = Buffer.concat(frames);
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    const out = decodeAll(stream, cuts);
    assert.deepEqual(out.map((f) => f.toString('hex')), frames.map((f) => f.toString('hex')));
  });

  it('hands out frames inside one chunk as views, without copying', () => {
    const frames = [encodeFrame(FrameType.Data, randomBytes(100)), encodeFrame(FrameType.Data, randomBytes(60))];
    const chunk = Buffer.concat(frames);
    const views: Buffer[] = [];
    new FrameDecoder().push(chunk, (f) => views.push(f));
    assert.equal(views.length, 2);
    assert.equal(views[0]!.buffer, chunk.buffer);
    assert.equal(views[1]!.byteOffset, chunk.byteOffset + frames[0]!.length);
  });

  it('rejects an oversize frame from its header alone, before buffering the body', () => {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(((FrameType.Data << 24) | (MAX_PAYLOAD + 1)) >>> 0);
    const decoder = new FrameDecoder();
    assert.throws(() => decoder.push(header, () => assert.fail('no frame expected')),
      (e: unknown) => e instanceof ProtocolError && e.code === 'oversize');
    assert.equal(decoder.buffered, 0);
  });

  it('honours a smaller configured maximum', () => {
    const decoder = new FrameDecoder(1500);
    assert.throws(() => decoder.push(encodeFrame(FrameType.Data, Buffer.alloc(1501)), () => {}),
      (e: unknown) => e instanceof ProtocolError && e.code === 'oversize');
  });

  it('rejects unknown types, wrong PING sizes and oversize control frames with typed errors', () => {
    const cases: Array<[Buffer, string]> = [
      [Buffer.from([0x7f, 0, 0, 1, 0]), 'unknown-type'],
      [Buffer.from([FrameType.Ping, 0, 0, 4, 1, 2, 3, 4]), 'bad-length'],
      [Buffer.from([FrameType.Data, 0, 0, 3, 1, 2, 3]), 'bad-length'],
      [(() => { const b = Buffer.alloc(4); b.writeUInt32BE(((FrameType.Hello << 24) | (MAX_CONTROL_PAYLOAD + 1)) >>> 0); return b; })(), 'oversize'],
    ];
    for (const [bytes, code] of cases) {
      // Split inside the header too: the error must not depend on how bytes arrive.
      for (const split of [bytes.length, 2]) {
        const decoder = new FrameDecoder();
        assert.throws(() => {
          decoder.push(bytes.subarray(0, split), () => {});
          decoder.push(bytes.subarray(split), () => {});
        }, (e: unknown) => e instanceof ProtocolError && e.code === code, `${bytes.toString('hex')} → ${code}`);
      }
    }
  });

  it('stays failed after an error, so a desynchronised stream cannot resume', () => {
    const decoder = new FrameDecoder();
    assert.throws(() => decoder.push(Buffer.from([0xee, 0, 0, 0]), () => {}), ProtocolError);
    assert.throws(() => decoder.push(encodeFrame(FrameType.Ping, Buffer.alloc(8)), () => {}), ProtocolError);
  });

  it('delivers the frames before a bad one and never throws anything but ProtocolError on random input', () => {
    for (let seed = 1; seed <= 2000; seed++) {
      const random = rng(seed);
      const junk = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256)));
      const decoder = new FrameDecoder();
      try {
        decoder.push(junk, () => {});
      } catch (err) {
        assert.ok(err instanceof ProtocolError, `seed ${seed}: ${String(err)}`);
      }
    }
    const good = encodeFrame(FrameType.Ping, Buffer.alloc(8));
    const seen: number[] = [];
    assert.throws(() => new FrameDecoder().push(Buffer.concat([good, Buffer.from([0xee, 0, 0, 0])]), (f) => seen.push(f[0]!)));
    assert.deepEqual(seen, [FrameType.Ping]);
  });
});
