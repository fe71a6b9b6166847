/**
 * Sends bytes to a relay and reports whether the relay closed the connection:
 *   node junk.js HOST PORT random N              raw TCP: random bytes where a TLS handshake belongs
 *   node junk.js HOST PORT hello-then HEX JOIN   TLS + a valid, authenticated HELLO, then the bytes
 * Prints {"closed":true,"ms":..} or {"closed":false} after 8 s.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { WireClient } from './wire-client';

const [host, port, mode, arg, join] = process.argv.slice(2);
const started = Date.now();

function report(socket: NodeJS.EventEmitter & { resume(): unknown }): void {
  socket.on('error', () => {});
  socket.resume();
  socket.on('close', () => {
    process.stdout.write(`${JSON.stringify({ closed: true, ms: Date.now() - started })}\n`);
    process.exit(0);
  });
}

if (mode === 'random') {
  const socket = connect({ host: host!, port: Number(port) });
  report(socket);
  socket.on('connect', () => socket.write(randomBytes(Number(arg))));
} else if (mode === 'hello-then') {
  const device = new WireClient(Number(port), join!, undefined, true, { host });
  report(device.socket);
  device.socket.on('secureConnect', () => {
    device.hello(`junk-${randomBytes(3).toString('hex')}`, { hostname: 'junk', underlay: [] });
    // The first frame back is WELCOME: the session is established, now the junk goes in.
    device.socket.once('data', () => device.socket.write(Buffer.from(arg ?? '', 'hex')));
  });
} else {
  process.stderr.write('usage: junk.js HOST PORT random N | hello-then HEX JOIN\n');
  process.exit(2);
}
setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ closed: false })}\n`);
  process.exit(1);
}, 8_000).unref();
