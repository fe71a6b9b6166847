/**
 * The bench's OpenVPN pieces that need no root: the throwaway PKI must be one OpenVPN accepts with
 * remote-cert-tls (EKU and key usage on each side), the configurations must say what the README and the
 * bench's JSON claim, and the CPU accounting must read /proc/<pid>/stat correctly whatever the command name.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { cpuSeconds, parseProcStatTicks } from '../src/measure';
import { makePki, openVpnConfigs } from '../src/openvpn';

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('bench: OpenVPN PKI', { skip: hasOpenssl ? false : 'openssl not installed' }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-pki-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const openssl = (...argv: string[]) => {
    const result = spawnSync('openssl', argv, { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    return result.stdout;
  };

  it('makes a CA and certificates for the server and each client that verify against it', async () => {
    await makePki(dir, ['c', 'd']);
    const ca = path.join(dir, 'ca.crt');
    for (const name of ['server', 'c', 'd']) assert.match(openssl('verify', '-CAfile', ca, path.join(dir, `${name}.crt`)), /: OK/);
    assert.match(openssl('x509', '-in', ca, '-noout', '-ext', 'basicConstraints'), /CA:TRUE/);
  });

  it('gives the server serverAuth and the clients clientAuth, as remote-cert-tls checks', () => {
    const eku = (name: string) => openssl('x509', '-in', path.join(dir, `${name}.crt`), '-noout', '-ext', 'extendedKeyUsage,keyUsage');
    assert.match(eku('server'), /TLS Web Server Authentication/);
    assert.doesNotMatch(eku('server'), /Client Authentication/);
    for (const name of ['c', 'd']) {
      assert.match(eku(name), /TLS Web Client Authentication/);
      assert.match(eku(name), /Digital Signature/);
    }
  });

  it('writes the private keys only into the private directory', () => {
    for (const name of ['ca', 'server', 'c', 'd']) assert.match(readFileSync(path.join(dir, `${name}.key`), 'utf8'), /PRIVATE KEY/);
  });
});

describe('bench: OpenVPN configuration', () => {
  const configs = openVpnConfigs('/pki', '192.168.0.10', ['c', 'd']);
  const lines = (text: string) => text.trim().split('\n');

  it('relays client to client over TCP on a subnet apart from mnedc, with mnedc\'s MTU and ciphers', () => {
    const server = lines(configs.server);
    for (const line of ['proto tcp-server', 'local 192.168.0.10', 'client-to-client', 'topology subnet', 'server 10.8.0.0 255.255.255.0',
      'tun-mtu 1400', 'tls-version-min 1.3', 'data-ciphers AES-256-GCM', 'disable-dco', 'remote-cert-tls client', 'tcp-nodelay']) {
      assert.ok(server.includes(line), `server config lacks "${line}":\n${configs.server}`);
    }
    assert.ok(server.includes('cert /pki/server.crt'));
  });

  it('has one client configuration per device, each with its own certificate', () => {
    assert.deepEqual(Object.keys(configs.clients), ['c', 'd']);
    for (const name of ['c', 'd']) {
      const client = lines(configs.clients[name]!);
      for (const line of ['client', 'proto tcp-client', 'remote 192.168.0.10 1194', 'tun-mtu 1400', 'data-ciphers AES-256-GCM',
        'remote-cert-tls server', `cert /pki/${name}.crt`, `key /pki/${name}.key`]) {
        assert.ok(client.includes(line), `client ${name} config lacks "${line}"`);
      }
    }
  });
});

describe('bench: CPU accounting', () => {
  it('reads utime + stime even when the command name holds spaces and parentheses', () => {
    // Fields 14 and 15 (utime 1234, stime 567) after a comm of "a) (b".
    const stat = '4242 (a) (b) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 567 0 0 20 0 11 0 100 1000000 5000 18446744073709551615';
    assert.equal(parseProcStatTicks(stat), 1801);
  });

  it('measures this process, and more after it has burned CPU', async () => {
    const before = await cpuSeconds(process.pid);
    const until = Date.now() + 50;
    while (Date.now() < until) Math.sqrt(Math.random());
    assert.ok((await cpuSeconds(process.pid)) >= before);
  });

  it('throws for a process that is gone', async () => {
    await assert.rejects(cpuSeconds(2 ** 22 + 1));
  });
});
