import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createServer, type TLSSocket } from 'node:tls';
import { loadOrCreateIdentity, type ServerIdentity } from '@mnedc/server';
import { openTunnel, serverMismatch } from '../src';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A relay identity as the relay makes it: a fresh state dir, or one holding an older relay's RSA key. */
function identity(kind: 'new' | 'legacy-rsa'): ServerIdentity {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-pin-'));
  dirs.push(dir);
  if (kind === 'legacy-rsa') {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    writeFileSync(join(dir, 'server.key'), rsa.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
  }
  return loadOrCreateIdentity(dir).identity;
}

/** One TLS 1.3 handshake through the client's own tunnel code against a loopback server holding `id`; `check` sees the open socket. */
async function handshake(id: ServerIdentity, check: (socket: TLSSocket) => void): Promise<void> {
  const server = createServer({ key: id.keyPem, cert: id.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }, (s) => s.on('error', () => {}));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const socket = openTunnel('127.0.0.1', (server.address() as AddressInfo).port);
    try {
      await once(socket, 'secureConnect');
      check(socket);
    } finally {
      socket.destroy();
    }
  } finally {
    server.close();
  }
}

describe('pinning the relay certificate over a real TLS 1.3 handshake', () => {
  for (const [kind, keyType] of [['new', 'ed25519'], ['legacy-rsa', 'rsa']] as const) {
    it(`${kind} identity: the client sees a ${keyType} certificate and accepts exactly the pinned fingerprint`, async () => {
      const id = identity(kind);
      const other = identity('new');
      await handshake(id, (socket) => {
        assert.equal(socket.getProtocol(), 'TLSv1.3');
        assert.equal(serverMismatch(socket, id.fingerprint), null);
        assert.match(serverMismatch(socket, other.fingerprint) ?? '', /^server identity changed: it presented SHA256:\S+ but the join string pins SHA256:\S+\./);
        // Last: in Node 20, getPeerCertificate() returns {} once getPeerX509Certificate() has been called.
        assert.equal(socket.getPeerX509Certificate()?.publicKey.asymmetricKeyType, keyType);
      });
    });
  }
});
