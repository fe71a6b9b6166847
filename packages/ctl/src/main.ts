import { run } from './run';

// The process around run(): signals end `watch` cleanly instead of killing it mid-line. They are
// handled once only, so a second Ctrl-C still kills a stuck mnedcctl.
const controller = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => controller.abort());

// `mnedcctl watch | head -1`: the reader going away is a normal end, not a crash.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(0);
});

run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, signal: controller.signal }).then(
  (status) => { process.exitCode = status; },
  (err: unknown) => {
    process.stderr.write(`mnedcctl: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
