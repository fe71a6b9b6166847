/**
 * What a test process must not leave behind however it ends (normally, an uncaught exception, SIGINT,
 * SIGTERM, SIGHUP): labs, avahi instances. While a set holds anything, exit and those signals tear each
 * item down synchronously; a signal is then raised again with its default disposition unless someone else
 * handles it, so the process still dies of it.
 */
const EXIT_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export class ExitCleanup<T> {
  private readonly live = new Set<T>();
  private readonly signalHandlers = new Map<NodeJS.Signals, () => void>();
  private armed = false;

  /** `teardown`: an item's synchronous teardown; it is expected to delete the item. */
  constructor(private readonly teardown: (item: T) => void) {}

  add(item: T): void {
    this.live.add(item);
    if (this.armed) return;
    this.armed = true;
    process.on('exit', this.cleanupAll);
    for (const signal of EXIT_SIGNALS) {
      const handler = (): void => this.onSignal(signal);
      this.signalHandlers.set(signal, handler);
      process.on(signal, handler);
    }
  }

  delete(item: T): void {
    this.live.delete(item);
    if (this.live.size === 0) this.disarm();
  }

  private readonly cleanupAll = (): void => {
    for (const item of [...this.live]) this.teardown(item);
  };

  private onSignal(signal: NodeJS.Signals): void {
    this.cleanupAll();
    this.disarm();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  }

  private disarm(): void {
    if (!this.armed) return;
    this.armed = false;
    process.removeListener('exit', this.cleanupAll);
    for (const [signal, handler] of this.signalHandlers) process.removeListener(signal, handler);
    this.signalHandlers.clear();
  }
}
