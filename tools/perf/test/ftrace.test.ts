/**
 * ftrace.ts: parsing tracefs syscall lines and cutting a process's time into wake-ups, on lines taken from a
 * real trace of mnedcd-server relaying one ping (pid 29510) and a made-up second process.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { median, parseSyscalls, wakes } from '../src/ftrace';

const TRACE = `# tracer: nop
#
#                                _-----=> irqs-off/BH-disabled
            node-29510   [000] ..... 13290.700000: sys_enter: NR 281 (d, 7ffd95ac2080, 400, 14c, 0, 8)
          <idle>-0       [000] dNh2. 13290.947027: sched_wakeup: comm=node pid=29510 prio=120 target_cpu=000
            node-29510   [000] ..... 13290.947033: sys_exit: NR 281 = 1
            node-29510   [000] ..... 13290.947037: sys_enter: NR 0 (15, 2e6a1070, 10000, 0, 0, 0)
            node-29510   [000] ..... 13290.947039: sys_exit: NR 0 = 120
            node-29510   [000] ..... 13290.947087: sys_enter: NR 1 (16, 2e6c0820, 78, 2e6c0d60, 0, 0)
            node-29510   [000] b.... 13290.947092: net_dev_queue: dev=eth0 skbaddr=0000000086a879e8 len=186
            node-29510   [000] ..... 13290.947116: sys_exit: NR 1 = 120
            node-29510   [000] ..... 13290.947152: sys_enter: NR 281 (d, 7ffd95ac2080, 400, 0, 0, 8)
            node-29510   [000] ..... 13290.947153: sys_exit: NR 281 = 0
            node-29510   [000] ..... 13290.947154: sys_enter: NR 281 (d, 7ffd95ac2080, 400, 14c, 0, 8)
         openvpn-29767   [001] ..... 13290.947200: sys_enter: NR 7 (5645c2639d00, 2, 48b, 0, 0, 1)
            node-29510   [000] ..... 13290.947293: sys_exit: NR 281 = 1
            node-29510   [000] ..... 13290.947296: sys_enter: NR 0 (16, 2e6c0e20, 10000, 0, 0, 0)
            node-29510   [000] ..... 13290.947348: sys_enter: NR 1 (15, 2e6bba50, 78, 2e67b600, 0, 0)
            node-29510   [000] ..... 13290.947416: sys_enter: NR 281 (d, 7ffd95ac2080, 400, 0, 0, 8)
            node-29510   [000] ..... 13290.947418: sys_exit: NR 281 = 0
            node-29510   [000] ..... 13290.947419: sys_enter: NR 281 (d, 7ffd95ac2080, 400, 14c, 0, 8)
         openvpn-29767   [001] ..... 13291.149204: sys_exit: NR 7 = 1
         openvpn-29767   [001] ..... 13291.149288: sys_enter: NR 44 (3, 5645c2663a92, 6e, 4000, 0, 0)
         openvpn-29767   [001] ..... 13291.149377: sys_enter: NR 7 (5645c2639d00, 2, 48b, 0, 0, 1)
         openvpn-29767   [001] ..... 13291.400000: sys_exit: NR 7 = 1
            node-29510   [000] ..... 13291.500000: sys_exit: NR 281 = 0
`;

const close = (actual: number | undefined, expected: number) =>
  assert.ok(actual !== undefined && Math.abs(actual - expected) < 1e-9, `${actual} ≠ ${expected}`);

describe('ftrace', () => {
  it('parses sys_enter and sys_exit lines and nothing else', () => {
    const events = parseSyscalls(TRACE);
    assert.equal(events.length, 21);
    assert.deepEqual(events[0], { pid: 29510, time: 13290.7, kind: 'enter', nr: 281 });
    assert.deepEqual(events[1], { pid: 29510, time: 13290.947033, kind: 'exit', nr: 281 });
    assert.ok(events.every((e) => e.pid === 29510 || e.pid === 29767));
  });

  it('cuts each process into wake-ups: from a poll that slept to the next poll that sleeps, zero-timeout polls inside', () => {
    const all = wakes(parseSyscalls(TRACE), [29510, 29767]);
    const server = all.filter((w) => w.pid === 29510);
    assert.equal(server.length, 2);
    close(server[0]!.at, 13290.947033);
    close(server[0]!.toWrite, 0.000054);
    close(server[0]!.busy, 0.000121);
    close(server[1]!.at, 13290.947293);
    close(server[1]!.toWrite, 0.000055);
    close(server[1]!.busy, 0.000126);
    const openvpn = all.filter((w) => w.pid === 29767);
    assert.equal(openvpn.length, 1);
    close(openvpn[0]!.toWrite, 0.000084);
    close(openvpn[0]!.busy, 0.000173);
  });

  it('ignores processes it was not asked about, and a wake that never ended', () => {
    assert.deepEqual(wakes(parseSyscalls(TRACE), [12345]), []);
    // The server's last poll returns after 81 ms with nothing after it: that wake has no end in the trace.
    assert.equal(wakes(parseSyscalls(TRACE), [29510]).length, 2);
  });

  it('a wake without a write has no toWrite', () => {
    const text = [
      'node-1 [000] ..... 10.000000: sys_enter: NR 232 (3, 0, 0, 5)',
      'node-1 [000] ..... 10.100000: sys_exit: NR 232 = 1',
      'node-1 [000] ..... 10.100010: sys_enter: NR 0 (3, 0, 0)',
      'node-1 [000] ..... 10.100020: sys_enter: NR 232 (3, 0, 0, 5)',
      'node-1 [000] ..... 10.200000: sys_exit: NR 232 = 0',
    ].join('\n');
    const [wake, ...rest] = wakes(parseSyscalls(text), [1]);
    assert.equal(rest.length, 0);
    assert.equal(wake!.toWrite, undefined);
    close(wake!.busy, 0.00002);
  });

  it('median', () => {
    assert.equal(median([]), undefined);
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });
});
