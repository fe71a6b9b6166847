/**
 * Preload (`NODE_OPTIONS=--require …/cpu-prof-hook.js`) giving a daemon what `node --cpu-prof` would:
 * NODE_OPTIONS refuses --cpu-prof, and the lab starts daemons with a fixed argv. The profile goes to
 * $MNEDC_CPU_PROF_DIR/<pid>.cpuprofile when the process exits normally (SIGTERM → process.exit).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.MNEDC_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.setSamplingInterval', { interval: 200 });
  session.post('Profiler.enable');
  session.post('Profiler.start');
  process.on('exit', () => {
    // The main thread's inspector session answers synchronously, so this completes before exit.
    session.post('Profiler.stop', (err, result) => {
      if (!err) writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
