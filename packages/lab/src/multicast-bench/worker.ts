/** A worker process of the multicast bench (main.ts): devices that join, send and count. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect, type TLSSocket } from 'node:tls';
import {
  encodeFrame, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, FrameDecoder, FrameType, HEADER_BYTES, helloAuth, ipv4ToInt, parseJoin, parseReject, parseWelcome, PROTOCOL_VERSION,
} from '@mnedc/protocol';
import { LATENCY_BUCKETS, latencyBucket, mdnsPacket, packetsDue, packetsPerSender, readMark } from './plan';

// ---------------------------------------------------------------------------------------------------
// Worker processes: devices that join, send and count.

export type WorkerRequest =
  | { cmd: 'join'; first: number; count: number; port: number; join: string }
  /** A new point: counters zeroed for `senders` senders. */
  | { cmd: 'reset'; round: number; senders: number }
  /** The senders of this worker send `pps` each from `startAt` (epoch ms) for `seconds`. Answer: SendResult. */
  | { cmd: 'send'; round: number; senders: number; pps: number; seconds: number; startAt: number; bytes: number }
  /** Answer: copies of this round received so far. */
  | { cmd: 'count' }
  /** Answer: CheckResult against what each sender sent. */
  | { cmd: 'check'; sent: number[] }
  | { cmd: 'stop' };

export interface SendResult {
  sent: number[];
  /** Epoch ms when the last packet left. */
  doneAt: number;
}

export interface CheckResult {
  devices: number;
  missing: number;
  extra: number;
  disorder: number;
  completeDevices: number;
  stale: number;
  latency: Array<[number, number]>;
  maxLatencyMs: number;
}

const JOIN_TIMEOUT_MS = 30_000;
const HANDSHAKES_IN_FLIGHT = 64;

/** A lean device: the wire protocol's handshake, PONGs, and DATA handed to `onData` and dropped. */
class BenchDevice {
  ip = 0;
  socket: TLSSocket | null = null;

  constructor(readonly index: number, private readonly onData: (device: BenchDevice, packet: Buffer) => void) {}

  join(port: number, join: string, key: KeyObject): Promise<void> {
    return new Promise((resolve, reject) => {
      const id = `mc-${this.index}`;
      const decoder = new FrameDecoder();
      const socket = connect({ socket: netConnect({ host: '127.0.0.1', port }), rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      this.socket = socket;
      let settled = false;
      const settle = (error?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) {
          socket.destroy();
          reject(error);
        } else resolve();
      };
      const timer = setTimeout(() => settle(new Error(`${id}: no WELCOME within ${JOIN_TIMEOUT_MS} ms`)), JOIN_TIMEOUT_MS);
      socket.once('secureConnect', () => {
        const ekm = socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
        socket.write(encodeJsonFrame(FrameType.Hello, {
          version: PROTOCOL_VERSION, deviceId: id, hostname: `${id}-host`, underlay: ['192.168.1.10'], capabilities: [], discovery: 'names',
          auth: helloAuth(parseJoin(join).secret, key, ekm, id),
        }));
      });
      socket.on('data', (chunk: Buffer) => {
        try {
          decoder.push(chunk, (frame) => {
            switch (frame[0]) {
              case FrameType.Data: this.onData(this, frame.subarray(HEADER_BYTES)); break;
              case FrameType.Ping: socket.write(encodeFrame(FrameType.Pong, frame.subarray(HEADER_BYTES))); break;
              case FrameType.Welcome:
                this.ip = ipv4ToInt(parseWelcome(Buffer.from(frame.subarray(HEADER_BYTES))).ip);
                settle();
                break;
              case FrameType.Reject: settle(new Error(`${id}: rejected: ${parseReject(Buffer.from(frame.subarray(HEADER_BYTES))).reason}`)); break;
            }
          });
        } catch (error) {
          settle(error as Error);
          socket.destroy();
        }
      });
      socket.on('error', () => {});
      socket.once('close', () => {
        closedDevices++;
        settle(new Error(`${id}: connection closed before WELCOME`));
      });
    });
  }

  send(packet: Buffer): void {
    this.socket?.write(encodeFrame(FrameType.Data, packet));
  }

  close(): void {
    this.socket?.destroy();
  }
}

let devices: BenchDevice[] = [];
/** Local position of each device in `devices`, by its index. */
let firstIndex = 0;
let round = 0;
let senderCount = 0;
/** Per device × sender: copies received, and the last sequence number seen. */
let got = new Int32Array(0);
let last = new Int32Array(0);
let received = 0;
let disorder = 0;
let stale = 0;
let closedDevices = 0;
let latency = new Uint32Array(LATENCY_BUCKETS);
let maxLatencyMs = 0;

function now(): number {
  return performance.timeOrigin + performance.now();
}

function onData(device: BenchDevice, packet: Buffer): void {
  const mark = readMark(packet);
  if (mark === null || mark.round !== round || mark.sender >= senderCount) {
    stale++;
    return;
  }
  const slot = (device.index - firstIndex) * senderCount + mark.sender;
  got[slot]++;
  // A sequence number not above the last one seen from that sender is a copy repeated or out of order.
  if (mark.seq <= last[slot]!) disorder++;
  else last[slot] = mark.seq;
  received++;
  const ms = now() - mark.sentAt;
  latency[latencyBucket(ms)]++;
  if (ms > maxLatencyMs) maxLatencyMs = ms;
}

async function joinAll(request: Extract<WorkerRequest, { cmd: 'join' }>): Promise<{ joined: number; failures: string[] }> {
  firstIndex = request.first;
  devices = [];
  for (let i = 0; i < request.count; i++) devices.push(new BenchDevice(request.first + i, onData));
  const failures: string[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < devices.length) {
      const device = devices[next++]!;
      try {
        await device.join(request.port, request.join, generateKeyPairSync('ed25519').privateKey);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: HANDSHAKES_IN_FLIGHT }, lane));
  return { joined: devices.length - failures.length, failures: failures.slice(0, 5) };
}

function send(request: Extract<WorkerRequest, { cmd: 'send' }>): Promise<SendResult> {
  const senders = devices.filter((d) => d.index < request.senders);
  if (senders.length === 0) return Promise.resolve({ sent: new Array<number>(request.senders).fill(0), doneAt: 0 });
  const total = packetsPerSender(request.pps, request.seconds);
  const sent = new Array<number>(request.senders).fill(0);
  const gapMs = 1000 / request.pps;
  return new Promise((resolve) => {
    const tick = (): void => {
      const elapsed = Date.now() - request.startAt;
      let done = true;
      for (const device of senders) {
        const s = device.index;
        // Staggered, so the packets of all the senders together are evenly spaced too.
        const due = packetsDue(elapsed, request.pps, (s / request.senders) * gapMs, total);
        while (sent[s]! < due) {
          device.send(mdnsPacket(device.ip, { round: request.round, sender: s, seq: sent[s]!, sentAt: now() }, request.bytes));
          sent[s]!++;
        }
        if (sent[s]! < total) done = false;
      }
      if (done) resolve({ sent, doneAt: Date.now() });
      else setTimeout(tick, 1);
    };
    setTimeout(tick, Math.max(0, request.startAt - Date.now()));
  });
}

function check(sent: readonly number[]): CheckResult {
  let missing = 0;
  let extra = 0;
  let completeDevices = 0;
  for (const [local, device] of devices.entries()) {
    let complete = device.ip !== 0;
    for (let s = 0; s < senderCount; s++) {
      const expected = device.index === s ? 0 : sent[s]!;
      const count = got[local * senderCount + s]!;
      if (count < expected) missing += expected - count;
      if (count > expected) extra += count - expected;
      if (count !== expected) complete = false;
    }
    if (complete) completeDevices++;
  }
  const entries: Array<[number, number]> = [];
  latency.forEach((count, bucket) => {
    if (count > 0) entries.push([bucket, count]);
  });
  return { devices: devices.length, missing, extra, disorder, completeDevices, stale, latency: entries, maxLatencyMs };
}

async function handle(request: WorkerRequest): Promise<unknown> {
  switch (request.cmd) {
    case 'join': return joinAll(request);
    case 'reset':
      round = request.round;
      senderCount = request.senders;
      got = new Int32Array(devices.length * senderCount);
      last = new Int32Array(devices.length * senderCount).fill(-1);
      received = disorder = stale = 0;
      latency = new Uint32Array(LATENCY_BUCKETS);
      maxLatencyMs = 0;
      return closedDevices;
    case 'send': return send(request);
    case 'count': return received;
    case 'check': return check(request.sent);
    case 'stop':
      devices.forEach((d) => d.close());
      setTimeout(() => process.exit(0), 100);
      return null;
  }
}

function runWorker(): void {
  process.on('message', (message: { id: number; request: WorkerRequest }) => {
    handle(message.request).then(
      (result) => process.send!({ id: message.id, result }),
      (error: Error) => process.send!({ id: message.id, error: error.message }),
    );
  });
  // The parent is gone (killed, crashed): nothing here may outlive it.
  process.on('disconnect', () => process.exit(0));
}


if (require.main === module) runWorker();
