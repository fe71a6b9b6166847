/** The main process's side of the workers: spawning them in the relay's namespace, requests with deadlines. */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { IpcWorker } from '../ipc-worker';
import type { Request, WorkerStatus } from './protocol';
import type { ScaleRelay } from './relay';

const WORKER_JS = path.join(__dirname, 'worker.js');

/** What a worker reports unasked: a device welcomed while dnsOnJoin was armed. */
export interface WelcomedEvent {
  event: 'welcomed';
  index: number;
  ip: number;
  /** Wall clock (ms) when its WELCOME arrived. */
  at: number;
}

export class WorkerHandle extends IpcWorker<Request> {
  onWelcomed: ((event: WelcomedEvent) => void) | null = null;

  constructor(child: ChildProcess, name: string) {
    super(child, name, (message) => this.onWelcomed?.(message as WelcomedEvent));
  }

  /**
   * `observer`: a worker with a few devices that asks the relay on others' behalf, run at normal
   * priority and otherwise idle, so what it measures is the relay's latency and not a busy load
   * generator's (a device in life is a machine of its own).
   */
  static spawn(relay: ScaleRelay, index: number, observer = false): WorkerHandle {
    // --max-old-space-size: peer lists arrive as JSON, and a join storm's worth of them is parsed at once.
    // MNEDC_SCALE_WORKER_NODE_ARGS (e.g. --cpu-prof) reaches the workers' node, to see what the load generator costs.
    const nodeArgs = (process.env.MNEDC_SCALE_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    // At nice 10: the simulated devices are other machines in life, and here they would take the relay's
    // core on a 2-core box (it then waited ~25 of 57 s for one at 10,000). They still get every cycle the
    // relay leaves, and the relay is one thread, so they keep the other core.
    const priority = observer ? [] : ['nice', '-n', '10'];
    const child = relay.spawnInside([...priority, process.execPath, '--max-old-space-size=4096', ...nodeArgs, WORKER_JS], ['ignore', 'inherit', 'inherit', 'ipc']);
    return new WorkerHandle(child, observer ? 'observer' : `worker ${index}`);
  }
}

/** Every worker's answer to one request. */
export function all<T>(workers: readonly WorkerHandle[], request: Request, timeoutMs?: number): Promise<T[]> {
  return Promise.all(workers.map((w) => w.call<T>(request, timeoutMs)));
}

export function sumStatus(statuses: readonly WorkerStatus[]): WorkerStatus {
  const total: WorkerStatus = { welcomed: 0, full: 0, complete: 0, lastComplete: 0, lastWelcome: 0, peerBytes: 0, unreadable: 0, sameIp: 0, hadIp: 0 };
  for (const s of statuses) {
    total.welcomed += s.welcomed;
    total.full += s.full;
    total.complete += s.complete;
    total.peerBytes += s.peerBytes;
    total.unreadable += s.unreadable;
    total.sameIp += s.sameIp;
    total.hadIp += s.hadIp;
    total.lastComplete = Math.max(total.lastComplete, s.lastComplete);
    total.lastWelcome = Math.max(total.lastWelcome, s.lastWelcome);
  }
  return total;
}
