/**
 * Hostile devices for the hardening tests, each holding a valid join string:
 *   node attack.js pong-flood  PORT JOIN SECONDS   stops reading, then floods PINGs (the relay owes a PONG
 *                                                  for each); reconnects as a new device whenever cut
 *   node attack.js pin-chunks  PORT JOIN SECONDS [VICTIMS]   victim devices that never read (default 1), and a
 *                                                  sender whose every 16 KiB TLS record carries one tiny
 *                                                  packet for a victim and padding the relay drops (no route)
 *   node attack.js slot-flood  PORT -    SECONDS SOURCES   no join string: from 127.0.0.2 .. 127.0.0.(SOURCES+1),
 *                                                  max_handshakes_per_source (64) idle connections each,
 *                                                  each reopened as soon as the relay closes it
 * Runs for SECONDS, then prints one JSON line of what it did and exits.
 */
import { connect } from 'node:net';
import { encodeFrame, FrameType, HEADER_BYTES, PING_BYTES } from '@mnedc/protocol';
import { ipPacket, WireClient } from './wire-client';

const [mode, portText, join, secondsText, countText] = process.argv.slice(2);
const port = Number(portText);
const deadline = Date.now() + Number(secondsText) * 1000;
/** Plaintext of one TLS record at most: one write of this size is one record. */
const RECORD_BYTES = 16 * 1024;

async function joinOnce(deviceId: string): Promise<WireClient> {
  const device = new WireClient(port, join!);
  await new Promise<void>((resolve, reject) => {
    device.socket.once('secureConnect', resolve);
    device.socket.once('close', () => reject(new Error(`${deviceId}: connection closed before TLS`)));
  });
  device.hello(deviceId);
  await device.until(() => device.welcome !== null || device.reject !== null || device.closed, `WELCOME for ${deviceId}`, 10_000);
  if (!device.welcome) throw new Error(`${deviceId} did not join: ${device.reject?.reason ?? 'closed'}`);
  return device;
}

/** Joins, trying again while the relay turns connections away at its per-source rate (an attacker would). */
async function joined(deviceId: string): Promise<WireClient> {
  for (;;) {
    try {
      return await joinOnce(deviceId);
    } catch (err) {
      if (Date.now() >= deadline || !/closed/.test((err as Error).message)) throw err;
      await new Promise((resolve) => setTimeout(resolve, REOPEN_MS));
    }
  }
}

/** Writes `next()` while the socket takes it, until the deadline or the connection ends. */
async function pump(device: WireClient, next: () => Buffer): Promise<number> {
  let writes = 0;
  while (Date.now() < deadline && !device.closed && !device.socket.destroyed) {
    if (!device.socket.write(next())) await device.drained();
    if (++writes % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  return writes;
}

async function pongFlood(): Promise<object> {
  const ping = encodeFrame(FrameType.Ping, Buffer.alloc(PING_BYTES));
  const burst = Buffer.concat(Array.from({ length: Math.floor(RECORD_BYTES / ping.length) }, () => ping));
  let sessions = 0;
  let cut = 0;
  let pings = 0;
  while (Date.now() < deadline) {
    let device: WireClient;
    try {
      device = await joined(`flood-${process.pid}-${sessions++}`);
    } catch (err) {
      // Turned away at the very end of the run: the attack is over, not failed.
      if (Date.now() >= deadline) break;
      throw err;
    }
    device.socket.pause();
    pings += (await pump(device, () => burst)) * (burst.length / ping.length);
    if (device.closed || device.socket.destroyed) cut++;
    device.close();
  }
  return { mode, sessions, cut, pings };
}

async function pinChunks(): Promise<object> {
  const victims: WireClient[] = [];
  for (let i = 0; i < Number(countText ?? 1); i++) {
    const victim = await joined(`victim-${process.pid}-${i}`);
    victim.socket.pause();
    victims.push(victim);
  }
  // Victims never read but keep talking, so the relay's dead timer does not end the attack for them.
  const ping = encodeFrame(FrameType.Ping, Buffer.alloc(PING_BYTES));
  setInterval(() => victims.forEach((v) => v.socket.write(ping)), 1000).unref();
  const sender = await joined(`pinner-${process.pid}`);
  // Padding to an overlay address nobody has: the relay reads it and drops it.
  const nowhere = ((sender.ip & ~0xff) | 0xfe) >>> 0;
  const records = victims.map((victim) => {
    const tiny = encodeFrame(FrameType.Data, ipPacket(sender.ip, victim.ip, 'x'.repeat(20)));
    const padding = encodeFrame(FrameType.Data, ipPacket(sender.ip, nowhere, Buffer.alloc(RECORD_BYTES - tiny.length - 2 * HEADER_BYTES - 20)));
    return Buffer.concat([tiny, padding]);
  });
  let next = 0;
  const written = await pump(sender, () => records[next++ % records.length]!);
  return { mode, records: written, victims: victims.length, victimsClosed: victims.filter((v) => v.closed).length, senderClosed: sender.closed };
}

/** Connections a source keeps open: the relay's default per-source limit. */
const SLOTS_PER_SOURCE = 64;
/** A connection the relay closed is reopened after this long: a loop of refusals must not spin. */
const REOPEN_MS = 20;

async function slotFlood(): Promise<object> {
  const sources = Number(countText);
  let opened = 0;
  let closed = 0;
  const open = (localAddress: string): void => {
    if (Date.now() >= deadline) return;
    opened++;
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => {});
    socket.resume();
    socket.on('close', () => {
      closed++;
      setTimeout(() => open(localAddress), REOPEN_MS);
    });
  };
  for (let s = 0; s < sources; s++) for (let i = 0; i < SLOTS_PER_SOURCE; i++) open(`127.0.0.${s + 2}`);
  await new Promise((resolve) => setTimeout(resolve, deadline - Date.now()));
  return { mode, sources, opened, closed };
}

const run = mode === 'pong-flood' ? pongFlood : mode === 'pin-chunks' ? pinChunks : mode === 'slot-flood' ? slotFlood : null;
if (!run || !(port > 0) || !join || !(Number(secondsText) > 0)) {
  process.stderr.write('usage: attack.js pong-flood|pin-chunks PORT JOIN SECONDS [VICTIMS] | slot-flood PORT - SECONDS SOURCES\n');
  process.exit(2);
}
run().then((result) => {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}, (err: Error) => {
  process.stderr.write(`attack: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
