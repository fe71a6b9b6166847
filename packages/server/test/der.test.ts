import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  DerError, derBoolean, derExplicit, derLength, derNamedBits, derNull, derOid, derSequence, derTime,
  derUnsignedInteger, derValue, pem,
} from '../src/stores/der';
import { oidText, readDer, readHeader } from './der-reader';

const hex = (b: Buffer) => b.toString('hex');

describe('DER writer', () => {
  it('encodes every length 0..70000 minimally, and the reader gets it back', () => {
    for (let n = 0; n <= 70_000; n++) {
      const encoded = derLength(n);
      const header = readHeader(Buffer.concat([Buffer.from([0x04]), encoded]));
      assert.equal(header.length, n);
      assert.equal(header.start, 1 + encoded.length);
      assert.equal(encoded.length, n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4, `length ${n}`);
    }
    assert.equal(hex(derLength(127)), '7f');
    assert.equal(hex(derLength(128)), '8180');
    assert.equal(hex(derLength(256)), '820100');
    assert.equal(hex(derLength(70_000)), '83011170');
    assert.throws(() => derLength(-1), DerError);
    assert.throws(() => derLength(1.5), DerError);
  });

  it('wraps contents of boundary and random sizes so a strict reader returns them whole', () => {
    const sizes = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 70_000];
    for (let i = 0; i < 40; i++) sizes.push(Math.floor(Math.random() * 70_001));
    for (const n of sizes) {
      const contents = Buffer.alloc(n, n & 0xff);
      const node = readDer(derValue(0x04, contents));
      assert.equal(node.tag, 0x04);
      assert.ok(node.value.equals(contents), `contents of ${n} bytes`);
    }
    // Nested: a SEQUENCE whose children straddle the short/long boundary.
    const seq = readDer(derSequence(derValue(0x04, Buffer.alloc(127)), derValue(0x04, Buffer.alloc(300))));
    assert.deepEqual(seq.children?.map((c) => c.value.length), [127, 300]);
  });

  it('writes minimal two\'s complement INTEGERs that stay positive', () => {
    assert.equal(hex(derUnsignedInteger(0)), '020100');
    assert.equal(hex(derUnsignedInteger(2)), '020102');
    assert.equal(hex(derUnsignedInteger(127)), '02017f');
    assert.equal(hex(derUnsignedInteger(128)), '02020080');
    assert.equal(hex(derUnsignedInteger(256)), '02020100');
    assert.equal(hex(derUnsignedInteger(Buffer.from('000001', 'hex'))), '020101');
    assert.equal(hex(derUnsignedInteger(Buffer.from('ff00', 'hex'))), '020300ff00');
    assert.equal(hex(derUnsignedInteger(Buffer.alloc(0))), '020100');
    assert.throws(() => derUnsignedInteger(-1), DerError);
  });

  it('writes OBJECT IDENTIFIERs as the standards list them', () => {
    assert.equal(hex(derOid('1.2.840.113549.1.1.11')), '06092a864886f70d01010b');
    assert.equal(hex(derOid('1.3.101.112')), '06032b6570');
    assert.equal(hex(derOid('2.5.29.19')), '0603551d13');
    assert.equal(hex(derOid('1.3.6.1.5.5.7.3.1')), '06082b06010505070301');
    assert.equal(hex(derOid('2.999.3')), '0603883703'); // X.690 8.19.5's example: the first pair above 127
    for (const oid of ['1.2.840.113549.1.1.11', '2.5.4.3', '2.999.3', '1.3.6.1.4.1.2147483648']) assert.equal(oidText(readDer(derOid(oid)).value), oid);
    for (const bad of ['1', '1.', '3.1', '1.40', 'a.b', '1..2']) assert.throws(() => derOid(bad), DerError, bad);
  });

  it('writes named bits without trailing zero bits (keyUsage)', () => {
    assert.equal(hex(derNamedBits([0])), '03020780'); // digitalSignature
    assert.equal(hex(derNamedBits([0, 2])), '030205a0'); // + keyEncipherment
    assert.equal(hex(derNamedBits([8])), '0303070080');
    assert.equal(hex(derNamedBits([])), '030100');
  });

  it('writes UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280 4.1.2.5)', () => {
    assert.equal(readDer(derTime(new Date('2049-12-31T23:59:59.999Z'))).value.toString(), '491231235959Z');
    const t2049 = readDer(derTime(new Date('2049-12-31T23:59:59Z')));
    assert.equal(t2049.tag, 0x17);
    const t2050 = readDer(derTime(new Date('2050-01-01T00:00:00Z')));
    assert.equal(t2050.tag, 0x18);
    assert.equal(t2050.value.toString(), '20500101000000Z');
    assert.equal(readDer(derTime(new Date('1950-01-01T00:00:00Z'))).value.toString(), '500101000000Z');
    assert.equal(readDer(derTime(new Date('1949-12-31T23:59:59Z'))).tag, 0x18);
    assert.equal(readDer(derTime(new Date('2126-11-09T17:42:22Z'))).value.toString(), '21261109174222Z');
    assert.throws(() => derTime(new Date(NaN)), DerError);
  });

  it('writes the small fixed types and refuses what they cannot hold', () => {
    assert.equal(hex(derBoolean(true)), '0101ff');
    assert.equal(hex(derBoolean(false)), '010100');
    assert.equal(hex(derNull()), '0500');
    assert.equal(hex(derExplicit(3, derNull())), 'a3020500');
    assert.throws(() => derExplicit(31, derNull()), DerError);
    assert.throws(() => derValue(0x1f, Buffer.alloc(0)), DerError);
  });

  it('armours PEM in 64-character lines', () => {
    const text = pem('CERTIFICATE', Buffer.alloc(100, 7));
    const lines = text.trimEnd().split('\n');
    assert.equal(lines[0], '-----BEGIN CERTIFICATE-----');
    assert.equal(lines.at(-1), '-----END CERTIFICATE-----');
    assert.deepEqual(lines.slice(1, -1).map((l) => l.length), [64, 64, 8]);
  });
});
