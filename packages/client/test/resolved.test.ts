import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import { linkDnsOf, ResolvedLink, resolvectlCommands } from '../src/resolved';

const welcome = { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 2000, deadAfterMs: 6000, capabilities: [] };

describe('systemd-resolved per-link DNS', () => {
  it('routes only the relay\'s domain to it, and reverts', () => {
    assert.deepEqual(resolvectlCommands('mnedc0', { serverIp: '10.0.0.1', domain: 'mnedc' }),
      [['dns', 'mnedc0', '10.0.0.1'], ['domain', 'mnedc0', '~mnedc'], ['default-route', 'mnedc0', 'false']]);
    assert.deepEqual(resolvectlCommands('mnedc0', null), [['revert', 'mnedc0']]);
    assert.equal(linkDnsOf(welcome), null, 'a relay without DNS');
    assert.deepEqual(linkDnsOf({ ...welcome, dnsDomain: 'mnedc' }), { serverIp: '10.0.0.1', domain: 'mnedc' });
  });

  it('sets the link once per change, in order, reverts on stop, and survives a failing resolvectl', async () => {
    const calls: string[] = [];
    let fail = false;
    const link = new ResolvedLink(() => 'mnedc0', pino({ level: 'silent' }), async (args) => {
      calls.push(args.join(' '));
      if (fail) throw new Error('Failed to set DNS configuration: Access denied');
    });
    await link.apply({ serverIp: '10.0.0.1', domain: 'mnedc' });
    await link.apply({ serverIp: '10.0.0.1', domain: 'mnedc' });
    assert.deepEqual(calls, ['dns mnedc0 10.0.0.1', 'domain mnedc0 ~mnedc', 'default-route mnedc0 false'], 'a reconnect to the same relay sets nothing');
    fail = true;
    await link.apply({ serverIp: '10.0.0.1', domain: 'other' });
    fail = false;
    await link.apply({ serverIp: '10.0.0.1', domain: 'other' });
    assert.deepEqual(calls.slice(3), ['dns mnedc0 10.0.0.1', 'dns mnedc0 10.0.0.1', 'domain mnedc0 ~other', 'default-route mnedc0 false'],
      'a failed attempt is made again at the next WELCOME');
    await link.revert();
    await link.revert();
    assert.deepEqual(calls.slice(7), ['revert mnedc0']);
  });
});
