/**
 * For capabilities.test.ts, which starts it inside a throwaway network namespace with the privileges of the
 * packaged client (user nobody, CAP_NET_ADMIN ambient): clears the ambient, then the inheritable set, and
 * after each step reports its own capability sets, those a program it execs starts with, and whether it can
 * still configure a TUN device. Prints one JSON object.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { clearAmbientCapabilities, clearInheritableCapabilities, Tun } from '../src/index';

type Sets = Record<'CapInh' | 'CapPrm' | 'CapEff' | 'CapAmb', string>;

function sets(status: string): Sets {
  const read = (name: keyof Sets): string => new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? 'missing';
  return { CapInh: read('CapInh'), CapPrm: read('CapPrm'), CapEff: read('CapEff'), CapAmb: read('CapAmb') };
}

function snapshot(tun: Tun, address: string): { self: Sets; child: Sets; configured: string } {
  const exec = spawnSync('cat', ['/proc/self/status'], { encoding: 'utf8' });
  let configured = 'ok';
  try {
    tun.configure({ address, prefix: 24, up: true });
  } catch (err) {
    configured = (err as Error).message;
  }
  return { self: sets(readFileSync('/proc/self/status', 'utf8')), child: sets(exec.stdout), configured };
}

const tun = Tun.open('mncaps0');
const before = snapshot(tun, '10.98.0.1');
clearAmbientCapabilities();
const ambientCleared = snapshot(tun, '10.98.0.2');
const inheritable = clearInheritableCapabilities();
const inheritableCleared = snapshot(tun, '10.98.0.3');
tun.close();
process.stdout.write(`${JSON.stringify({ before, ambientCleared, inheritable, inheritableCleared })}\n`);
