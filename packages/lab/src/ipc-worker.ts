import type { ChildProcess } from 'node:child_process';

/** An answer from a worker, or (with `event`) something it reports unasked. */
type WorkerMessage = { id: number; result?: unknown; error?: string } | { event: string };

/**
 * The main process's side of a bench worker: requests over the child's IPC channel, each answered in
 * turn or failed by its deadline, and all failed at once when the worker exits. Unasked messages (those
 * with an `event`) go to onEvent.
 */
export class IpcWorker<Request extends { cmd: string }> {
  exited = false;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;

  constructor(readonly child: ChildProcess, readonly name: string, onEvent?: (message: { event: string }) => void) {
    child.on('message', (message: WorkerMessage) => {
      if ('event' in message) {
        onEvent?.(message);
        return;
      }
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(`${name}: ${message.error}`));
      else waiter.resolve(message.result);
    });
    child.once('exit', (code, signal) => {
      this.exited = true;
      for (const waiter of this.pending.values()) waiter.reject(new Error(`${name} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  call<T>(request: Request, timeoutMs = 60_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name} did not answer ${request.cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.child.send({ id, request });
    });
  }
}
