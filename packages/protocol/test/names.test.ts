import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { dnsLabel, isDnsLabel, isDnsName, parseHello, parsePeerUpdate, sanitizeHostname } from '../src';

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

describe('RFC 1123 names', () => {
  it('tells canonical labels and names from the rest', () => {
    for (const good of ['a', 'device-b', '0', '9lives', 'x'.repeat(63)]) assert.ok(isDnsLabel(good), good);
    for (const bad of ['', '-a', 'a-', 'A', 'a_b', 'a.b', 'x'.repeat(64), 'é', 'a\n']) assert.ok(!isDnsLabel(bad), JSON.stringify(bad));
    for (const good of ['a.b', 'kitchen.example.org', `${'x'.repeat(63)}.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(61)}`]) {
      assert.ok(isDnsName(good), good);
    }
    for (const bad of ['', '.', 'a..b', 'a.', '.a', 'Device.B', 'a.-b', `${'x'.repeat(63)}.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(63)}`]) {
      assert.ok(!isDnsName(bad), bad);
    }
  });

  it('sanitises free text into one label or a dotted name', () => {
    assert.equal(dnsLabel('  Hello World!  '), 'hello-world');
    assert.equal(dnsLabel('éé'), 'ee');
    assert.equal(dnsLabel('___'), '');
    assert.equal(dnsLabel('Device.B'), 'device-b');
    assert.equal(sanitizeHostname('Kitchen.Example.ORG'), 'kitchen.example.org');
    assert.equal(sanitizeHostname('Büro PC_1'), 'buro-pc-1');
    assert.equal(sanitizeHostname('a..b.'), 'a.b');
    assert.equal(sanitizeHostname('evil\nhost\u001b[31m'), 'evil-host-31m');
    assert.equal(sanitizeHostname('\u0000\u0007\t.\r\n'), '');
    assert.equal(sanitizeHostname('x'.repeat(80)), 'x'.repeat(63));
    // 4 labels of 63 make 255 characters: the last whole label goes.
    assert.equal(sanitizeHostname(Array(4).fill('q'.repeat(63)).join('.')), Array(3).fill('q'.repeat(63)).join('.'));
  });

  it('always yields a canonical name or nothing, and leaves canonical names alone (fast-check)', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => {
      const name = sanitizeHostname(text);
      assert.ok(name === '' || isDnsName(name), JSON.stringify(name));
      assert.equal(sanitizeHostname(name), name);
    }), { numRuns: 5000 });
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 100 }), (text) => {
      const label = dnsLabel(text);
      assert.ok(label === '' || isDnsLabel(label), JSON.stringify(label));
    }), { numRuns: 2000 });
  });

  it('HELLO and PEERS carry only the sanitised hostname', () => {
    const hello = parseHello(json({ version: 1, deviceId: 'evil', hostname: 'device-b\n10.0.0.9 bank.example\u001b]0;x\u0007' }));
    assert.equal(hello.hostname, 'device-b-10.0.0.9-bank.example-0-x');
    assert.equal(parseHello(json({ version: 1, deviceId: 'e', hostname: '\u0000\u001b' })).hostname, '');
    assert.equal(parseHello(json({ version: 1, deviceId: 'e' })).hostname, '');
    const update = parsePeerUpdate(json({ up: [{ deviceId: 'p', ip: '10.0.0.9', hostname: 'Web Server\r\n', since: 1 }] }));
    assert.equal(update.up[0]!.hostname, 'web-server');
  });
});
