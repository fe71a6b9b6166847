/**
 * Fuzzing of the client's handling of what a relay sends: the properties are in fuzz-cases.ts (shared
 * with `npm run fuzz`, scripts/fuzz.js). This run does TEST_TOTAL_RUNS cases in total with a fixed seed,
 * on top of the protocol package's 100,000; MNEDC_FUZZ_SEED=<int> and MNEDC_FUZZ_RUNS=<total>|<n>x
 * override that (a total applies to this file's cases alone). A failure prints the seed and the
 * fast-check path, to replay one case with `node scripts/fuzz.js --only <name> --seed S --path P`.
 */
import { strict as assert } from 'node:assert';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import * as fc from 'fast-check';
import { assertNoPollution } from '@mnedc/protocol/dist/test/fuzz-cases';
import { FrameType } from '@mnedc/protocol';
import { FUZZ_CASES, fuzzSettings, msg, runsFor, session, TEST_TOTAL_RUNS, type ClientPiece } from './fuzz-cases';
import { runClient, type RunPlan } from './fuzz-harness';

const { seed, totalRuns } = fuzzSettings(TEST_TOTAL_RUNS);

// A GC callable without --expose-gc on the command line, so the heap figures are live data only.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}
/** What all the runs together may leave behind: a leak of even a few KiB per run exceeds it. */
const MAX_HEAP_GROWTH = 32 * 1024 * 1024;

describe(`client fuzz (fast-check, ${totalRuns} cases in total, seed ${seed})`, () => {
  let baseline = 0;
  before(() => {
    baseline = heapAfterGc();
  });
  for (const fuzzCase of FUZZ_CASES) {
    const numRuns = runsFor(fuzzCase, totalRuns);
    it(`${fuzzCase.name} [${numRuns} runs]`, () => {
      fc.assert(fuzzCase.property(), { numRuns, seed });
      assertNoPollution(fuzzCase.name);
    });
  }
  after(() => {
    const growth = heapAfterGc() - baseline;
    assert.ok(growth < MAX_HEAP_GROWTH, `the heap grew by ${(growth / 1048576).toFixed(1)} MiB over the client fuzz runs`);
  });
});

// What the fuzz cases found, kept as fixed plans through the same harness and its checks.
describe('client fuzz regressions', () => {
  const welcome = msg(FrameType.Welcome, [['ip', { j: '10.0.0.2' }], ['prefix', { j: 24 }], ['mtu', { j: 1400 }],
    ['serverIp', { j: '10.0.0.1' }], ['keepaliveMs', { j: 2000 }], ['deadAfterMs', { j: 6000 }]]);
  const noCuts = { abs: [], rel: [] };
  const run = (...sessions: ClientPiece[][]): void => {
    const plan: RunPlan = {
      vnet: false, relay: '198.51.100.7', previousIp: undefined, fault: 'none', stopLive: false,
      sessions: sessions.map((pieces) => session(pieces, noCuts)),
    };
    runClient(plan);
  };

  it('a PING after the relay\'s GOODBYE gets no PONG on the ended socket (which would error it and bury the reason)', () => {
    const ping = { k: 'raw', p: { k: 'frame', f: { type: FrameType.Ping, length: 8, head: new Uint8Array(8), fill: 0 } } } as const;
    run([welcome, msg(FrameType.Goodbye, [['code', { j: 'shutdown' }], ['reason', { j: 'restarting' }], ['reconnectMs', { j: 0 }]]), ping]);
  });

  it('a snapshot cut short by a reconnect: peers it reported up and the next snapshot lacks are reported down', () => {
    const peers = (reset: boolean, more: boolean, ids: string[]) => msg(FrameType.Peers, [['reset', { j: reset }], ['more', { j: more }],
      ['up', { j: ids.map((id, i) => ({ deviceId: id, ip: `10.0.0.${i + 3}`, since: 1 })) }]]);
    // The harness checks after every read that the up/down events add up to the peer table.
    run([welcome, peers(true, true, ['a', 'b'])], [welcome, peers(true, false, ['b'])]);
    run([welcome, peers(true, true, ['a']), peers(true, false, [])]);
  });
});
