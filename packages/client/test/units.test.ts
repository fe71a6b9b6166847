import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ConfigError } from '@mnedc/common';
import type { PeerInfo } from '@mnedc/protocol';
import { parseSubnet } from '@mnedc/protocol';
import { Backoff, onOverlay, parseClientConfig, PeerTable } from '../src';

describe('Backoff', () => {
  it('doubles up to the cap, with jitter in the upper half, and resets', () => {
    const low = new Backoff(250, 15_000, () => 0);
    assert.deepEqual(Array.from({ length: 9 }, () => low.next()), [125, 250, 500, 1000, 2000, 4000, 7500, 7500, 7500]);
    const high = new Backoff(250, 15_000, () => 0.999999);
    assert.deepEqual(Array.from({ length: 8 }, () => high.next()), [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
    high.reset();
    assert.equal(high.next(), 250);
  });
});

const peer = (id: string, ip: string, since = 1): PeerInfo => ({ deviceId: id, ip, hostname: id, underlay: [], since });

describe('PeerTable', () => {
  it('leaves out peers a relay announces off the overlay (a LAN host, a public address, the broadcast address)', () => {
    const table = new PeerTable('me');
    const overlay = parseSubnet('10.0.0.0/24');
    let changes = table.apply({ reset: true, more: false, up: [peer('a', '10.0.0.3'), peer('lan', '192.168.0.1'), peer('dns', '8.8.8.8'),
      peer('bcast', '10.0.0.255'), peer('net', '10.0.0.0'), peer('v6', 'fd00::1')], down: [] }, overlay);
    assert.deepEqual(changes.up.map((p) => p.deviceId), ['a']);
    assert.equal(changes.offOverlay, 5);
    assert.deepEqual(table.list().map((p) => p.deviceId), ['a']);
    // A known peer moved off the overlay is gone, not left at its old address.
    changes = table.apply({ reset: false, more: false, up: [peer('a', '127.0.0.1')], down: [] }, overlay);
    assert.deepEqual(changes.down.map((p) => p.deviceId), ['a']);
    assert.equal(table.size, 0);
    assert.equal(onOverlay('10.0.0.254', overlay), true);
  });

  it('builds from a chunked snapshot, ignores itself and reports only real changes', () => {
    const table = new PeerTable('me');
    let changes = table.apply({ reset: true, more: true, up: [peer('me', '10.0.0.2'), peer('a', '10.0.0.3')], down: [] });
    assert.deepEqual(changes.up.map((p) => p.deviceId), ['a']);
    changes = table.apply({ reset: false, more: false, up: [peer('b', '10.0.0.4')], down: [] });
    assert.deepEqual(changes.up.map((p) => p.deviceId), ['b']);
    assert.deepEqual(table.list().map((p) => p.deviceId), ['a', 'b']);
    changes = table.apply({ reset: false, more: false, up: [], down: ['a', 'nobody'] });
    assert.deepEqual(changes.down.map((p) => p.deviceId), ['a']);
  });

  it('after a reconnect snapshot, reports who left and who came meanwhile, but not who stayed', () => {
    const table = new PeerTable('me');
    table.apply({ reset: true, more: false, up: [peer('stays', '10.0.0.3'), peer('leaves', '10.0.0.4')], down: [] });
    let changes = table.apply({ reset: true, more: true, up: [peer('stays', '10.0.0.3')], down: [] });
    assert.deepEqual(changes, { up: [], down: [] }, 'nothing final until the last chunk');
    changes = table.apply({ reset: false, more: false, up: [peer('new', '10.0.0.9')], down: [] });
    assert.deepEqual(changes.up.map((p) => p.deviceId), ['new']);
    assert.deepEqual(changes.down.map((p) => p.deviceId), ['leaves']);
    assert.equal(table.size, 2);
  });

  it('a reset inside an unfinished snapshot (a reconnect mid-snapshot) still reports who the first part announced and the second lacks', () => {
    const table = new PeerTable('me');
    let changes = table.apply({ reset: true, more: true, up: [peer('a', '10.0.0.3'), peer('b', '10.0.0.4')], down: [] });
    assert.deepEqual(changes.up.map((p) => p.deviceId), ['a', 'b']);
    changes = table.apply({ reset: true, more: true, up: [peer('b', '10.0.0.4')], down: [] });
    assert.deepEqual(changes, { up: [], down: [] }, 'b was reported up already');
    changes = table.apply({ reset: false, more: false, up: [], down: [] });
    assert.deepEqual(changes.down.map((p) => p.deviceId), ['a'], 'a was reported up, so its absence must be reported');
    assert.deepEqual(table.list().map((p) => p.deviceId), ['b']);
  });
});

const JOIN = `mnedc1.${Buffer.alloc(32, 1).toString('base64url')}.${Buffer.alloc(32, 2).toString('base64url')}`;

describe('client configuration', () => {
  it('requires a join string and explains a damaged one without echoing it', () => {
    assert.throws(() => parseClientConfig('[client]\nserver = 1.2.3.4:1\n', 'c.ini'),
      (e: unknown) => e instanceof ConfigError && e.problem === 'missing' && /\[client\] join: is required/.test(e.message));
    const damaged = `${JOIN.slice(0, -4)}`;
    assert.throws(() => parseClientConfig(`[client]\nserver = 1.2.3.4:1\njoin = ${damaged}\n`, 'c.ini'), (e: unknown) =>
      e instanceof ConfigError && /join string is damaged/.test(e.message) && !e.message.includes(damaged.slice(-20)));
    assert.throws(() => parseClientConfig('[client]\nserver = 1.2.3.4:1\njoin = hello\n', 'c.ini'), /not a join string/);
  });

  it('requires a server, and says so as a missing setting', () => {
    assert.throws(() => parseClientConfig('[client]\n', '/etc/mnedc/client.ini'),
      (e: unknown) => e instanceof ConfigError && e.problem === 'missing' && e.message === '/etc/mnedc/client.ini: [client] server: is required but not set');
  });

  it('reads the documented keys and checks them', () => {
    const config = parseClientConfig(`[client]\nserver = 192.168.0.10:3334   ; host:port\njoin = ${JOIN}\ndevice_id =\n`, 'c.ini');
    assert.deepEqual(config.client.server, [{ host: '192.168.0.10', port: 3334 }]);
    assert.equal(config.client.device_id, '');
    assert.equal(config.client.interface, 'mnedc0');
    assert.deepEqual(parseClientConfig(`[client]\nserver = relay.example.org:1\njoin = ${JOIN}\n`, 'c.ini').client.server, [{ host: 'relay.example.org', port: 1 }]);
    assert.deepEqual(parseClientConfig(`[client]\nserver = [fd00::1]:3334\njoin = ${JOIN}\n`, 'c.ini').client.server, [{ host: 'fd00::1', port: 3334 }]);
    assert.throws(() => parseClientConfig('[client]\nserver = 1.2.3.4:0\n', 'c.ini'), /\[client\] server: port 0 is outside 1\.\.65535/);
    // A cluster: several relays, the first preferred.
    assert.deepEqual(parseClientConfig(`[client]\nserver = 10.1.0.1:3334, relay-b.example:3334,[fd00::3]:3334\njoin = ${JOIN}\n`, 'c.ini').client.server,
      [{ host: '10.1.0.1', port: 3334 }, { host: 'relay-b.example', port: 3334 }, { host: 'fd00::3', port: 3334 }]);
    assert.throws(() => parseClientConfig(`[client]\nserver = 10.1.0.1:3334, 10.1.0.1:3334\njoin = ${JOIN}\n`, 'c.ini'), /\[client\] server: names 10\.1\.0\.1:3334 twice/);
    assert.throws(() => parseClientConfig(`[client]\nserver = 10.1.0.1:3334, oops\njoin = ${JOIN}\n`, 'c.ini'), /\[client\] server: "oops" is not host:port/);
    assert.throws(() => parseClientConfig(`[client]\nserver = ,\njoin = ${JOIN}\n`, 'c.ini'), /\[client\] server: names no relay/);
    assert.throws(() => parseClientConfig(`[client]\nserver = 1.2.3.4:1\njoin = ${JOIN}\ndevice_id = has space\n`, 'c.ini'), /\[client\] device_id: "has space" is not a device ID/);
    assert.throws(() => parseClientConfig(`[client]\nserver = 1.2.3.4:1\njoin = ${JOIN}\ninterface =\n`, 'c.ini'), /\[client\] interface: must name the TUN interface/);
    assert.throws(() => parseClientConfig(`[client]\nserver = 1.2.3.4:1\njoin = ${JOIN}\n[server]\n`, 'c.ini'), /\[server\]: unknown section/);
  });
});
