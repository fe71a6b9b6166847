/**
 * Property-based fuzz cases for the client side: a real RelayClient fed hostile relay traffic through a
 * fake socket (fuzz-harness.ts), checked frame by frame against a model of the protocol. Shared by the
 * `npm test` run (test/fuzz.test.ts) and the long run (scripts/fuzz.js, which requires the compiled
 * dist/test/fuzz-cases.js of this package and of packages/protocol).
 *
 * The FuzzCase shape, the settings (MNEDC_FUZZ_SEED, MNEDC_FUZZ_RUNS) and the byte-stream descriptions are
 * those of packages/protocol/test/fuzz-cases.ts. Shares are in the same units as the protocol cases'
 * (which sum to about 1), so that scripts/fuzz.js can split one total over both files.
 */
import * as fc from 'fast-check';
import {
  anyPieceArb, cutsArb, type Cuts, type Entries, type Fragment, fragmentArb, frameSpecArb, type FuzzCase, materialize,
  MESSAGE_FIELDS, mutate, mutatedPeerListArb, mutationsArb, type Piece, validGoodbyeArb, validPeersArb, validRejectArb,
  validWelcomeArb, welcomeProbeArb, fragmentText,
} from '@mnedc/protocol/dist/test/fuzz-cases';
import { FrameType } from '@mnedc/protocol';
import { type DeviceFault, runClient, type RunPlan, type SessionPlan, SELF_ID } from './fuzz-harness';

export { DEFAULT_SEED, fuzzSettings, parseRuns, type FuzzCase, type FuzzSettings } from '@mnedc/protocol/dist/test/fuzz-cases';

/** Total runs over the client cases in `npm test` (the protocol cases add their own 100,000). */
export const TEST_TOTAL_RUNS = 10_000;

/** Runs per case for a total; every case gets at least one run and the sum is at least `total`. */
export function runsFor(fuzzCase: FuzzCase, total: number): number {
  const shares = FUZZ_CASES.reduce((sum, c) => sum + c.share, 0);
  return Math.max(1, Math.ceil((total * fuzzCase.share) / shares - 1e-9));
}

// ---------------------------------------------------------------------------------------------------
// Stream pieces: the protocol's raw pieces, plus whole control frames described as JSON

const j = (value: fc.JsonValue): Fragment => ({ j: value });

export type ClientPiece =
  | { k: 'raw'; p: Piece }
  | { k: 'bytes'; type: number; b: Buffer }
  | { k: 'json'; type: number; text: Fragment }
  | { k: 'snapshot'; s: SnapshotSpec };

/** A peer snapshot of `count` entries, `perFrame` to a PEERS frame, IDs from a pool (so repeats), self at some indexes. */
export interface SnapshotSpec {
  count: number;
  perFrame: number;
  pool: number;
  self: number[];
  reset: boolean;
  /** Leave out the last frame, so the snapshot is still open when the connection ends. */
  truncated: boolean;
  /** Pool members announced down in the last frame. */
  down: number[];
  /** As PEERS_BIN frames (capability "peers-bin") rather than JSON PEERS. */
  binary?: boolean;
}

/** A PEERS_BIN payload by hand (wire.ts, DISCOVERY), so nothing trusts the encoder under test. */
function binaryPeers(reset: boolean, more: boolean, up: Array<{ deviceId: string; ip: string; hostname: string; underlay?: string[]; since: number }>, down: string[]): Buffer {
  const text = (t: string) => Buffer.concat([Buffer.from([Buffer.byteLength(t, 'latin1') & 255]), Buffer.from(t, 'latin1')]);
  const head = Buffer.alloc(5);
  head[0] = (reset ? 1 : 0) | (more ? 2 : 0);
  head.writeUInt16BE(up.length & 0xffff, 1);
  head.writeUInt16BE(down.length & 0xffff, 3);
  const ups = up.map((p) => {
    const fixed = Buffer.alloc(10);
    p.ip.split('.').forEach((q, i) => { fixed[i] = Number(q) & 255; });
    fixed.writeUIntBE(p.since, 4, 6);
    const underlay = p.underlay ?? [];
    return Buffer.concat([fixed, text(p.deviceId), text(p.hostname), Buffer.from([underlay.length]), ...underlay.map(text)]);
  });
  return Buffer.concat([head, ...ups, ...down.map(text)]);
}

/** Builds a frame by hand, as the protocol cases do, so nothing trusts the encoder under test. */
function frame(type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(4 + payload.length);
  out.writeUInt32BE(((type << 24) | (payload.length & 0xffffff)) >>> 0);
  payload.copy(out, 4);
  return out;
}

const peerId = (i: number, spec: SnapshotSpec): string => (spec.self.includes(i) ? SELF_ID : `peer-${i % spec.pool}`);
const peerIp = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

function snapshotFrames(spec: SnapshotSpec): Buffer {
  const frames: Buffer[] = [];
  const total = Math.max(1, Math.ceil(spec.count / spec.perFrame));
  for (let f = 0; f < total; f++) {
    const last = f === total - 1;
    if (last && spec.truncated && total > 1) break;
    const up = [];
    for (let i = f * spec.perFrame; i < Math.min(spec.count, (f + 1) * spec.perFrame); i++) {
      up.push({ deviceId: peerId(i, spec), ip: peerIp(i), hostname: `host-${i}`, underlay: ['192.168.1.10'], since: i });
    }
    const down = last ? spec.down.map((d) => `peer-${d % spec.pool}`) : [];
    const more = !last || spec.truncated;
    frames.push(spec.binary
      ? frame(FrameType.PeersBin, binaryPeers(f === 0 && spec.reset, more, up, down))
      : frame(FrameType.Peers, Buffer.from(JSON.stringify({ reset: f === 0 && spec.reset, more, up, down }))));
  }
  return Buffer.concat(frames);
}

function toPiece(piece: ClientPiece): Piece {
  switch (piece.k) {
    case 'raw': return piece.p;
    case 'bytes': return { k: 'bytes', b: frame(piece.type, piece.b) };
    case 'json': return { k: 'bytes', b: frame(piece.type, Buffer.from(fragmentText(piece.text), 'utf8')) };
    case 'snapshot': return { k: 'bytes', b: snapshotFrames(piece.s) };
  }
}

export function session(pieces: readonly ClientPiece[], cuts: Cuts, wrongServer = false, end: SessionPlan['end'] = 'close'): SessionPlan {
  const { stream, cuts: points } = materialize(pieces.map(toPiece), cuts);
  return { stream, cuts: points, wrongServer, end };
}

export const msg = (type: number, entries: Entries): ClientPiece => ({ k: 'json', type, text: { obj: entries } });

// ---------------------------------------------------------------------------------------------------
// Arbitraries

/** A WELCOME the client must act on (unless the relay's own address is inside it), with or without "gso". */
const soundWelcomeArb: fc.Arbitrary<Entries> = fc.tuple(validWelcomeArb, fc.boolean(), fc.subarray(['tcp-x', 'future-1', 'peers-bin']),
  fc.option(fc.constantFrom('full', 'names', 'off', 'dns-only'), { freq: 2, nil: undefined })).map(
  ([entries, gso, other, discovery]) => mutate(entries, [
    { op: 'set', key: 'capabilities', value: j(gso ? ['gso', ...other] : other) },
    ...(discovery ? [{ op: 'set' as const, key: 'discovery', value: j(discovery) }] : []),
  ]),
);

function entryJson(entries: Entries, key: string): fc.JsonValue | undefined {
  const value = entries.find(([k]) => k === key)?.[1];
  return value && 'j' in value ? value.j : undefined;
}
const entryText = (entries: Entries, key: string): string | undefined => {
  const v = entryJson(entries, key);
  return typeof v === 'string' ? v : undefined;
};
const entryList = (entries: Entries, key: string): unknown[] | undefined => {
  const v = entryJson(entries, key);
  return Array.isArray(v) ? v : undefined;
};

type RelayKind = 'far' | 'mapped' | 'v6' | 'none' | 'inside' | 'inside-mapped';
const relayKindArb: fc.Arbitrary<RelayKind> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<RelayKind>('far') },
  { weight: 1, arbitrary: fc.constantFrom<RelayKind>('mapped', 'v6', 'none', 'inside', 'inside-mapped') },
);

/** The relay's address as the socket reports it; "inside" puts it in the sound WELCOME's subnet. */
function relayAddress(kind: RelayKind, welcome: Entries): string | undefined {
  const inside = entryText(welcome, 'serverIp');
  switch (kind) {
    case 'far': return '198.51.100.7';
    case 'mapped': return '::ffff:198.51.100.7';
    case 'v6': return '2001:db8::7';
    case 'none': return undefined;
    case 'inside': return inside;
    case 'inside-mapped': return `::ffff:${inside}`;
  }
}

const faultArb = fc.oneof(
  { weight: 18, arbitrary: fc.constant<DeviceFault>('none') },
  { weight: 1, arbitrary: fc.constant<DeviceFault>('configure') },
  { weight: 1, arbitrary: fc.constant<DeviceFault>('write') },
);
const endArb = fc.constantFrom<SessionPlan['end']>('close', 'close', 'error');
const previousIpArb = fc.option(fc.constantFrom('10.0.0.9', '172.16.5.5'), { nil: undefined });
const CONTROL_TYPES = [FrameType.Hello, FrameType.Welcome, FrameType.Reject, FrameType.Peers, FrameType.PeersBin, FrameType.Goodbye];

/** Peer IDs a delta can name: a small pool (so downs meet earlier ups) and the device itself. */
const poolIdArb = fc.oneof({ weight: 6, arbitrary: fc.nat({ max: 7 }).map((n) => `peer-${n}`) }, { weight: 1, arbitrary: fc.constant(SELF_ID) });
const deltaArb: fc.Arbitrary<ClientPiece> = fc.record({
  reset: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  more: fc.boolean(),
  up: fc.array(fc.tuple(poolIdArb, fc.nat({ max: 3 })), { maxLength: 5 }),
  down: fc.array(poolIdArb, { maxLength: 4 }),
  binary: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
}).map((d): ClientPiece => {
  const up = d.up.map(([deviceId, n]) => ({ deviceId, ip: `10.1.0.${n + 2}`, hostname: deviceId, since: n }));
  if (d.binary) return { k: 'bytes', type: FrameType.PeersBin, b: binaryPeers(d.reset, d.more, up, d.down) };
  return msg(FrameType.Peers, [['reset', j(d.reset)], ['more', j(d.more)], ['up', j(up)], ['down', j(d.down)]]);
});

const snapshotArb: fc.Arbitrary<ClientPiece> = fc.record({
  count: fc.oneof({ weight: 12, arbitrary: fc.integer({ min: 0, max: 40 }) }, { weight: 1, arbitrary: fc.integer({ min: 200, max: 2000 }) }),
  perFrame: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 100, max: 700 })),
  pool: fc.oneof(fc.constant(1_000_000), fc.integer({ min: 1, max: 12 })),
  self: fc.array(fc.nat({ max: 50 }), { maxLength: 2 }),
  reset: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  truncated: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  down: fc.array(fc.nat({ max: 20 }), { maxLength: 3 }),
  binary: fc.boolean(),
}).map((s): ClientPiece => ({ k: 'snapshot', s }));

/** PEERS_BIN frames of random bytes, or a sound one with a byte changed: refused or taken within limits. */
const hostileBinaryArb: fc.Arbitrary<ClientPiece> = fc.oneof(
  fc.uint8Array({ maxLength: 48 }).map((b): ClientPiece => ({ k: 'bytes', type: FrameType.PeersBin, b: Buffer.from(b) })),
  fc.tuple(fc.nat(), fc.nat(255)).map(([at, value]): ClientPiece => {
    const b = binaryPeers(false, false, [{ deviceId: 'peer-1', ip: '10.1.0.2', hostname: 'h', underlay: ['192.168.1.1'], since: 1 }], ['peer-2']);
    b[at % b.length] = value;
    return { k: 'bytes', type: FrameType.PeersBin, b };
  }),
);

const mutatedArb = (type: number, valid: fc.Arbitrary<Entries>, fields: readonly string[]): fc.Arbitrary<ClientPiece> =>
  fc.tuple(valid, mutationsArb(fields)).map(([entries, mutations]) => msg(type, mutate(entries, mutations)));

const rawFrameArb = frameSpecArb.map((f): ClientPiece => ({ k: 'raw', p: { k: 'frame', f } }));
const dataSpecArb = frameSpecArb
  .filter((f) => f.type === FrameType.Data || f.type === FrameType.DataGso || f.type === FrameType.Ping || f.type === FrameType.Pong);
const dataFrameArb = dataSpecArb.map((f): ClientPiece => ({ k: 'raw', p: { k: 'frame', f } }));
/**
 * Data for a session that did (not) negotiate "gso": a DATA_GSO there ends the connection at once, so
 * most become DATA (same bytes) and a few stay, to be refused.
 */
const dataFrameForArb = (gso: boolean, ip?: string): fc.Arbitrary<ClientPiece> => fc.tuple(dataSpecArb, fc.nat({ max: 9 }), fc.boolean()).map(([f, n, inside]): ClientPiece => {
  const keep = gso || f.type !== FrameType.DataGso || n === 0;
  const spec = keep ? f : { ...f, type: FrameType.Data };
  // Half the packets from the lease's own address (inside the overlay, so the TUN gets them); the rest
  // from random sources, which a relay never forwards and the client drops.
  if (!inside || ip === undefined || !/^\d+\.\d+\.\d+\.\d+$/.test(ip) || (spec.type !== FrameType.Data && spec.type !== FrameType.DataGso)) {
    return { k: 'raw', p: { k: 'frame', f: spec } };
  }
  const at = spec.type === FrameType.DataGso ? 10 : 0;
  const head = new Uint8Array(Math.max(spec.head.length, at + 20));
  head.set(spec.head);
  head[at] = 0x45;
  head.set(ip.split('.').map(Number), at + 12);
  return { k: 'raw', p: { k: 'frame', f: { ...spec, head, length: Math.max(spec.length, head.length) } } };
});

/** Control traffic a hostile relay may send, sound or not, in any order. */
const controlPieceArb: fc.Arbitrary<ClientPiece> = fc.oneof(
  { weight: 1, arbitrary: soundWelcomeArb.map((e) => msg(FrameType.Welcome, e)) },
  { weight: 2, arbitrary: mutatedArb(FrameType.Welcome, soundWelcomeArb, MESSAGE_FIELDS.WELCOME) },
  { weight: 1, arbitrary: welcomeProbeArb.map(({ entries }) => msg(FrameType.Welcome, entries)) },
  { weight: 1, arbitrary: validRejectArb.map((e) => msg(FrameType.Reject, e)) },
  { weight: 1, arbitrary: mutatedArb(FrameType.Reject, validRejectArb, MESSAGE_FIELDS.REJECT) },
  { weight: 1, arbitrary: validGoodbyeArb.map((e) => msg(FrameType.Goodbye, e)) },
  { weight: 1, arbitrary: mutatedArb(FrameType.Goodbye, validGoodbyeArb, MESSAGE_FIELDS.GOODBYE) },
  { weight: 2, arbitrary: validPeersArb.map((e) => msg(FrameType.Peers, e)) },
  { weight: 2, arbitrary: mutatedArb(FrameType.Peers, validPeersArb, MESSAGE_FIELDS.PEERS) },
  {
    weight: 1,
    arbitrary: fc.tuple(validPeersArb, mutatedPeerListArb).map(([e, up]) => msg(FrameType.Peers, mutate(e, [{ op: 'set', key: 'up', value: up }]))),
  },
  { weight: 2, arbitrary: deltaArb },
  { weight: 1, arbitrary: hostileBinaryArb },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...CONTROL_TYPES), fragmentArb).map(([type, text]): ClientPiece => ({ k: 'json', type, text })) },
  { weight: 2, arbitrary: dataFrameArb },
  { weight: 1, arbitrary: rawFrameArb },
);

const welcomeFirst = (first: Entries | null, rest: ClientPiece[]): ClientPiece[] => (first ? [msg(FrameType.Welcome, first), ...rest] : rest);

interface Common {
  vnet: boolean;
  relay: RelayKind;
  welcome: Entries;
  previousIp: string | undefined;
  fault: DeviceFault;
  stopLive: boolean;
}

const commonArb: fc.Arbitrary<Common> = fc.record({
  vnet: fc.boolean(),
  relay: relayKindArb,
  welcome: soundWelcomeArb,
  previousIp: previousIpArb,
  fault: faultArb,
  stopLive: fc.boolean(),
});

function plan(c: Common, sessions: SessionPlan[]): RunPlan {
  return { vnet: c.vnet, relay: relayAddress(c.relay, c.welcome), previousIp: c.previousIp, fault: c.fault, sessions, stopLive: c.stopLive };
}

// ---------------------------------------------------------------------------------------------------
// The cases

export const FUZZ_CASES: readonly FuzzCase[] = [
  {
    name: 'client: arbitrary byte streams and splits, before WELCOME and after one (gso or not, vnet TUN or not) → no throw, errors drop the connection and are named',
    share: 0.04,
    property: () => fc.property(
      commonArb,
      fc.constantFrom('none', 'welcome', 'welcome+peers'),
      validPeersArb,
      fc.array(anyPieceArb, { maxLength: 8 }),
      cutsArb,
      endArb,
      (common, start, peers, pieces, cuts, end) => {
        const prefix: ClientPiece[] = start === 'none' ? [] : [msg(FrameType.Welcome, common.welcome)];
        if (start === 'welcome+peers') prefix.push(msg(FrameType.Peers, peers));
        runClient(plan(common, [session([...prefix, ...pieces.map((p): ClientPiece => ({ k: 'raw', p }))], cuts, false, end)]));
      },
    ),
  },
  {
    name: 'client: hostile WELCOME/REJECT/PEERS/GOODBYE in and out of order, across reconnects → TUN set only from sound WELCOMEs, the model\'s every step',
    share: 0.04,
    property: () => fc.property(
      commonArb,
      fc.array(fc.record({
        lead: fc.option(soundWelcomeArb, { freq: 2, nil: null }),
        pieces: fc.array(controlPieceArb, { maxLength: 6 }),
        cuts: cutsArb,
        wrongServer: fc.oneof({ weight: 19, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
        end: endArb,
      }), { minLength: 1, maxLength: 3 }),
      (common, sessions) => {
        runClient(plan(common, sessions.map((s) => session(welcomeFirst(s.lead, s.pieces), s.cuts, s.wrongServer, s.end))));
      },
    ),
  },
  {
    name: 'client: PEERS and PEERS_BIN snapshots (up to 2,000 peers split across `more`, repeated and own IDs, cut by reconnects) and deltas → table within what was announced, events add up to it',
    share: 0.025,
    property: () => fc.property(
      commonArb,
      fc.array(fc.record({
        lead: fc.option(soundWelcomeArb, { freq: 8, nil: null }),
        pieces: fc.array(fc.oneof(snapshotArb, deltaArb), { maxLength: 5 }),
        cuts: cutsArb,
      }), { minLength: 1, maxLength: 3 }),
      (common, sessions) => {
        runClient(plan(common, sessions.map((s) => session(welcomeFirst(s.lead, s.pieces), s.cuts))));
      },
    ),
  },
  {
    name: 'client: DATA/DATA_GSO with random contents and virtio headers, PING/PONG → the TUN gets exactly the payloads received while connected',
    share: 0.025,
    property: () => fc.property(
      commonArb.chain((common) => {
        const gso = common.vnet && (entryList(common.welcome, 'capabilities') ?? []).includes('gso');
        return fc.tuple(fc.constant(common), fc.array(fc.record({
          lead: fc.option(fc.constant(common.welcome), { freq: 8, nil: null }),
          pieces: fc.array(fc.oneof({ weight: 8, arbitrary: dataFrameForArb(gso, entryText(common.welcome, 'ip')) }, { weight: 1, arbitrary: controlPieceArb }), { maxLength: 10 }),
          cuts: cutsArb,
          end: endArb,
        }), { minLength: 1, maxLength: 2 }));
      }),
      ([common, sessions]) => {
        runClient(plan(common, sessions.map((s) => session(welcomeFirst(s.lead, s.pieces), s.cuts, false, s.end))));
      },
    ),
  },
];
