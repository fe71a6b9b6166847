/**
 * A hostile relay for client tests: the real relay's identity (so the client's pin matches), but it says
 * what the test scripts.
 *   node fake-relay.js PORT STATE_DIR SCRIPT
 * STATE_DIR holds server.key and server.crt (made by `mnedcd-server --print-join`). SCRIPT is a JSON list
 * of WELCOME payloads, one per connection in order (the last repeats); an entry {"hold": true, ...} waits
 * for SIGUSR1 before it is sent; {"flood": true, ...} after it sends PINGs without pause and never reads
 * again (for 30 s at most); {"forge": [{"src", "port", "text"}, ...], ...} after it sends each as a UDP
 * datagram from src to the leased address's port (a relay forging sources). Every connection's HELLO is
 * logged as {"msg":"hello N", deviceId}; PINGs are answered, so a connection that got a sound WELCOME
 * stays up.
 */
import { readFileSync } from 'node:fs';
import { createServer, type TLSSocket } from 'node:tls';
import path from 'node:path';
import { encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, HEADER_BYTES, internetChecksum, ipv4ToInt, parseHello } from '@mnedc/protocol';

const [portText, stateDir, scriptText] = process.argv.slice(2);
const script = JSON.parse(scriptText!) as Array<Record<string, unknown>>;
const log = (msg: string, fields: Record<string, unknown> = {}): void => {
  process.stdout.write(`${JSON.stringify({ msg, ...fields })}\n`);
};

const releases: Array<() => void> = [];
process.on('SIGUSR1', () => releases.splice(0).forEach((release) => release()));

let connections = 0;
const server = createServer({
  key: readFileSync(path.join(stateDir!, 'server.key')),
  cert: readFileSync(path.join(stateDir!, 'server.crt')),
  minVersion: 'TLSv1.3',
}, (socket) => {
  const n = ++connections;
  const { hold, flood, forge, ...welcome } = script[Math.min(n, script.length) - 1]!;
  const decoder = new FrameDecoder();
  socket.on('error', () => {});
  socket.on('close', () => log(`closed ${n}`));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk, (frame) => {
    if (frame[0] === FrameType.Ping) socket.write(encodeFrame(FrameType.Pong, frame.subarray(HEADER_BYTES)));
    if (frame[0] !== FrameType.Hello) return;
    log(`hello ${n}`, { deviceId: parseHello(frame.subarray(HEADER_BYTES)).deviceId });
    const send = (): void => {
      socket.write(encodeJsonFrame(FrameType.Welcome, welcome));
      log(`sent welcome ${n}`, welcome);
      if (flood) floodPings(socket, n);
      for (const d of (forge ?? []) as Array<{ src: string; port: number; text: string }>) {
        socket.write(encodeFrame(FrameType.Data, udp(ipv4ToInt(d.src), ipv4ToInt(String(welcome.ip)), d.port, Buffer.from(d.text))));
        log(`forged ${n}`, d);
      }
    };
    if (hold) releases.push(send);
    else send();
  }));
});
/** An IPv4/UDP datagram with a valid header checksum (UDP checksum 0, which IPv4 allows). */
function udp(src: number, dst: number, port: number, payload: Buffer): Buffer {
  const packet = Buffer.alloc(28 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.writeUInt32BE(src, 12);
  packet.writeUInt32BE(dst, 16);
  packet.writeUInt16BE(40000, 20);
  packet.writeUInt16BE(port, 22);
  packet.writeUInt16BE(8 + payload.length, 24);
  payload.copy(packet, 28);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  return packet;
}

/** PINGs as fast as the socket takes them, never reading the PONGs: what the client queues for us grows. */
function floodPings(socket: TLSSocket, n: number): void {
  socket.pause();
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => encodeFrame(FrameType.Ping, Buffer.alloc(8))));
  const until = Date.now() + 30_000;
  let sent = 0;
  const more = (): void => {
    while (!socket.destroyed && Date.now() < until) {
      sent += 1000;
      if (!socket.write(batch)) {
        socket.once('drain', more);
        return;
      }
    }
    log(`flood ${n} ended`, { sent });
  };
  log(`flooding ${n}`);
  more();
}

server.listen(Number(portText), () => log('listening'));
