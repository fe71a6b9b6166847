/**
 * Fuzzing of the frame decoder and the message parsers with fast-check: the properties are in
 * fuzz-cases.ts (shared with `npm run fuzz`, scripts/fuzz.js). This run does TEST_TOTAL_RUNS (100,000)
 * cases in total with a fixed seed; MNEDC_FUZZ_SEED=<int> and MNEDC_FUZZ_RUNS=<total>|<n>x override that.
 * A failure prints the seed and the fast-check path, to replay one case with MNEDC_FUZZ_SEED and
 * `node scripts/fuzz.js --only <name> --seed S --path P`.
 */
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { assertNoPollution, FUZZ_CASES, fuzzSettings, runsFor, TEST_TOTAL_RUNS } from './fuzz-cases';

const { seed, totalRuns } = fuzzSettings(TEST_TOTAL_RUNS);

describe(`fuzz (fast-check, ${totalRuns} cases in total, seed ${seed})`, () => {
  for (const fuzzCase of FUZZ_CASES) {
    const numRuns = runsFor(fuzzCase, totalRuns);
    it(`${fuzzCase.name} [${numRuns} runs]`, () => {
      fc.assert(fuzzCase.property(), { numRuns, seed });
      assertNoPollution(fuzzCase.name);
    });
  }
});
