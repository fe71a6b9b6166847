/**
 * A TCP transfer with end-to-end checksums, run inside lab namespaces:
 *   node transfer.js receive PORT           prints JSON lines: listening, progress…, received {bytes, sha256}
 *   node transfer.js send HOST PORT BYTES [BYTES_PER_SECOND]
 * The data is pseudo-random (an AES-CTR keystream), so a corrupted or reordered byte changes the hash.
 * Both sides bound themselves in time and exit non-zero on failure.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { connect, createServer } from 'node:net';

const CHUNK = 64 * 1024;
const LIMIT_MS = 120_000;

function emit(value: object): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

const ZEROS = Buffer.alloc(CHUNK);
/** AES-CTR keystream: fast, deterministic, and not compressible or periodic. */
const keystream = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16));

function receive(port: number): void {
  const server = createServer((socket) => {
    server.close();
    const hash = createHash('sha256');
    let bytes = 0;
    let reported = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes - reported >= 1 << 20) {
        reported = bytes;
        emit({ msg: 'progress', bytes });
      }
    });
    socket.on('end', () => {
      emit({ msg: 'received', bytes, sha256: hash.digest('hex') });
      process.exit(0);
    });
    socket.on('error', (err) => {
      emit({ msg: 'error', error: err.message, bytes });
      process.exit(1);
    });
  });
  server.listen(port, () => emit({ msg: 'listening' }));
}

async function send(host: string, port: number, total: number, rate: number): Promise<void> {
  const socket = connect({ host, port });
  socket.on('error', (err) => {
    emit({ msg: 'error', error: err.message });
    process.exit(1);
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const hash = createHash('sha256');
  const started = Date.now();
  let sent = 0;
  while (sent < total) {
    const data = keystream.update(ZEROS.subarray(0, Math.min(CHUNK, total - sent)));
    hash.update(data);
    sent += data.length;
    if (!socket.write(data)) await new Promise<void>((resolve) => socket.once('drain', () => resolve()));
    if (rate > 0) {
      const ahead = sent / rate * 1000 - (Date.now() - started);
      if (ahead > 0) await new Promise((resolve) => setTimeout(resolve, ahead));
    }
  }
  socket.end(() => {
    emit({ msg: 'sent', bytes: sent, sha256: hash.digest('hex'), ms: Date.now() - started });
  });
  socket.on('close', () => process.exit(0));
}

setTimeout(() => {
  emit({ msg: 'error', error: `no completion within ${LIMIT_MS} ms` });
  process.exit(2);
}, LIMIT_MS).unref();

const [mode, ...args] = process.argv.slice(2);
if (mode === 'receive') receive(Number(args[0]));
else if (mode === 'send') void send(args[0]!, Number(args[1]), Number(args[2]), Number(args[3] ?? 0));
else {
  process.stderr.write('usage: transfer.js receive PORT | send HOST PORT BYTES [BYTES_PER_SECOND]\n');
  process.exit(2);
}
