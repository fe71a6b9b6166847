/**
 * What a TLS 1.3 handshake costs the relay with an RSA-2048 identity (relays created before Ed25519) and
 * with an Ed25519 one (new relays): a loopback TLS server in a child process holding an identity made by
 * the relay's own loadOrCreateIdentity, N full handshakes against it, and the server process's CPU
 * (process.cpuUsage, user + system) per handshake. Not part of npm test; no root needed.
 *   node tools/perf/dist/src/tls-handshake-bench.js [--handshakes N] [--concurrency N] [--rounds N]
 * Numbers on a shared machine are noisy: the rounds alternate the two kinds so drift hits both alike.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect, createServer } from 'node:tls';
import { loadOrCreateIdentity } from '@mnedc/server';

type Kind = 'rsa-2048' | 'ed25519';
type ToChild = { op: 'mark' } | { op: 'exit' };
type FromChild = { port: number } | { cpuMicros: number; handshakes: number };

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  const value = index >= 0 ? Number(process.argv[index + 1]) : fallback;
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} takes a positive integer, not ${process.argv[index + 1]}`);
  return value;
}

/** The child: a TLS 1.3 server on loopback with the identity in `stateDir`, reporting CPU between marks. */
function serve(stateDir: string): void {
  const { identity } = loadOrCreateIdentity(stateDir);
  let handshakes = 0;
  const server = createServer({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }, (socket) => {
    handshakes++;
    socket.on('error', () => {});
    socket.end();
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port } satisfies FromChild));
  let since = process.cpuUsage();
  let handshakesSince = 0;
  process.on('message', (message: ToChild) => {
    if (message.op === 'exit') process.exit(0);
    const used = process.cpuUsage(since);
    process.send!({ cpuMicros: used.user + used.system, handshakes: handshakes - handshakesSince } satisfies FromChild);
    since = process.cpuUsage();
    handshakesSince = handshakes;
  });
}

function stateDirFor(kind: Kind): string {
  const dir = mkdtempSync(path.join(tmpdir(), `mnedc-tls-bench-${kind}-`));
  if (kind === 'rsa-2048') {
    // As relays before Ed25519 wrote it: loadOrCreateIdentity keeps the key and certifies it with RSA.
    const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    writeFileSync(path.join(dir, 'server.key'), key.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
  }
  return dir;
}

function handshake(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    // No session reuse: every connection is a full handshake with a fresh CertificateVerify.
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3', servername: '' });
    // Done when the server closes it after its side of the handshake, so each one is counted complete there.
    let secured = false;
    socket.once('secureConnect', () => { secured = true; });
    socket.once('close', () => (secured ? resolve() : reject(new Error('closed before the handshake completed'))));
    socket.once('error', reject);
    socket.resume();
  });
}

async function handshakes(port: number, count: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < count) await handshake(port);
  }));
}

async function request<T extends FromChild>(child: ChildProcess, message: ToChild): Promise<T> {
  const reply = once(child, 'message');
  child.send(message);
  return (await reply)[0] as T;
}

async function measure(kind: Kind, count: number, concurrency: number): Promise<{ cpuPerHandshakeUs: number; handshakesPerSecond: number }> {
  const dir = stateDirFor(kind);
  const child = fork(__filename, ['--serve', dir], { stdio: 'inherit' });
  try {
    const [{ port }] = (await once(child, 'message')) as [{ port: number }];
    await handshakes(port, Math.min(50, count), concurrency); // warm-up: JIT, TLS context
    await request(child, { op: 'mark' });
    const started = process.hrtime.bigint();
    await handshakes(port, count, concurrency);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const used = await request<{ cpuMicros: number; handshakes: number }>(child, { op: 'mark' });
    if (used.handshakes !== count) throw new Error(`the server counted ${used.handshakes} handshakes, expected ${count}`);
    return { cpuPerHandshakeUs: used.cpuMicros / count, handshakesPerSecond: count / seconds };
  } finally {
    child.send({ op: 'exit' } satisfies ToChild);
    await once(child, 'exit');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const serveAt = process.argv.indexOf('--serve');
  if (serveAt >= 0) return serve(process.argv[serveAt + 1]!);
  const count = option('--handshakes', 2000);
  const concurrency = option('--concurrency', 8);
  const rounds = option('--rounds', 3);
  const results: Record<Kind, Array<{ cpuPerHandshakeUs: number; handshakesPerSecond: number }>> = { 'rsa-2048': [], ed25519: [] };
  for (let round = 1; round <= rounds; round++) {
    for (const kind of ['rsa-2048', 'ed25519'] as const) {
      const r = await measure(kind, count, concurrency);
      results[kind].push(r);
      console.log(`round ${round} ${kind.padEnd(8)}  server CPU ${r.cpuPerHandshakeUs.toFixed(0).padStart(5)} µs/handshake  ${r.handshakesPerSecond.toFixed(0).padStart(5)} handshakes/s (wall, client in the same machine)`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rsa = median(results['rsa-2048'].map((r) => r.cpuPerHandshakeUs));
  const ed = median(results.ed25519.map((r) => r.cpuPerHandshakeUs));
  console.log(`median server CPU per handshake over ${rounds} rounds of ${count}: rsa-2048 ${rsa.toFixed(0)} µs, ed25519 ${ed.toFixed(0)} µs ` +
    `(${(100 * (1 - ed / rsa)).toFixed(0)}% less with Ed25519)`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
