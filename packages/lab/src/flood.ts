/**
 * Opens N TCP connections to HOST:PORT that never send a byte, and reports how each ended:
 *   node flood.js HOST PORT N
 * Prints {"opened","closed","refusedFast","lifetimesMs":{min,median,max}} once every connection has
 * closed, or after 30 s with what it saw. A connection closed within 200 ms was refused outright.
 */
import { connect } from 'node:net';

const [host, port, count] = process.argv.slice(2);
const total = Number(count);
const lifetimes: number[] = [];
let opened = 0;
let settled = 0;

function finish(): void {
  const sorted = [...lifetimes].sort((a, b) => a - b);
  const pick = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : -1);
  process.stdout.write(`${JSON.stringify({
    opened, closed: lifetimes.length, refusedFast: sorted.filter((ms) => ms < 200).length,
    lifetimesMs: { min: pick(0), median: pick(0.5), max: pick(1) },
  })}\n`);
  process.exit(0);
}

for (let i = 0; i < total; i++) {
  const started = Date.now();
  const socket = connect({ host: host!, port: Number(port) });
  socket.on('connect', () => opened++);
  socket.on('error', () => {});
  socket.resume();
  socket.on('close', () => {
    lifetimes.push(Date.now() - started);
    if (++settled === total) finish();
  });
}
setTimeout(finish, 30_000).unref();
