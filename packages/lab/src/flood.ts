/**
 * Opens N TCP connections to HOST:PORT that never send a byte, and reports how each ended:
 *   node flood.js HOST PORT N
 * Prints {"opened","closed","refusedFast","lifetimesMs":{min,median,max}} once every connection has
 * closed, or after 30 s with what it saw. A connection closed within 1 s of being established was refused
 * outright, not held to the handshake deadline (seconds): counted from its own establishment, not from the
 * loop that opens all N, so a loaded machine that takes a while to open them (or the relay a while to
 * work through its accept queue) does not turn refusals into "held" ones.
 */
import { connect } from 'node:net';

const [host, port, count] = process.argv.slice(2);
const total = Number(count);
const lifetimes: number[] = [];
let refusedFast = 0;
let opened = 0;
let settled = 0;

function finish(): void {
  const sorted = [...lifetimes].sort((a, b) => a - b);
  const pick = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : -1);
  process.stdout.write(`${JSON.stringify({
    opened, closed: lifetimes.length, refusedFast,
    lifetimesMs: { min: pick(0), median: pick(0.5), max: pick(1) },
  })}\n`);
  process.exit(0);
}

for (let i = 0; i < total; i++) {
  const started = Date.now();
  let connectedAt = 0;
  const socket = connect({ host: host!, port: Number(port) });
  socket.on('connect', () => {
    opened++;
    connectedAt = Date.now();
  });
  socket.on('error', () => {});
  socket.resume();
  socket.on('close', () => {
    const now = Date.now();
    lifetimes.push(now - started);
    if (now - (connectedAt || started) < 1000) refusedFast++;
    if (++settled === total) finish();
  });
}
setTimeout(finish, 30_000).unref();
