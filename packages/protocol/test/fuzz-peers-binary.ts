/**
 * PEERS_BIN fuzz case (fuzz-cases.ts runs it with the others): whatever bytes a hostile relay puts in a
 * PEERS_BIN frame, parsePeersBinary returns an update within the limits of JSON PEERS or throws a
 * ProtocolError, nothing else; a sound encoding round-trips exactly.
 */
import { strict as assert } from 'node:assert';
import * as fc from 'fast-check';
import { isValidDeviceId, isUnderlayAddress, type PeerInfo, type PeerUpdate } from '../src/messages';
import { isDnsName } from '../src/names';
import { encodePeersBinary, parsePeersBinary } from '../src/peers-binary';
import { HEADER_BYTES, ProtocolError } from '../src/wire';

const idArb = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}$/);
const peerArb: fc.Arbitrary<PeerInfo> = fc.record({
  deviceId: idArb,
  ip: fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((q) => q.join('.')),
  hostname: fc.constantFrom('', 'a', 'host-1', 'x.example.org', 'a'.repeat(63)),
  underlay: fc.array(fc.constantFrom('192.168.1.10', 'fe80::1', '2001:db8::7', '10.0.0.1'), { maxLength: 16 }),
  since: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
});
const updateArb = fc.record({ reset: fc.boolean(), up: fc.array(peerArb, { maxLength: 20 }), down: fc.array(idArb, { maxLength: 20 }) });

type Edit = { at: number; op: 'flip' | 'cut' | 'insert' | 'count'; value: number };
const editArb: fc.Arbitrary<Edit> = fc.record({ at: fc.nat(), op: fc.constantFrom('flip', 'cut', 'insert', 'count'), value: fc.nat(0xffff) });

function applyEdit(bytes: Buffer, e: Edit): Buffer {
  if (bytes.length === 0) return Buffer.from([e.value & 255]);
  const at = e.at % bytes.length;
  switch (e.op) {
    case 'flip': { const out = Buffer.from(bytes); out[at] = e.value & 255; return out; }
    case 'cut': return bytes.subarray(0, at);
    case 'insert': return Buffer.concat([bytes.subarray(0, at), Buffer.from([e.value & 255]), bytes.subarray(at)]);
    case 'count': { const out = Buffer.from(bytes); if (out.length >= 5) out.writeUInt16BE(e.value, 1 + 2 * (e.at % 2)); return out; }
  }
}

/** Either a sound update or a ProtocolError; any other throw fails the case. */
function checkParsed(payload: Buffer): PeerUpdate | null {
  let update: PeerUpdate;
  try {
    update = parsePeersBinary(payload);
  } catch (err) {
    if (err instanceof ProtocolError) return null;
    throw err;
  }
  assert.ok(typeof update.reset === 'boolean' && typeof update.more === 'boolean');
  for (const p of update.up) {
    assert.ok(isValidDeviceId(p.deviceId), 'deviceId');
    assert.match(p.ip, /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/);
    assert.ok(p.hostname === '' || isDnsName(p.hostname), `hostname ${JSON.stringify(p.hostname)}`);
    assert.ok(p.underlay.length <= 16 && p.underlay.every(isUnderlayAddress), 'underlay');
    assert.ok(Number.isSafeInteger(p.since) && p.since >= 0, 'since');
  }
  assert.ok(update.down.every(isValidDeviceId), 'down');
  return update;
}

export const PEERS_BINARY_CASE = {
  name: 'PEERS_BIN: sound encodings round-trip; arbitrary bytes and edited encodings → a sound update or ProtocolError',
  share: 0.05,
  property: () => fc.property(updateArb, fc.array(editArb, { maxLength: 4 }), fc.uint8Array({ maxLength: 64 }), (u, edits, noise) => {
    const frames = encodePeersBinary(u.reset, u.up, u.down);
    const decoded = frames.map((f) => checkParsed(f.subarray(HEADER_BYTES)));
    assert.deepEqual(decoded.flatMap((d) => d!.up), u.up.map((p) => ({ ...p }))); // fast-check's records have no prototype
    assert.deepEqual(decoded.flatMap((d) => d!.down), u.down);
    assert.equal(decoded[0]!.reset, u.reset);
    const edited = edits.reduce(applyEdit, Buffer.from(frames[0]!.subarray(HEADER_BYTES)));
    checkParsed(edited);
    checkParsed(Buffer.from(noise));
  }),
};
