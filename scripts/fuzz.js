#!/usr/bin/env node
'use strict';
/**
 * Long fuzz run, with far more cases than `npm test`, of the same fast-check properties:
 *   - the frame decoder and the message parsers (packages/protocol/test/fuzz-cases.ts, run in npm test by
 *     packages/protocol/test/fuzz.test.ts);
 *   - the client side: a real RelayClient fed hostile relay traffic through a fake socket and checked
 *     against a model after every read (packages/client/test/fuzz-cases.ts and fuzz-harness.ts, run in
 *     npm test by packages/client/test/fuzz.test.ts).
 *
 *   node scripts/fuzz.js [--runs N|Nx] [--seed S|random] [--minutes M] [--only TEXT] [--path P]
 *
 *   --runs N      total cases over all properties of both files (default 2,000,000), split by each
 *                 property's share (the client's properties, whose runs cost ~10× more, get ~10%);
 *                 "4x" multiplies the default. Env MNEDC_FUZZ_RUNS is read the same way.
 *   --seed S      fast-check seed (default: MNEDC_FUZZ_SEED, else the fixed seed of the test run);
 *                 "random" picks one and prints it.
 *   --minutes M   time budget for the whole run, split by share (fast-check's interruptAfterTimeLimit);
 *                 with --minutes and no --runs the run is bounded by time alone.
 *   --only TEXT   only the properties whose name contains TEXT ("client:" for the client side alone).
 *   --path P      replay the fast-check path P printed by a failure (use with --only and --seed).
 *   --max-heap-growth-mb N   fail when the heap, after GC, grew more than N MiB over the run (default 64).
 *
 * Needs the build (packages/{protocol,client}/dist/test/fuzz-cases.js): `npm run fuzz` builds first.
 * Exit status 1 on any failure, with the shrunk counterexample, the seed and the replay path.
 */
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');

const CASE_FILES = ['protocol', 'client'].map((pkg) => path.join(__dirname, '..', 'packages', pkg, 'dist', 'test', 'fuzz-cases.js'));
const caseModules = CASE_FILES.map((file) => {
  try {
    return require(file);
  } catch (err) {
    console.error(`fuzz: cannot load ${file} (${err.message}); build first: ./node_modules/.bin/tsc -b`);
    process.exit(2);
  }
});
// The settings helpers and the default totals are the protocol file's; the client file re-exports them.
const cases = caseModules[0];
const ALL_CASES = caseModules.flatMap((m) => m.FUZZ_CASES);
const fc = require('fast-check');

function usage(message) {
  if (message) console.error(`fuzz: ${message}`);
  console.error('usage: node scripts/fuzz.js [--runs N|Nx] [--seed S|random] [--minutes M] [--only TEXT] [--path P] [--max-heap-growth-mb N]');
  process.exit(2);
}

const args = { runs: undefined, seed: undefined, minutes: undefined, only: undefined, path: undefined, maxHeapGrowthMb: 64 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === '--help' || arg === '-h') usage();
  const eq = arg.indexOf('=');
  const name = eq > 0 ? arg.slice(0, eq) : arg;
  const value = () => (eq > 0 ? arg.slice(eq + 1) : argv[++i] ?? usage(`${name} needs a value`));
  switch (name) {
    case '--runs': args.runs = value(); break;
    case '--seed': args.seed = value(); break;
    case '--minutes': args.minutes = Number(value()); break;
    case '--only': args.only = value(); break;
    case '--path': args.path = value(); break;
    case '--max-heap-growth-mb': args.maxHeapGrowthMb = Number(value()); break;
    default: usage(`unknown argument ${arg}`);
  }
}
if (args.minutes !== undefined && !(args.minutes > 0)) usage('--minutes must be a positive number');
if (!(args.maxHeapGrowthMb > 0)) usage('--max-heap-growth-mb must be a positive number');

const settings = cases.fuzzSettings(cases.LONG_TOTAL_RUNS);
let seed = settings.seed;
if (args.seed === 'random') seed = (Math.random() * 0x100000000) | 0;
else if (args.seed !== undefined) {
  seed = Number(args.seed);
  if (!Number.isInteger(seed)) usage(`--seed ${args.seed} is not an integer`);
  seed |= 0;
}
const timeOnly = args.minutes !== undefined && args.runs === undefined && !process.env.MNEDC_FUZZ_RUNS;
let totalRuns;
try {
  totalRuns = args.runs !== undefined ? cases.parseRuns(args.runs, cases.LONG_TOTAL_RUNS, '--runs') : settings.totalRuns;
} catch (err) {
  usage(err.message);
}

const selected = ALL_CASES.filter((c) => !args.only || c.name.includes(args.only));
if (selected.length === 0) usage(`no property name contains ${JSON.stringify(args.only)}`);
if (args.path && selected.length !== 1) usage('--path replays one property: narrow it down with --only');
const shareSum = selected.reduce((sum, c) => sum + c.share, 0);

// A GC we can call without asking for --expose-gc on the command line, so heap figures are live data only.
v8.setFlagsFromString('--expose-gc');
const gc = typeof global.gc === 'function' ? global.gc : vm.runInNewContext('gc');
const mib = (bytes) => (bytes / 1048576).toFixed(1);
function heapAfterGc() {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const budgetMs = args.minutes !== undefined ? args.minutes * 60_000 : undefined;
console.log(`fuzz: seed ${seed}; ${timeOnly ? 'no run limit' : `${totalRuns} runs in total`}` +
  `${budgetMs ? `; time budget ${args.minutes} min` : ''}; fast-check ${fc.__version}; node ${process.version}`);
const baseline = heapAfterGc();
console.log(`fuzz: heap before: ${mib(baseline)} MiB used after GC, rss ${mib(process.memoryUsage().rss)} MiB`);

const failures = [];
let grandRuns = 0;
const started = Date.now();
for (const fuzzCase of selected) {
  const numRuns = timeOnly ? Number.MAX_SAFE_INTEGER : Math.max(1, Math.ceil((totalRuns * fuzzCase.share) / shareSum - 1e-9));
  const params = { numRuns, seed };
  if (args.path) params.path = args.path;
  if (budgetMs) {
    const caseBudget = Math.max(1000, Math.floor((budgetMs * fuzzCase.share) / shareSum));
    if (typeof fc.interruptAfterTimeLimit === 'function') params.plugins = [fc.interruptAfterTimeLimit(caseBudget)];
    else params.interruptAfterTimeLimit = caseBudget; // fast-check < 4.10
  }
  const t0 = process.hrtime.bigint();
  const details = fc.check(fuzzCase.property(), params);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const heap = process.memoryUsage().heapUsed;
  grandRuns += details.numRuns;
  const status = details.failed ? 'FAILED' : details.interrupted ? 'ok (time budget reached)' : 'ok';
  console.log(`${status.padEnd(24)} ${String(details.numRuns).padStart(10)} runs ${seconds.toFixed(1).padStart(7)} s ` +
    `${Math.round(details.numRuns / Math.max(seconds, 1e-9)).toString().padStart(7)}/s  heap ${mib(heap)} MiB  ${fuzzCase.name}`);
  if (details.failed) {
    failures.push(fuzzCase.name);
    console.log(`\n--- ${fuzzCase.name}\n${fc.defaultReportMessage(details)}`);
    const error = details.errorInstance;
    console.log(`error: ${error instanceof Error ? error.stack : String(error)}`);
    if (error instanceof Error && error.cause !== undefined) console.log(`cause: ${error.cause instanceof Error ? error.cause.stack : String(error.cause)}`);
    console.log(`replay: node scripts/fuzz.js --only ${JSON.stringify(fuzzCase.name.slice(0, 40))} --seed ${details.seed}` +
      ` --path ${JSON.stringify(details.counterexamplePath)} --runs 1\n`);
  }
}

const after = heapAfterGc();
const elapsed = (Date.now() - started) / 1000;
const maxRssMib = process.resourceUsage().maxRSS / 1024;
console.log(`fuzz: ${grandRuns} runs in ${elapsed.toFixed(1)} s (${Math.round(grandRuns / Math.max(elapsed, 1e-9))}/s), seed ${seed}`);
console.log(`fuzz: heap after: ${mib(after)} MiB used after GC (${after >= baseline ? '+' : ''}${mib(after - baseline)} MiB), ` +
  `peak rss ${maxRssMib.toFixed(1)} MiB`);
if (({}).polluted !== undefined) failures.push('Object.prototype polluted at the end of the run');
if (after - baseline > args.maxHeapGrowthMb * 1048576) {
  failures.push(`heap grew by ${mib(after - baseline)} MiB (limit ${args.maxHeapGrowthMb} MiB)`);
}
if (failures.length > 0) {
  console.log(`fuzz: FAILED: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('fuzz: all properties held');
