import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { copyIfPinning } from '@mnedc/link';
import { FrameDecoder, FrameType, parsePeersBinary, parsePeerUpdate, type PeerInfo, type PeerUpdate } from '@mnedc/protocol';
import { binaryEntry, buildFrames, flushWindowMs, grantDiscovery, PeerDirectory, type PeerFormat, type PeerSubscriber } from '../src';

class ManualTimer {
  pending: Array<() => void> = [];
  schedule(callback: () => void) {
    this.pending.push(callback);
    return { cancel: () => { this.pending = this.pending.filter((c) => c !== callback); } };
  }
  fire() {
    const due = this.pending;
    this.pending = [];
    due.forEach((c) => c());
  }
}

class Recorder implements PeerSubscriber {
  updates: PeerUpdate[] = [];
  frames = 0;
  bytes = 0;
  received: Buffer[] = [];
  /** What discoveryRoom says; Infinity = an idle queue. */
  room = Number.POSITIVE_INFINITY;
  constructor(readonly peerFormat: PeerFormat = 'json') {}
  discoveryRoom(): number {
    return this.room;
  }
  sendControl(frame: Buffer): void {
    this.frames++;
    this.bytes += frame.length;
    this.received.push(frame);
    new FrameDecoder().push(frame, (f) => {
      assert.equal(f[0], this.peerFormat === 'binary' ? FrameType.PeersBin : FrameType.Peers);
      this.updates.push(f[0] === FrameType.Peers ? parsePeerUpdate(f.subarray(4)) : parsePeersBinary(f.subarray(4)));
    });
  }
  /** The peer list these updates add up to. */
  list(): string[] {
    const ids = new Set<string>();
    for (const u of this.updates) {
      if (u.reset) ids.clear();
      u.up.forEach((p) => ids.add(p.deviceId));
      u.down.forEach((id) => ids.delete(id));
    }
    return [...ids].sort();
  }
}

const peer = (i: number): PeerInfo => ({ deviceId: `dev-${i}`, ip: `10.0.${i >> 8}.${i & 255}`, hostname: `host-${i}`, underlay: ['192.168.1.10'], since: i });

describe('PeerDirectory', () => {
  it('a snapshot reuses each peer\'s encoded entry, yet shows a changed peer as it is now', () => {
    for (const format of ['json', 'binary'] as const) {
      const timer = new ManualTimer();
      const directory = new PeerDirectory(timer);
      directory.join(peer(1), new Recorder(format));
      directory.join(peer(2));
      timer.fire();
      directory.join({ ...peer(2), hostname: 'renamed' });
      const late = new Recorder(format);
      directory.join(peer(3), late);
      timer.fire();
      const hostnames = late.updates.flatMap((u) => u.up.map((p) => `${p.deviceId}=${p.hostname}`)).sort();
      assert.deepEqual(hostnames, ['dev-1=host-1', 'dev-2=renamed', 'dev-3=host-3'], format);
    }
  });

  it('keeps each cached PEERS_BIN entry in memory of its own, never pinning a block of the allocation pool', () => {
    const info = peer(7);
    const entry = binaryEntry(info);
    assert.equal(entry.buffer.byteLength, entry.length);
    assert.equal(binaryEntry(info), entry, 'encoded once');
    assert.notEqual(binaryEntry({ ...info }), entry, 'a changed peer is a new PeerInfo, encoded anew');
  });

  it('coalesces longer with more subscribers, since a flush costs a write per subscriber', () => {
    assert.equal(flushWindowMs(100, 0), 100);
    assert.equal(flushWindowMs(100, 100), 100);
    assert.equal(flushWindowMs(100, 1000), 500);
    assert.equal(flushWindowMs(100, 100_000), 2000, 'never slower than 2 s');
    const delays: number[] = [];
    const directory = new PeerDirectory({ schedule: (_callback, delayMs) => {
      delays.push(delayMs);
      return { cancel: () => undefined };
    } });
    const silent: PeerSubscriber = { sendControl: () => undefined };
    directory.join(peer(1), silent);
    directory.flush();
    for (let i = 2; i <= 1000; i++) directory.join(peer(i), { sendControl: () => undefined });
    directory.flush();
    directory.join(peer(1001));
    assert.deepEqual([delays[0], delays.at(-1)], [100, 500], 'the window at 1 and at 1,000 subscribers');
  });

  it('gives a newcomer a snapshot and existing subscribers a delta', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const first = new Recorder();
    directory.join(peer(1), first);
    timer.fire();
    assert.deepEqual(first.updates.map((u) => [u.reset, u.more, u.up.length]), [[true, false, 1]]);
    const second = new Recorder();
    directory.join(peer(2), second);
    timer.fire();
    assert.deepEqual(second.updates[0]!.up.map((p) => p.deviceId).sort(), ['dev-1', 'dev-2']);
    assert.equal(second.updates.length, 1, 'newcomer gets no separate delta');
    assert.deepEqual(first.updates[1], { reset: false, more: false, up: [peer(2)], down: [] });
    directory.leave('dev-2', second);
    timer.fire();
    assert.deepEqual(first.updates[2], { reset: false, more: false, up: [], down: ['dev-2'] });
    assert.equal(second.updates.length, 1, 'a leaving subscriber hears nothing more');
  });

  it('coalesces a thousand simultaneous joins into a few frames per subscriber', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const veteran = new Recorder();
    directory.join(peer(0), veteran);
    timer.fire();
    const newcomers = Array.from({ length: 1000 }, () => new Recorder());
    newcomers.forEach((r, i) => directory.join(peer(i + 1), r));
    assert.equal(timer.pending.length, 1, 'one flush scheduled for the whole burst');
    timer.fire();
    // ~100 bytes per peer in 32 KiB chunks: a handful of frames, not a thousand.
    assert.ok(veteran.frames - 1 <= 6, `veteran got ${veteran.frames - 1} frames`);
    assert.equal(veteran.updates.slice(1).reduce((n, u) => n + u.up.length, 0), 1000);
    for (const r of newcomers) {
      assert.ok(r.frames <= 6);
      assert.equal(r.updates.reduce((n, u) => n + u.up.length, 0), 1001);
      assert.equal(r.updates[0]!.reset, true);
      assert.deepEqual(r.updates.map((u) => u.more), r.updates.map((_, i) => i < r.updates.length - 1));
    }
    assert.ok(directory.framesSent < 1001 * 7, `${directory.framesSent} frames in all`);
  });

  it('a join and leave inside one window reach others as a single leave', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const watcher = new Recorder();
    directory.join(peer(1), watcher);
    timer.fire();
    directory.join(peer(2));
    directory.leave('dev-2');
    timer.fire();
    assert.deepEqual(watcher.updates[1], { reset: false, more: false, up: [], down: ['dev-2'] });
  });

  it('splits large updates into frames below the control limit', () => {
    const many = Array.from({ length: 3000 }, (_, i) => ({ ...peer(i), hostname: 'h'.repeat(200) }));
    const frames = buildFrames(true, many, []);
    assert.ok(frames.length > 1);
    for (const f of frames) assert.ok(f.length <= 33 * 1024);
    const parsed = frames.map((f) => parsePeerUpdate(f.subarray(4)));
    assert.equal(parsed.reduce((n, u) => n + u.up.length, 0), 3000);
    assert.equal(parsed.filter((u) => u.reset).length, 1);
  });

  it('builds each window\'s frames once per format and queues the same unpooled Buffers to every subscriber', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const subscribers = Array.from({ length: 200 }, (_, i) => new Recorder(i % 2 === 0 ? 'binary' : 'json'));
    subscribers.forEach((r, i) => directory.join(peer(i), r));
    timer.fire();
    directory.join(peer(999));
    timer.fire();
    for (const format of ['binary', 'json'] as const) {
      const group = subscribers.filter((r) => r.peerFormat === format);
      const first = group[0]!;
      assert.equal(first.list().length, 201);
      for (const r of group) {
        assert.equal(r.received.length, first.received.length);
        // The snapshot and the delta: the very same objects, and whole backing stores the link will not copy.
        r.received.forEach((frame, i) => assert.equal(frame, first.received[i]));
      }
      for (const frame of first.received) assert.equal(copyIfPinning(frame), frame, 'a shared frame is not copied per device');
    }
    const binary = subscribers[0]!;
    const json = subscribers[1]!;
    assert.ok(binary.bytes < json.bytes / 2, `binary ${binary.bytes} bytes, JSON ${json.bytes}`);
  });

  it('one join costs each subscriber the same bytes at 100 and at 1,000 subscribers', () => {
    const perJoin = (n: number, format: PeerFormat): number => {
      const timer = new ManualTimer();
      const directory = new PeerDirectory(timer);
      const subscribers = Array.from({ length: n }, () => new Recorder(format));
      subscribers.forEach((r, i) => directory.join(peer(i), r));
      timer.fire();
      const before = subscribers.map((r) => r.bytes);
      directory.join(peer(n + 1));
      timer.fire();
      const costs = new Set(subscribers.map((r, i) => r.bytes - before[i]!));
      assert.equal(costs.size, 1);
      return [...costs][0]!;
    };
    for (const format of ['binary', 'json'] as const) {
      // Peer n+1's own ID and address are one character longer at 1,000 ("dev-1001"): allow that much.
      const small = perJoin(100, format);
      const large = perJoin(1000, format);
      assert.ok(Math.abs(large - small) <= 4 && small < 200, `${format}: ${small} bytes at 100, ${large} at 1,000`);
    }
  });

  it('a congested subscriber gets nothing until it drains, then its waiting deltas in order', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const slow = new Recorder('binary');
    directory.join(peer(0), slow);
    timer.fire();
    slow.room = 0;
    directory.join(peer(1));
    timer.fire();
    directory.leave('dev-0');
    directory.join(peer(2));
    timer.fire();
    assert.equal(slow.updates.length, 1, 'nothing queued while congested');
    assert.equal(directory.waitingCount, 1);
    directory.drained(slow);
    assert.equal(slow.updates.length, 1, 'still congested');
    slow.room = Number.POSITIVE_INFINITY;
    directory.drained(slow);
    assert.equal(directory.waitingCount, 0);
    assert.equal(slow.updates.length, 3);
    assert.deepEqual(slow.list(), ['dev-1', 'dev-2']);
    assert.equal(directory.resyncs, 0);
  });

  it('a subscriber congested through a join storm drops its deltas and gets one fresh snapshot once it drains', () => {
    const timer = new ManualTimer();
    const directory = new PeerDirectory(timer);
    const slow = new Recorder('binary');
    const fast = new Recorder('binary');
    directory.join(peer(0), slow);
    directory.join(peer(1), fast);
    timer.fire();
    slow.room = 0;
    for (let wave = 0; wave < 20; wave++) {
      for (let i = 0; i < 100; i++) directory.join(peer(2 + wave * 100 + i));
      if (wave % 3 === 0) directory.leave(`dev-${2 + wave * 100}`);
      timer.fire();
    }
    assert.equal(slow.updates.length, 1);
    assert.equal(directory.resyncs, 1, 'its backlog outgrew the bound once; later deltas are not kept');
    slow.room = 1e9;
    directory.retry(); // the sweep: the socket may never say 'drain'
    assert.equal(slow.updates.length, 1, 'the snapshot comes with the next flush');
    timer.fire();
    assert.equal(slow.updates.filter((u) => u.reset).length, 2);
    assert.deepEqual(slow.list(), fast.list());
    assert.equal(slow.list().length, [...directory.list()].length);
    directory.join(peer(5000));
    timer.fire();
    assert.deepEqual(slow.list(), fast.list(), 'and deltas again afterwards');
  });

  it('grants what a device asks for; auto is full up to discovery_full_max, names above; older clients get the list', () => {
    assert.equal(grantDiscovery(undefined, 50_000, 1000), 'full');
    assert.equal(grantDiscovery('auto', 1000, 1000), 'full');
    assert.equal(grantDiscovery('auto', 1001, 1000), 'names');
    assert.equal(grantDiscovery('full', 50_000, 1000), 'full');
    assert.equal(grantDiscovery('names', 1, 1000), 'names');
    assert.equal(grantDiscovery('off', 1, 1000), 'off');
  });
});
