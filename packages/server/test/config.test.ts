import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ConfigError } from '@mnedc/common';
import { intToIpv4 } from '@mnedc/protocol';
import { parseServerConfig } from '../src';

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
  it('[dns]: enabled by default for domain mnedc; the domain is a DNS name, kept lowercase, not in .arpa', () => {
    assert.deepEqual(parseServerConfig('', F).dns, { enabled: 'yes', domain: 'mnedc' });
    assert.equal(parseServerConfig('[dns]\ndomain = Overlay.Example.\n', F).dns.domain, 'overlay.example');
    assert.match(problem('[dns]\ndomain = my_net\n'), /\[dns\] domain: "my_net" is not a DNS name/);
    assert.match(problem('[dns]\ndomain = 10.in-addr.arpa\n'), /\[dns\] domain: .*\.arpa/);
    assert.match(problem('[dns]\nenabled = maybe\n'), /\[dns\] enabled: "maybe" is not one of yes, no/);
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
    assert.equal(problem('[sever]\nlisten = 1.2.3.4:1\n'), `${F}: [sever]: unknown section; known sections are server, limits, dns, control, metrics, log`);
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
