import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ConfigError } from '@mnedc/common';
import { intToIpv4 } from '@mnedc/protocol';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseServerConfig } from '../src';
import { ClusterConfigError, etcdOptions } from '../src/cluster/cluster';

const F = '/etc/mnedc/server.ini';
function problem(text: string): string {
  try {
    parseServerConfig(text, F);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

describe('server configuration', () => {
  it('[server] multicast: mdns, ssdp and broadcast by default; a part of them, or off; an unknown group is named', () => {
    assert.deepEqual(parseServerConfig('', F).server.multicast, ['mdns', 'ssdp', 'broadcast']);
    assert.deepEqual(parseServerConfig('[server]\nmulticast = ssdp, mdns, ssdp\n', F).server.multicast, ['ssdp', 'mdns']);
    assert.deepEqual(parseServerConfig('[server]\nmulticast = off\n', F).server.multicast, []);
    assert.match(problem('[server]\nmulticast = mdns, upnp\n'), /\[server\] multicast: "upnp" is not a group the relay carries \(mdns, ssdp, broadcast, or off\)/);
    assert.deepEqual([parseServerConfig('', F).limits.multicast_per_device_per_second, parseServerConfig('', F).limits.multicast_burst], [50, 100]);
    assert.match(problem('[limits]\nmulticast_burst = 0\n'), /\[limits\] multicast_burst: 0 is outside 1\.\.100000/);
  });

  it('[dns]: enabled by default for domain mnedc; the domain is a DNS name, kept lowercase, not in .arpa', () => {
    assert.deepEqual(parseServerConfig('', F).dns, { enabled: 'yes', domain: 'mnedc' });
    assert.equal(parseServerConfig('[dns]\ndomain = Overlay.Example.\n', F).dns.domain, 'overlay.example');
    assert.match(problem('[dns]\ndomain = my_net\n'), /\[dns\] domain: "my_net" is not a DNS name/);
    assert.match(problem('[dns]\ndomain = 10.in-addr.arpa\n'), /\[dns\] domain: .*\.arpa/);
    assert.match(problem('[dns]\nenabled = maybe\n'), /\[dns\] enabled: "maybe" is not one of yes, no/);
  });

  it('[cluster]: none by default; etcd URLs, a network name and credentials that go in pairs, each problem named', () => {
    assert.deepEqual(parseServerConfig('', F).cluster.etcd, []);
    const cluster = parseServerConfig('[cluster]\netcd = http://10.1.0.5:2379, https://etcd-2.lan:2379/\nnetwork = fleet-7\n', F).cluster;
    assert.deepEqual([cluster.etcd, cluster.network], [['http://10.1.0.5:2379', 'https://etcd-2.lan:2379'], 'fleet-7']);
    assert.match(problem('[cluster]\netcd = 10.1.0.5:2379\n'), /\[cluster\] etcd: "10\.1\.0\.5:2379" is not a URL like http:\/\/10\.1\.0\.5:2379/);
    assert.match(problem('[cluster]\netcd = etcd.lan:2379\n'), /\[cluster\] etcd: "etcd\.lan:2379": an etcd client URL is http:\/\/ or https:\/\//);
    assert.match(problem('[cluster]\netcd = http://a:2379/v3/kv\n'), /\[cluster\] etcd: .*nothing else/);
    assert.match(problem('[cluster]\netcd = not a url\n'), /\[cluster\] etcd: "not a url" is not a URL/);
    assert.match(problem('[cluster]\nnetwork = My Net\n'), /\[cluster\] network: "My Net" is not a network name/);
    assert.match(problem('[cluster]\netcd_cert = /etc/mnedc/etcd.crt\n'), /\[cluster\] etcd_key: etcd_cert and etcd_key go together/);
    assert.match(problem('[cluster]\netcd_user = relay\n'), /\[cluster\] etcd_password_file: etcd_user and etcd_password_file go together/);
  });

  it('[cluster]: reads the password file (its newline dropped) and names a file it cannot read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnedc-config-'));
    try {
      writeFileSync(join(dir, 'pw'), 's3cret\n');
      const config = (extra: string) => parseServerConfig(`[cluster]\netcd = http://127.0.0.1:2379\netcd_user = relay\netcd_password_file = ${join(dir, 'pw')}\n${extra}`, F).cluster;
      assert.deepEqual(etcdOptions(config('')).auth, { user: 'relay', password: 's3cret' });
      assert.throws(() => etcdOptions(config(`etcd_ca = ${join(dir, 'missing.pem')}\n`)),
        (e: Error) => e instanceof ClusterConfigError && e.message === `[cluster] etcd_ca: cannot read ${join(dir, 'missing.pem')} (ENOENT)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has working defaults and reads the documented keys, inline comments included', () => {
    const config = parseServerConfig('[server]\nlisten = 0.0.0.0:3334        ; host:port\nsubnet = 10.1.0.0/16\ninterface =\n', F);
    assert.deepEqual(config.server.listen, { host: '0.0.0.0', port: 3334 });
    assert.equal(intToIpv4(config.server.subnet.network), '10.1.0.0');
    assert.equal(config.server.interface, '');
    assert.equal(config.server.mtu, 1400);
    assert.equal(config.server.state_dir, '/var/lib/mnedc');
    assert.equal(config.log.level, 'info');
    assert.equal(parseServerConfig('', F).server.subnet.prefix, 24);
    assert.deepEqual(parseServerConfig('', F).server.allow_overlap, []);
    assert.deepEqual(parseServerConfig('[server]\nallow_overlap = 192.168.0.0/16, 10.0.0.0/8\n', F).server.allow_overlap.map((s) => `${intToIpv4(s.network)}/${s.prefix}`),
      ['192.168.0.0/16', '10.0.0.0/8']);
  });

  it('names file, section, key and the problem', () => {
    assert.equal(problem('[sever]\nlisten = 1.2.3.4:1\n'), `${F}: [sever]: unknown section; known sections are server, limits, dns, cluster, control, metrics, log`);
    assert.match(problem('[server]\nlisten_port = 1\n'), /^\/etc\/mnedc\/server\.ini: \[server\] listen_port: unknown key; known keys are listen, subnet/);
    assert.equal(problem('[server]\nsubnet = 10.0.0.0/8\n'), `${F}: [server] subnet: /8 is outside /16../30 (a /16 holds 65533 devices, a /30 one)`);
    assert.match(problem('[server]\nsubnet = 10.0.0.7/24\n'), /\[server\] subnet: 10\.0\.0\.7\/24 has host bits set/);
    assert.match(problem('[server]\nallow_overlap = 10.0.0.0/8, 192.168.0.1/24\n'), /^\/etc\/mnedc\/server\.ini: \[server\] allow_overlap: 192\.168\.0\.1\/24 has host bits set/);
    // No blanket yes: the operator names the networks they accept.
    assert.equal(problem('[server]\nallow_overlap = true\n'), `${F}: [server] allow_overlap: "true" is not an IPv4 prefix like 10.0.0.0/24`);
    assert.match(problem('[server]\nlisten = 3334\n'), /\[server\] listen: "3334" is not host:port/);
    assert.match(problem('[server]\nlisten = 0.0.0.0:70000\n'), /\[server\] listen: port 70000 is outside 0\.\.65535/);
    assert.match(problem('[server]\nmtu = big\n'), /\[server\] mtu: "big" is not a whole number/);
    assert.match(problem('[server]\nmtu = 100\n'), /\[server\] mtu: 100 is outside 576\.\.65535/);
    assert.match(problem('[server]\ninterface = way-too-long-name0\n'), /\[server\] interface: .* longer than 15/);
    assert.match(problem('[server]\nstate_dir = var/lib\n'), /\[server\] state_dir: "var\/lib" is not an absolute path/);
    assert.match(problem('[log]\nlevel = loud\n'), /\[log\] level: "loud" is not one of fatal, error/);
    assert.match(problem('listen = 1.2.3.4:5\n'), /"listen" is outside any \[section\]/);
    assert.match(problem('[server]\nkeepalive_ms = 5000\ndead_after_ms = 6000\n'), /\[server\] dead_after_ms: 6000 must be at least twice keepalive_ms/);
  });
});
