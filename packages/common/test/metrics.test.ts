import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import {
  escapeLabelValue, parseExposition, parsers, renderMetrics, RPC_SCHEMA, UNEXPLAINED, type ClientStats, type DaemonKind, type Kind,
  type ServerStats,
} from '../src';

/** A value of kind `k` with every field, optional ones too, a distinct number in each counter and an extra counter in each open record. */
function fullValue(k: Kind, next: () => number): unknown {
  if (k === 'number') return next();
  if (k === 'string') return `s${next()}`;
  if (k === 'boolean' || k === 'true') return true;
  if (k === 'null') return null;
  if ('oneOf' in k) return k.oneOf[0];
  if ('optional' in k) return fullValue(k.optional, next);
  if ('nullable' in k) return fullValue(k.nullable, next);
  if ('array' in k) return [fullValue(k.array, next), fullValue(k.array, next)];
  const value: Record<string, unknown> = {};
  for (const [field, fieldKind] of Object.entries(k.object)) value[field] = fullValue(fieldKind, next);
  if (k.open) value.laterThing = next();
  return value;
}

function numericLeaves(value: unknown, path: string): Array<{ path: string; value: number }> {
  if (typeof value === 'number') return [{ path, value }];
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, v]) => numericLeaves(v, `${path}.${key}`));
}

function promtool(text: string): { status: number | null; output: string } | null {
  const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (run.error) return null;
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

const noPromtool = spawnSync('promtool', ['--version']).error ? 'promtool not installed (bash scripts/setup.sh as root installs it)' : false;

function fullStats(daemon: DaemonKind): ServerStats | ClientStats {
  let n = 0;
  return fullValue(RPC_SCHEMA[daemon].results.stats, () => ++n) as ServerStats | ClientStats;
}

describe('renderMetrics', () => {
  for (const daemon of ['server', 'client'] as const) {
    it(`${daemon}: every counter of the stats answer RPC_SCHEMA declares is one sample, with its value`, () => {
      const stats = fullStats(daemon);
      const families = parseExposition(renderMetrics(daemon, stats));
      const samples = [...families.values()].flatMap((f) => f.samples.map((s) => s.value));
      const leaves = numericLeaves(stats, 'stats');
      // Milliseconds are exported in seconds, as Prometheus names time.
      const expected = leaves.map((l) => (l.path.endsWith('Ms') ? l.value / 1000 : l.value));
      assert.deepEqual([...samples].sort((a, b) => a - b), [...expected].sort((a, b) => a - b),
        `samples and counters differ:\n${leaves.map((l) => `${l.path}=${l.value}`).join('\n')}`);
    });

    it(`${daemon}: every counter the schema declares has a HELP text (add it to counter-terms.ts or metrics.ts)`, () => {
      const families = parseExposition(renderMetrics(daemon, fullStats(daemon)));
      const unexplained = [...families].filter(([, f]) => f.help.includes(UNEXPLAINED)).map(([name]) => name);
      // Only the counter this test adds to each open record, which no daemon has, may lack one.
      assert.deepEqual(unexplained.filter((name) => !name.includes('later_thing')), []);
      assert.ok(unexplained.length > 0 || daemon === 'server', 'an unknown counter is exported, marked unexplained');
    });

    it(`${daemon}: counters end in _total, every family has HELP and TYPE${noPromtool ? '' : ', and promtool accepts it'}`, () => {
      const text = renderMetrics(daemon, fullStats(daemon));
      for (const [name, f] of parseExposition(text)) {
        assert.ok(f.help.length > 0, `${name} has no HELP`);
        assert.equal(f.type, name.endsWith('_total') ? 'counter' : 'gauge', name);
        assert.match(name, daemon === 'server' ? /^mnedc_relay_/ : /^mnedc_client_/);
      }
      const checked = promtool(text);
      if (checked) assert.equal(checked.status, 0, checked.output);
    });
  }

  it('names counters by scope and labels reasons and devices', () => {
    const stats: ServerStats = {
      refused: { authFailed: 3 }, cut: { overBudget: 1 },
      totals: { rxPackets: 10, rxBytes: 1000, txPackets: 9, txBytes: 900, drops: { noRoute: 2, spoofed: 0, malformed: 0, queueFull: 0 } },
      local: { rxPackets: 1, rxBytes: 100, txPackets: 1, txBytes: 100, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0 } },
      clients: [{ deviceId: 'device-a', ip: '10.0.0.2', rxPackets: 5, rxBytes: 500, txPackets: 4, txBytes: 400,
        drops: { noRoute: 2, spoofed: 1, malformed: 0, queueFull: 0 }, missed: 7 }],
    };
    const text = renderMetrics('server', stats);
    for (const line of [
      'mnedc_relay_refused_connections_total{reason="authFailed"} 3',
      'mnedc_relay_cut_sessions_total{reason="overBudget"} 1',
      'mnedc_relay_rx_packets_total 10',
      'mnedc_relay_dropped_packets_total{reason="noRoute"} 2',
      'mnedc_relay_local_tx_bytes_total 100',
      'mnedc_relay_device_rx_bytes_total{device="device-a"} 500',
      'mnedc_relay_device_dropped_packets_total{device="device-a",reason="spoofed"} 1',
      'mnedc_relay_device_missed_packets_total{device="device-a"} 7',
    ]) assert.ok(text.split('\n').includes(line), `missing ${line}:\n${text}`);
    assert.match(text, /^# HELP mnedc_relay_refused_connections_total Connections the relay turned away, by reason\. .*authFailed: devices with a wrong/m);
  });

  it('the client\'s rtt is a gauge in seconds, NaN before the first keepalive answer', () => {
    const stats: ClientStats = { tunnel: { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, txDrops: 4 },
      session: { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, dropsOffline: 5 }, rttMs: -1 };
    const text = renderMetrics('client', stats);
    assert.ok(text.includes('# TYPE mnedc_client_rtt_seconds gauge\nmnedc_client_rtt_seconds NaN\n'), text);
    assert.ok(text.includes('\nmnedc_client_tunnel_tx_drops_total 4\n'));
    assert.ok(text.includes('\nmnedc_client_session_drops_offline_total 5\n'));
    assert.match(text, /^# HELP mnedc_client_session_drops_offline_total Packets from the TUN dropped while not connected/m);
    assert.match(renderMetrics('client', { ...stats, rttMs: 12.5 }), /^mnedc_client_rtt_seconds 0\.0125$/m);
  });

  it('escapes hostile device IDs so they neither break a line nor add a label, and caps their length', () => {
    const hostile = ['a"} 1\nmnedc_relay_fake_total 99\n#', 'back\\slash', 'x'.repeat(300), 'ünïcode'];
    const counters = { rxPackets: 1, rxBytes: 1, txPackets: 1, txBytes: 1, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0 } };
    const stats: ServerStats = { refused: {}, cut: {}, totals: counters, local: counters,
      clients: hostile.map((deviceId) => ({ deviceId, ip: '10.0.0.2', ...counters, missed: 0 })) };
    const text = renderMetrics('server', stats);
    const families = parseExposition(text);
    assert.ok(!families.has('mnedc_relay_fake_total'), 'a device ID injected a metric');
    const devices = families.get('mnedc_relay_device_rx_packets_total')!.samples.map((s) => s.labels.device);
    assert.deepEqual(devices, [hostile[0], hostile[1], 'x'.repeat(128), hostile[3]]);
    assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
    const checked = promtool(text);
    if (checked) assert.equal(checked.status, 0, checked.output);
  });

  it('a device ID listed twice is one series (Prometheus rejects a scrape with a repeated series)', () => {
    const counters = { rxPackets: 1, rxBytes: 1, txPackets: 1, txBytes: 1, drops: { noRoute: 0, spoofed: 0, malformed: 0, queueFull: 0 } };
    const client = { deviceId: 'same', ip: '10.0.0.2', ...counters, missed: 0 };
    const text = renderMetrics('server', { refused: {}, cut: {}, totals: counters, local: counters, clients: [client, { ...client, rxPackets: 2 }] });
    assert.deepEqual(parseExposition(text).get('mnedc_relay_device_rx_packets_total')!.samples, [{ labels: { device: 'same' }, value: 1 }]);
  });
});

describe('parseExposition', () => {
  const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 1\na_total{x="2"} 2e3\n# TYPE b gauge\nb NaN\n';

  it('reads families, labels and values', () => {
    const families = parseExposition(ok);
    assert.deepEqual(families.get('a_total'), { type: 'counter', help: 'A.', samples: [{ labels: { x: '1' }, value: 1 }, { labels: { x: '2' }, value: 2000 }] });
    assert.ok(Number.isNaN(families.get('b')!.samples[0]!.value));
  });

  it('rejects what Prometheus would reject, naming the line', () => {
    for (const [text, problem] of [
      [`${ok}a_total{x="3"} 3\n`, /line 7: family a_total continues after another family began/],
      ['c 1\nc 2\n', /line 2: a series given twice/],
      ['c{x="\\t"} 1\n', /unknown escape/],
      ['c{x=1} 1\n', /not quoted/],
      ['c one\n', /is not a sample value/],
      ['c 1', /no line feed/],
      ['# TYPE c countr\n', /unknown TYPE/],
      ['c 1\n# TYPE c counter\n', /TYPE after samples/],
      ['c{x="1",x="2"} 1\n', /given twice/],
    ] as const) {
      assert.throws(() => parseExposition(text), problem, JSON.stringify(text));
    }
  });
});

describe('[metrics] listen', () => {
  it('is host:port (port 0 lets the kernel choose), or empty for off', () => {
    assert.deepEqual(parsers.optionalListenAddress('127.0.0.1:9108'), { host: '127.0.0.1', port: 9108 });
    assert.deepEqual(parsers.optionalListenAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.equal(parsers.optionalListenAddress(''), null);
    assert.throws(() => parsers.optionalListenAddress('9108'), /"9108" is not host:port/);
    assert.throws(() => parsers.optionalListenAddress('127.0.0.1:70000'), /port 70000 is outside 0\.\.65535/);
  });
});
