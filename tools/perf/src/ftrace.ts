/**
 * Reading the kernel's syscall trace (tracefs `raw_syscalls` events, the text of /sys/kernel/tracing/trace)
 * for how long an event-loop process runs each time it wakes: from the return of the poll call that slept
 * to the first write-family call (the packet passed on) and to the next poll call that sleeps again.
 *
 * Pure functions, no I/O: hop-trace.ts owns tracefs. Syscall numbers are x86_64's.
 */

/** epoll_wait, epoll_pwait, epoll_pwait2, poll, ppoll, select, pselect6: where a main loop sleeps. */
const WAIT_CALLS = new Set([232, 281, 441, 7, 271, 23, 270]);
/** write, writev, sendto, sendmsg, sendmmsg: how a packet leaves a process (TUN write or socket send). */
const WRITE_CALLS = new Set([1, 20, 44, 46, 307]);

/**
 * A poll call that took at least this long slept (was switched out) rather than found events ready or had a
 * zero timeout: those return in a microsecond or two, a sleep costs two context switches at the least.
 */
const SLEPT_SECONDS = 20e-6;

export interface SyscallEvent {
  pid: number;
  time: number;
  kind: 'enter' | 'exit';
  nr: number;
}

/** One `sys_enter`/`sys_exit` line, e.g. "node-29528 [001] ..... 13290.946934: sys_exit: NR 281 = 1". */
const LINE = /^\s*.*?-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): sys_(enter|exit): NR (\d+) /;

export function parseSyscalls(text: string): SyscallEvent[] {
  const events: SyscallEvent[] = [];
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    events.push({ pid: Number(m[1]), time: Number(m[2]), kind: m[3] === 'enter' ? 'enter' : 'exit', nr: Number(m[4]) });
  }
  return events;
}

export interface Wake {
  pid: number;
  /** When the sleeping poll call returned. */
  at: number;
  /** Seconds from the wake to the first write-family call, if there was one. */
  toWrite?: number;
  /** Seconds from the wake to the poll call in which the process slept again. */
  busy: number;
}

/**
 * Every wake-up of the given processes that ended in the trace: a wake starts when a poll call that slept
 * returns and ends at the entry of the next poll call that sleeps (polls that return at once, as libuv's
 * zero-timeout ones do, are part of the work).
 */
export function wakes(events: readonly SyscallEvent[], pids: readonly number[]): Wake[] {
  const watched = new Set(pids);
  const state = new Map<number, { waitEnter?: number; wake?: { at: number; toWrite?: number } }>();
  const out: Wake[] = [];
  for (const e of events) {
    if (!watched.has(e.pid)) continue;
    let s = state.get(e.pid);
    if (!s) state.set(e.pid, (s = {}));
    if (WAIT_CALLS.has(e.nr)) {
      if (e.kind === 'enter') {
        s.waitEnter = e.time;
        continue;
      }
      if (s.waitEnter === undefined || e.time - s.waitEnter < SLEPT_SECONDS) continue;
      if (s.wake) out.push({ pid: e.pid, at: s.wake.at, busy: s.waitEnter - s.wake.at, ...(s.wake.toWrite !== undefined ? { toWrite: s.wake.toWrite } : {}) });
      s.wake = { at: e.time };
    } else if (e.kind === 'enter' && WRITE_CALLS.has(e.nr) && s.wake && s.wake.toWrite === undefined) {
      s.wake.toWrite = e.time - s.wake.at;
    }
  }
  return out;
}

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
