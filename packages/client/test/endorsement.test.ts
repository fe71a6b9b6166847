/**
 * One network, several relays: a relay with a key of its own, endorsed by the network's first relay,
 * is joined with the first relay's join string; a relay of another network, or one replaying another
 * relay's endorsement, is refused before the device sends anything; a relay refuses to start with an
 * endorsement clients would refuse. Real relays, the real client, loopback.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { createServer } from 'node:tls';
import pino from 'pino';
import { encodeJsonFrame, endorse, endorsementProblem, FrameType, parseEndorsement, certificateFingerprint } from '@mnedc/protocol';
import { endorseRelay, IdentityError, loadOrCreateIdentity, parseServerConfig, RelayServer } from '@mnedc/server';
import { Backoff, parseClientConfig, RelayClient, RetryPolicy } from '../src';
import { FakeDevice } from './fake-device';

const dirs: string[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-endorse-'));
  dirs.push(dir);
  return dir;
}

async function relay(dir: string): Promise<{ server: RelayServer; port: number }> {
  const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n`, 's.ini');
  const server = new RelayServer({ config, log: pino({ level: 'silent' }), serverDeviceId: 'server' });
  const { port } = await server.start();
  cleanups.push(() => server.stop());
  return { server, port };
}

/** A second relay of `network`'s network: its own key, endorsed there, the network's join secret. */
function endorsedDir(network: string, relayId = 'relay-b', days = 30): string {
  const dir = stateDir();
  const own = loadOrCreateIdentity(dir).identity;
  writeFileSync(join(dir, 'network.endorsement'), endorseRelay(network, own.certPem, relayId, days, Date.now()));
  if (existsSync(join(network, 'join.secret'))) copyFileSync(join(network, 'join.secret'), join(dir, 'join.secret'));
  return dir;
}

/** The real client against `port` with `joinString`; resolves with how its first attempt ended. */
async function attempt(port: number, joinString: string): Promise<{ state: string; lastError: string }> {
  const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${joinString}\ndevice_id = dev-e\n`, 'c.ini');
  const retry = new RetryPolicy(new Backoff(60_000, 60_000, () => 0), new Backoff(60_000, 60_000, () => 0));
  const client = new RelayClient({ config, log: pino({ level: 'silent' }), deviceId: 'dev-e', hostname: 'e', underlay: () => [], device: new FakeDevice(),
    credentials: { join: config.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey }, retry });
  cleanups.push(() => client.stop());
  const ended = new Promise<string>((resolve) => client.on('state', (s: string) => { if (s === 'connected' || s === 'waiting') resolve(s); }));
  client.start();
  return { state: await ended, lastError: client.lastError };
}

describe('relays endorsed by the network', () => {
  it('a relay with a key of its own, endorsed by the first relay, is joined with the first relay\'s join string', async () => {
    const network = stateDir();
    const first = await relay(network);
    const second = await relay(endorsedDir(network));
    assert.equal(second.server.joinString, first.server.joinString, 'it prints the network\'s join string');
    assert.notEqual(certificateFingerprint(second.server.identity.certificate).toString('hex'), first.server.identity.fingerprint.toString('hex'));
    assert.deepEqual(await attempt(second.port, first.server.joinString), { state: 'connected', lastError: '' });
    assert.equal((await attempt(first.port, first.server.joinString)).state, 'connected', 'the first relay needs no endorsement');
  });

  it('a relay endorsed by another network is refused, naming both networks', async () => {
    const ours = stateDir();
    const theirs = stateDir();
    const home = await relay(ours);
    await relay(theirs);
    const stranger = await relay(endorsedDir(theirs));
    const result = await attempt(stranger.port, home.server.joinString);
    assert.equal(result.state, 'waiting');
    assert.match(result.lastError, /another certificate than the join string pins, and it is endorsed by the network SHA256:\S+, not SHA256:\S+ that the join string pins/);
  });

  it('a server replaying a real relay\'s endorsement with its own key is refused before the device says anything', async () => {
    const network = stateDir();
    const first = await relay(network);
    const stolen = readFileSync(join(endorsedDir(network), 'network.endorsement'), 'utf8');
    const thief = loadOrCreateIdentity(stateDir()).identity;
    let heard = 0;
    const server = createServer({ key: thief.keyPem, cert: thief.certPem, minVersion: 'TLSv1.3' }, (socket) => {
      socket.on('data', (chunk: Buffer) => { heard += chunk.length; });
      socket.on('error', () => {});
      socket.write(encodeJsonFrame(FrameType.Endorse, JSON.parse(stolen) as Record<string, unknown>));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const result = await attempt((server.address() as AddressInfo).port, first.server.joinString);
    assert.equal(result.state, 'waiting');
    assert.match(result.lastError, /not signed by the network key for the certificate it presented/);
    assert.equal(heard, 0, 'no HELLO, no device ID, no proof reached it');
  });

  it('a server that presents another certificate and sends no endorsement is refused within seconds', async () => {
    const network = stateDir();
    const first = await relay(network);
    const other = await relay(stateDir());
    const started = Date.now();
    const result = await attempt(other.port, first.server.joinString);
    assert.equal(result.state, 'waiting');
    assert.match(result.lastError, /^server identity changed/);
    assert.ok(Date.now() - started < 6_000);
  });

  it('a relay refuses to start with an endorsement clients would refuse; --endorse refuses what makes no sense', () => {
    const network = stateDir();
    loadOrCreateIdentity(network);
    const dir = endorsedDir(network, 'relay-c', 1);
    // Another key in the same state directory: the endorsement is for the old one.
    const other = stateDir();
    loadOrCreateIdentity(other);
    for (const file of ['server.key', 'server.crt']) copyFileSync(join(other, file), join(dir, file));
    assert.throws(() => loadOrCreateIdentity(dir), (e: Error) => e instanceof IdentityError && /clients would refuse this relay: its endorsement as relay-c is not signed/.test(e.message));
    assert.throws(() => endorseRelay(dir, readFileSync(join(network, 'server.crt'), 'utf8'), 'x', 1, Date.now()), /this relay is endorsed itself/);
    assert.throws(() => endorseRelay(network, readFileSync(join(network, 'server.crt'), 'utf8'), 'x', 1, Date.now()), /own certificate/);
    assert.throws(() => endorseRelay(network, 'not a certificate', 'x', 1, Date.now()), /not a certificate/);
    assert.throws(() => endorseRelay(network, readFileSync(join(other, 'server.crt'), 'utf8'), 'bad id!', 1, Date.now()), /relay ID "bad id!" is not an ID/);
  });

  it('an endorsement expires, and an RSA network key (an older first relay) endorses too', () => {
    const rsaNetwork = stateDir();
    writeFileSync(join(rsaNetwork, 'server.key'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
    const network = loadOrCreateIdentity(rsaNetwork).identity;
    const relayDir = stateDir();
    const own = loadOrCreateIdentity(relayDir).identity;
    const e = parseEndorsement(JSON.parse(endorseRelay(rsaNetwork, own.certPem, 'relay-r', 2, Date.now())))!;
    assert.equal(endorsementProblem(e, network.fingerprint, own.certificate, Date.now()), null);
    assert.match(endorsementProblem(e, network.fingerprint, own.certificate, Date.now() + 3 * 86_400_000)!, /expired at/);
    const forged = endorse(generateKeyPairSync('ed25519').privateKey, network.certificate, own.certificate, 'relay-r', e.notAfter);
    assert.match(endorsementProblem(forged, network.fingerprint, own.certificate, Date.now())!, /not signed by the network key/);
  });
});
