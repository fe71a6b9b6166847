/**
 * Plays the relay to a real RelayClient without a network, for the client's fuzz cases (fuzz-cases.ts):
 * a fake TLS socket handed over through ClientDeps.openTunnel, bytes fed through the client's onData
 * callback exactly as secure.ts does (one reused 16 KiB read buffer, overwritten after every call), and a
 * model of what the client must do with each frame, checked after every chunk.
 *
 * Everything runs synchronously: timers the client arms (handshake, keepalive, retry) never fire during a
 * run; the harness plays the retry timer itself and checks that stop() leaves none behind.
 */
import { strict as assert } from 'node:assert';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import pino from 'pino';
import {
  CAPABILITY_GSO, CAPABILITY_PEERS_BIN, formatJoin, FrameType, frameName, HEADER_BYTES, parseGoodbye, parseHello, PING_BYTES, type PeerInfo,
} from '@mnedc/protocol';
import { referenceDecode } from '@mnedc/protocol/dist/test/fuzz-cases';
import { Backoff, parseClientConfig, RelayClient, RetryPolicy, retryDelay, type ClientState, type FailureKind } from '../src';
import { FakeDevice } from './fake-device';
import { CONFIGURE_FAILURE, type DeviceFault, Model, type RunPlan, SELF_ID, WRITE_FAILURE } from './fuzz-model';

export { SELF_ID, type DeviceFault, type RunPlan, type SessionPlan } from './fuzz-model';

const SERVER = '192.0.2.1:3334';
const CERT = Buffer.from('a certificate only its fingerprint matters for'.repeat(4));
const JOIN = formatJoin({ fingerprint: createHash('sha256').update(CERT).digest(), secret: Buffer.alloc(32, 7) });
const CONFIG = parseClientConfig(`[client]\nserver = ${SERVER}\njoin = ${JOIN}\ndevice_id = ${SELF_ID}\n`, 'fuzz.ini');
const CREDENTIALS = { join: CONFIG.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey };
/** Node's onread buffer in secure.ts: what one callback can hand over at most. */
const READ_BYTES = 16 * 1024;
const READ = Buffer.allocUnsafe(READ_BYTES);
const STATES: readonly ClientState[] = ['connecting', 'connected', 'waiting', 'stopped'];

/** A discarding log destination at the daemon's level, so hostile strings do go through the serialiser. */
const LOG = pino({ level: 'info' }, { write: () => undefined });

/** The parts of TLSSocket the client uses, recording what it writes. */
export class FakeSocket extends EventEmitter {
  destroyed = false;
  writableEnded = false;
  closed = false;
  readonly writableLength = 0;
  readonly written: Buffer[] = [];
  /** Writes after end() or destroy(): on a real socket each is an error event. */
  lateWrites = 0;

  constructor(readonly remoteAddress: string | undefined, private readonly cert: Buffer) {
    super();
  }

  setNoDelay(): this { return this; }
  cork(): void {}
  uncork(): void {}
  write(data: Buffer): boolean {
    if (this.writableEnded || this.destroyed) this.lateWrites++;
    this.written.push(Buffer.from(data));
    return true;
  }
  end(data?: Buffer): this {
    if (data) this.write(data);
    this.writableEnded = true;
    return this;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
  getPeerCertificate(): { raw: Buffer } { return { raw: this.cert }; }
  exportKeyingMaterial(length: number): Buffer { return Buffer.alloc(length, 0x5a); }
  /** What the real socket emits on a later tick after destroy() or the relay's close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    this.emit('close', false);
  }
}

class FuzzDevice extends FakeDevice {
  constructor(vnet: boolean, private readonly fault: DeviceFault) {
    super(vnet);
  }
  override configure(cfg: { address?: string; prefix?: number; mtu?: number }): void {
    if (this.fault === 'configure') throw new Error(CONFIGURE_FAILURE);
    super.configure(cfg);
  }
  override writeBatch(packets: readonly Buffer[], count?: number, kinds?: Uint8Array): number {
    if (this.fault === 'write') throw new Error(WRITE_FAILURE);
    return super.writeBatch(packets, count, kinds);
  }
}

/** Retry policy whose last scheduled delay and failure kind the harness can see. */
class SeenRetry extends RetryPolicy {
  last = -1;
  lastKind: FailureKind | null = null;
  constructor() {
    super(new Backoff(250, 1_000, () => 0.5), new Backoff(1_000, 300_000, () => 0.5));
  }
  override next(kind: FailureKind, hintMs: number | null = null): number {
    this.lastKind = kind;
    this.last = (kind === 'mistake' ? this.mistake : this.outage).next();
    return retryDelay(this.last, hintMs);
  }
}

interface ClientInternals {
  retryTimer: NodeJS.Timeout | null;
  connect(): void;
}

/** Node ≥ 17.3 has it; @types/node 18 does not declare it. */
function activeTimers(): number {
  const info = (process as unknown as { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo();
  return info.filter((r) => r === 'Timeout').length;
}

/** Each read the client gets: the plan's cuts, then at most 16 KiB at a time as TLS hands them over. */
function reads(length: number, cuts: readonly number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let from = 0;
  for (const cut of [...cuts, length]) {
    for (let at = from; at < cut; at += READ_BYTES) out.push([at, Math.min(cut, at + READ_BYTES)]);
    from = Math.max(from, cut);
  }
  return out;
}

export interface RunOutcome {
  model: Model;
  client: RelayClient;
  device: FakeDevice;
}

/** Runs one plan against a fresh RelayClient and checks it after every read; throws on any violation. */
export function runClient(plan: RunPlan): RunOutcome {
  const timersBefore = activeTimers();
  const device = new FuzzDevice(plan.vnet, plan.fault);
  const backoff = new SeenRetry();
  const model = new Model(plan);
  const sockets: FakeSocket[] = [];
  let onData: ((chunk: Buffer) => void) | undefined;
  let leaseCalls = 0;
  const client = new RelayClient({
    config: CONFIG, log: LOG, deviceId: SELF_ID, hostname: 'fuzz', underlay: () => ['192.168.7.7'], device,
    credentials: CREDENTIALS, previousIp: plan.previousIp, onLease: () => leaseCalls++, retry: backoff,
    openTunnel: (_host, _port, callback) => {
      onData = callback;
      const socket = new FakeSocket(plan.relay, CERT);
      sockets.push(socket);
      return socket as unknown as TLSSocket;
    },
  });
  // The discovery hand-off sees only events: their sum must be the table.
  const seen = new Map<string, string>();
  // Listeners record rather than throw: a throw would surface inside the client, as its own failure.
  const violations: string[] = [];
  let lastState: ClientState = client.state;
  client.on('state', (s: ClientState) => {
    if (!STATES.includes(s) || s === lastState) violations.push(`state event ${String(s)} after ${lastState}`);
    lastState = s;
  });
  client.on('peers', (changes: { up: PeerInfo[]; down: PeerInfo[] }) => {
    for (const p of changes.up) seen.set(p.deviceId, p.ip);
    for (const p of changes.down) seen.delete(p.deviceId);
  });
  let writesChecked = 0;

  const check = (socket: FakeSocket, where: string): void => {
    assert.ok(STATES.includes(client.state), `${where}: state ${String(client.state)}`);
    assert.equal(socket.lateWrites, 0, `${where}: the client wrote to a socket it had ended or destroyed`);
    if (model.error) {
      assert.ok(socket.destroyed, `${where}: no destroy() after ${model.error.join(' ')}`);
    } else {
      assert.equal(socket.destroyed, false, `${where}: connection dropped with lastError ${JSON.stringify(client.lastError)}`);
      assert.equal(client.state, model.connected ? 'connected' : 'connecting', `${where}: state`);
    }
    assert.equal(socket.writableEnded, model.ended, `${where}: end() after a sound REJECT/GOODBYE, and only then`);
    assert.deepEqual(violations, [], `${where}: events`);
    if (model.lastErrorEmpty) assert.equal(client.lastError, '', `${where}: lastError after WELCOME`);
    for (const part of model.lastErrorHas ?? []) {
      assert.ok(client.lastError.includes(part), `${where}: lastError ${JSON.stringify(client.lastError)} does not name ${JSON.stringify(part)}`);
    }
    // The TUN: exactly the DATA/DATA_GSO payloads received while connected, in order, kind for kind.
    assert.equal(device.written.length, model.writes.length, `${where}: ${device.written.length} packets on the TUN, expected ${model.writes.length}`);
    for (; writesChecked < model.writes.length; writesChecked++) {
      const want = model.writes[writesChecked]!;
      assert.ok(device.written[writesChecked]!.equals(want.packet), `${where}: TUN packet #${writesChecked} differs from the DATA payload`);
      assert.equal(device.withHeader[writesChecked], want.gso, `${where}: TUN packet #${writesChecked} virtio-header kind`);
    }
    assert.deepEqual(device.configured, model.configured, `${where}: TUN configuration`);
    assert.deepEqual(device.offloadCalls, model.offloadCalls, `${where}: offload switches`);
    assert.equal(leaseCalls, model.leaseCalls, `${where}: onLease calls`);
    checkPeers(where);
  };

  const checkPeers = (where: string): void => {
    const table = client.peers.list();
    assert.equal(table.length, client.peers.size);
    assert.ok(table.length <= model.announced.size, `${where}: ${table.length} peers, ${model.announced.size} announced`);
    for (const p of table) {
      assert.notEqual(p.deviceId, SELF_ID, `${where}: the peer table lists the device itself`);
      assert.ok(model.announced.has(p.deviceId), `${where}: peer ${p.deviceId} was never announced, or announced down`);
    }
    assert.ok(!seen.has(SELF_ID), `${where}: an up event for the device itself`);
    if (!model.inSnapshot) {
      const tableIps = new Map(table.map((p) => [p.deviceId, p.ip]));
      assert.deepEqual(seen, tableIps, `${where}: up/down events do not add up to the peer table`);
    }
  };

  const pongsWritten = (socket: FakeSocket): Buffer[] =>
    socket.written.slice(1).filter((w) => w[0] === FrameType.Pong).map((w) => w.subarray(HEADER_BYTES));

  let live = false;
  let writesBeforeStop = 0;
  let joined = 0;
  let joinedAtStop = false;
  client.start();
  try {
    plan.sessions.forEach((session, index) => {
      if (index > 0) {
        // Play the retry timer: the client reconnects now rather than after its delay.
        const internals = client as unknown as ClientInternals;
        clearTimeout(internals.retryTimer!);
        internals.retryTimer = null;
        internals.connect();
      }
      const socket = sockets[index]!;
      assert.equal(sockets.length, index + 1, 'one socket per connection');
      assert.equal(client.state, 'connecting');
      model.beginSession();
      if (session.wrongServer) {
        const pinned = CONFIG.client.join.fingerprint;
        socket.getPeerCertificate = () => ({ raw: Buffer.concat([CERT, pinned]) });
      }
      socket.emit('secureConnect');
      if (session.wrongServer) {
        // It is given a moment to endorse itself (ENDORSE_WAIT_MS) and is told nothing meanwhile; it
        // closes instead, and that settles it as the wrong server.
        assert.ok(socket.written.length === 0, 'a wrong server got something');
        model.fail('server identity changed');
        model.lastErrorHas = ['server identity changed'];
      } else {
        assert.equal(socket.written.length, 1, 'HELLO');
        const hello = parseHello(socket.written[0]!.subarray(HEADER_BYTES));
        assert.equal(socket.written[0]![0], FrameType.Hello);
        assert.equal(hello.deviceId, SELF_ID);
        assert.equal(hello.previousIp, model.lease?.ip ?? plan.previousIp, 'HELLO.previousIp');
        assert.deepEqual(hello.capabilities, plan.vnet ? [CAPABILITY_GSO, CAPABILITY_PEERS_BIN] : [CAPABILITY_PEERS_BIN]);
        const reference = referenceDecode(session.stream);
        let next = 0;
        for (const [from, to] of reads(session.stream.length, session.cuts)) {
          if (socket.destroyed) break;
          const chunk = session.stream.subarray(from, to);
          chunk.copy(READ);
          const view = READ.subarray(0, chunk.length);
          try {
            onData!(view);
          } catch (err) {
            throw new Error(`onData threw: ${err instanceof Error ? err.stack : String(err)}`);
          }
          // The next TLS record lands in the same buffer: anything the client kept a view of is now garbage.
          view.fill(0xee);
          for (; next < reference.frames.length && reference.frames[next]!.end <= to; next++) {
            const f = reference.frames[next]!;
            model.frame(session.stream[f.start]!, session.stream.subarray(f.start + HEADER_BYTES, f.end));
          }
          if (reference.error && !model.error && reference.error.at + HEADER_BYTES <= to && next === reference.frames.length) {
            const at = reference.error.at;
            const type = session.stream[at]!;
            const length = session.stream.readUIntBE(at + 1, 3);
            model.fail('protocol error', frameName(type), ...(reference.error.code === 'unknown-type' ? [] : [String(length)]));
          }
          model.flush();
          check(socket, `read ${from}..${to} of session ${index}`);
          const pongs = pongsWritten(socket);
          assert.equal(pongs.length, model.pongs.length, 'one PONG per PING while connected');
          pongs.forEach((p, i) => assert.ok(p.length === PING_BYTES && p.equals(model.pongs[i]!), 'PONG echoes its PING'));
        }
      }
      if (plan.stopLive && index === plan.sessions.length - 1) return;
      if (session.end === 'error' && !socket.destroyed) {
        socket.emit('error', new Error('read ECONNRESET'));
        // After a REJECT or GOODBYE the relay's word stays the reason; a wrong server stays the reason too.
        if (!model.ended && !session.wrongServer) {
          model.lastErrorHas = ['ECONNRESET'];
          model.lastErrorEmpty = false;
        }
      }
      const failed = client.counters.failedAttempts;
      socket.close();
      assert.equal(client.state, 'waiting', 'state after the connection closed');
      if (model.connected) joined++;
      assert.equal(client.counters.failedAttempts, failed + (model.connected ? 0 : 1), 'failedAttempts counts attempts that got no session');
      assert.equal(client.counters.reconnects, Math.max(0, joined - 1), 'reconnects counts sessions after the first');
      assert.equal(backoff.lastKind, session.wrongServer || model.mistake ? 'mistake' : 'outage', 'an operator mistake waits on the long schedule');
      assert.equal(client.retryInMs, retryDelay(backoff.last, model.retryHint), 'the retry delay is the backoff, lengthened (never shortened) by the relay\'s hint');
      model.retryHint = null;
      for (const part of model.lastErrorHas ?? []) assert.ok(client.lastError.includes(part), `lastError after close: ${client.lastError}`);
      checkPeers(`after session ${index}`);
    });
  } finally {
    // Also after a failed check: stop() clears the client's timers, which would keep the process alive.
    const last = sockets.at(-1);
    live = last !== undefined && !last.destroyed;
    joinedAtStop = client.state === 'connected' && last !== undefined && !last.writableEnded;
    writesBeforeStop = last?.written.length ?? 0;
    void client.stop();
    // stop() waits for the close of a live socket, which the relay side gives here.
    last?.close();
  }
  const last = sockets.at(-1)!;
  if (live && joinedAtStop) {
    assert.ok(last.writableEnded && last.written.length === writesBeforeStop + 1, 'stop() on a live session ends it with one frame');
    assert.equal(parseGoodbye(last.written.at(-1)!.subarray(HEADER_BYTES)).code, 'shutdown', 'stop() says GOODBYE');
  } else if (live) {
    assert.equal(last.written.length, writesBeforeStop, 'stop() before WELCOME (or after the relay ended it) sends nothing');
  }
  assert.equal(client.state, 'stopped');
  assert.ok(device.closed, 'stop() closes the TUN');
  assert.equal(activeTimers(), timersBefore, 'timers left behind after stop()');
  return { model, client, device };
}
