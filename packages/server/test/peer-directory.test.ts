import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { FrameDecoder, parsePeerUpdate, type PeerInfo, type PeerUpdate } from '@mnedc/protocol';
import { buildFrames, PeerDirectory, type PeerSubscriber } from '../src';

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
  sendControl(frame: Buffer): void {
    this.frames++;
    new FrameDecoder().push(frame, (f) => this.updates.push(parsePeerUpdate(f.subarray(4))));
  }
}

const peer = (i: number): PeerInfo => ({ deviceId: `dev-${i}`, ip: `10.0.${i >> 8}.${i & 255}`, hostname: `host-${i}`, underlay: ['192.168.1.10'], since: i });

describe('PeerDirectory', () => {
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
});
