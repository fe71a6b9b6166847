/**
 * Run by journal-crash.test.ts, which SIGKILLs it: binds fresh device IDs through DeviceBindings as fast
 * as it can, forgetting old ones so compactions keep coming, and records in LOG_FILE what happened:
 *   ack ID         the binding of ID (to fp-ID) is durable
 *   forget ID      about to forget ID (from here on it may be gone)
 *   gone ID        the forget of ID is durable
 * The log is written with writeSync, so a line is in the kernel before the next step starts; stdout
 * would not do, as a pipe the parent has not drained queues lines in this process, and kill -9 loses
 * them. stdout only tells the parent when to start its kill timers: "ready" after the load, "acked"
 * after the first acknowledgement.
 * Usage: node journal-crash-child.js STATE_DIR ROUND LOG_FILE
 */
import { openSync, writeSync } from 'node:fs';
import { DeviceBindings } from '../src';

const [dir, round, logFile] = process.argv.slice(2);
if (!dir || !round || !logFile) {
  process.stderr.write('usage: journal-crash-child STATE_DIR ROUND LOG_FILE\n');
  process.exit(2);
}
const log = openSync(logFile, 'a');
const IN_FLIGHT = 64;
/** Live bindings this child keeps before it forgets its oldest: a small map compacts often. */
const KEEP = 400;

const bindings = new DeviceBindings(dir, {
  compactSlack: 100,
  // Small slices make a compaction span many event-loop turns, so kills land inside it.
  sliceEntries: 8,
  onCompactionError: (err) => {
    process.stderr.write(`compaction failed: ${err.message}\n`);
    process.exit(3);
  },
});
const say = (line: string) => writeSync(log, `${line}\n`);
const die = (err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(4);
};
process.stdout.write('ready\n');

const acked: string[] = [];
let next = 0;
let announced = false;

function bindOne(): void {
  const id = `r${round}-${next++}`;
  bindings.bind(id, `fp-${id}`).then(() => {
    say(`ack ${id}`);
    if (acked.push(id) === 1 && !announced) {
      announced = true;
      process.stdout.write('acked\n');
    }
    if (acked.length > KEEP) {
      const old = acked.shift()!;
      say(`forget ${old}`);
      bindings.forget(old).then(() => say(`gone ${old}`), die);
    }
    bindOne();
  }, die);
}

for (let i = 0; i < IN_FLIGHT; i++) bindOne();
