/**
 * Sends bytes to a relay and reports whether the relay closed the connection:
 *   node junk.js HOST PORT random N | hex HEX | hello-then HEX
 * `hello-then` completes a valid handshake first, so the bytes hit an established session.
 * Prints {"closed":true,"ms":..} or {"closed":false} after 8 s.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';

const [host, port, mode, arg] = process.argv.slice(2);
const socket = connect({ host: host!, port: Number(port) });
const started = Date.now();
let payload: Buffer;
if (mode === 'random') payload = randomBytes(Number(arg));
else payload = Buffer.from(arg ?? '', 'hex');

function frame(type: number, body: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(((type << 24) | body.length) >>> 0);
  return Buffer.concat([header, body]);
}

socket.on('connect', () => {
  if (mode === 'hello-then') {
    socket.write(frame(1, Buffer.from(JSON.stringify({ version: 1, deviceId: 'junk-tester', hostname: 'junk', underlay: [] }))));
    socket.once('data', () => socket.write(payload));
  } else {
    socket.write(payload);
  }
});
socket.on('data', () => {});
socket.on('error', () => {});
socket.on('close', () => {
  process.stdout.write(`${JSON.stringify({ closed: true, ms: Date.now() - started })}\n`);
  process.exit(0);
});
setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ closed: false })}\n`);
  process.exit(1);
}, 8_000).unref();
