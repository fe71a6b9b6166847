/**
 * The relay's device bindings and leases against hostile newcomers, over loopback with the real protocol:
 * minted device IDs cannot evict offline devices, and no device is welcomed before its binding is durable.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, constants, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { encodeJsonFrame, FrameType, helloAuth, parseJoin, PROTOCOL_VERSION, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, showFingerprint } from '@mnedc/protocol';
import { newDeviceKey, WireClient } from '@mnedc/lab';
import { inProcessRelays } from './in-process-relay';

const relays = inProcessRelays('mnedc-bind-');
const startServer = (extra = '', stateDir?: string) => relays.start(extra, stateDir);
const joinAs = (port: number, deviceId: string, key?: KeyObject) => relays.join(port, deviceId, {}, key);

/** The fingerprint the relay binds a device ID to: SHA-256 of the device's public key (SPKI DER). */
function fingerprintOf(key: KeyObject): string {
  return showFingerprint(createHash('sha256').update(createPublicKey(key).export({ format: 'der', type: 'spki' })).digest());
}

describe('relay: leases and bindings against minted device IDs', () => {
  it('a newcomer cannot take the address of an offline device within its lease lifetime', async () => {
    const { server, port } = await startServer('subnet = 10.0.0.0/30\n');
    const owner = await joinAs(port, 'dev-owner');
    assert.equal(owner.welcome?.ip, '10.0.0.2');
    owner.close();
    while (server.session('dev-owner')) await once(server, 'sessions');
    // Anyone with the join string can mint IDs; none of them may evict the device that is merely offline.
    for (let i = 0; i < 5; i++) {
      const mint = await joinAs(port, `mint-${i}`);
      assert.equal(mint.welcome, null, `mint-${i} was given ${mint.welcome?.ip}`);
      assert.equal(mint.reject?.code, 'pool-full');
      assert.match(mint.reject!.reason, /within their lease lifetime of 30 days \(0 connected, 1 offline.*mnedcctl release ID/);
    }
    assert.equal(server.refused.poolFull, 5);
    assert.equal(server.bindingCount, 1, 'a refused newcomer is not bound');
    const back = await joinAs(port, 'dev-owner', owner.key);
    assert.equal(back.welcome?.ip, '10.0.0.2', 'the owner comes back to its address');
  });

  it('welcomes no device before its binding is durable: a failed write refuses new devices, not bound ones', async () => {
    const dir = relays.stateDir();
    // A device bound by an older relay, in the version 1 file, with no journal yet.
    const oldKey = newDeviceKey();
    writeFileSync(join(dir, 'bindings.json'), JSON.stringify({ version: 1, bindings: { 'dev-old': fingerprintOf(oldKey) } }), { mode: 0o600 });
    const { server, port } = await startServer('', dir);
    // The journal the first new binding goes to is a FIFO: the append goes through, fdatasync fails (EINVAL).
    const fifo = join(dir, 'bindings.journal.0');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const fresh = await joinAs(port, 'dev-new');
      assert.equal(fresh.welcome, null, 'welcomed although its binding never became durable');
      assert.equal(fresh.reject?.code, 'busy');
      assert.match(fresh.reject!.reason, /cannot record device bindings \(storage error\)/);
      const written = Buffer.alloc(4096);
      assert.match(written.toString('utf8', 0, readSync(reader, written)), /\["s","dev-new","SHA256:/, 'the record was appended before the sync failed');
      assert.equal(server.session('dev-new'), undefined);

      const next = await joinAs(port, 'dev-next');
      assert.equal(next.reject?.code, 'busy', 'nothing more is acknowledged after a failed sync');
      const impostor = await joinAs(port, 'dev-old');
      assert.match(impostor.reject?.reason ?? '', /belongs to another device key/, 'the old file is honoured');
      const old = await joinAs(port, 'dev-old', oldKey);
      assert.ok(old.welcome, 'a device already bound needs no write and still joins');
    } finally {
      closeSync(reader);
    }
  });

  it('treats anything after a HELLO and before the WELCOME as a protocol error', async () => {
    const { server, port } = await startServer();
    const client = new WireClient(port, relays.joinString);
    relays.keep(client);
    await once(client.socket, 'secureConnect');
    const ekm = client.socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const hello = encodeJsonFrame(FrameType.Hello, {
      version: PROTOCOL_VERSION, deviceId: 'dev-twice', hostname: 'h', underlay: [],
      auth: helloAuth(parseJoin(relays.joinString).secret, client.key, ekm, 'dev-twice'),
    });
    // Two HELLOs in one write reach the relay together, the second while the first binding is being written.
    client.socket.write(Buffer.concat([hello, hello]));
    await client.until(() => client.closed, 'the connection to close');
    assert.equal(client.welcome, null);
    assert.match(client.goodbye?.reason ?? '', /HELLO before WELCOME/);
    assert.equal(server.session('dev-twice'), undefined);
  });
});
