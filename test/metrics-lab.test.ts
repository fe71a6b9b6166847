/**
 * [metrics] listen on the real daemons: the relay as a process on loopback, the client in a namespace
 * lab. Each scrape is checked by promtool and the strict parser, and holds the same counters as
 * `mnedcctl stats --json` of the same daemon, with values between two scrapes taken around it.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseExposition, renderMetrics, UNEXPLAINED, type ClientStats, type DaemonKind, type ServerStats } from '@mnedc/common';
import { ipPacket, mergeIni, RelayProcess, runCommand, SERVER_BIN, WireClient, type Daemon } from '@mnedc/lab';
import { skipUnlessRoot, withBareLab } from './lab-suite';

const METRICS = '[metrics]\nlisten = 127.0.0.1:0\n';

function scrape(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { text += chunk; });
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    }).on('error', reject);
  });
}

function promtoolAccepts(text: string): void {
  const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.ok(!run.error, 'promtool is not installed: bash scripts/setup.sh (as root) installs it');
  assert.equal(run.status, 0, `promtool check metrics: ${run.stdout}${run.stderr}`);
}

/** Series (name and labels) → value. */
function seriesOf(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const [name, family] of parseExposition(text)) {
    for (const s of family.samples) series.set(`${name}${JSON.stringify(s.labels)}`, s.value);
  }
  return series;
}

/**
 * The scrapes before and after `stats --json` export exactly the series that answer has, each counter
 * between its two scraped values (keepalives move some while the three are taken), every one explained.
 */
function assertAgree(daemon: DaemonKind, before: string, stats: ServerStats | ClientStats, afterText: string): Map<string, number> {
  for (const text of [before, afterText]) {
    promtoolAccepts(text);
    const unexplained = [...parseExposition(text)].filter(([, f]) => f.help.includes(UNEXPLAINED)).map(([name]) => name);
    assert.deepEqual(unexplained, [], 'counters without a HELP text: give them a term in counter-terms.ts');
  }
  const [first, shown, last] = [seriesOf(before), seriesOf(renderMetrics(daemon, stats)), seriesOf(afterText)];
  assert.deepEqual([...first.keys()].sort(), [...shown.keys()].sort(), 'the scrape and mnedcctl stats have different counters');
  assert.deepEqual([...last.keys()].sort(), [...shown.keys()].sort());
  for (const [key, value] of shown) {
    if (key.includes('_rtt_seconds')) continue;
    assert.ok(first.get(key)! <= value && value <= last.get(key)!, `${key}: scraped ${first.get(key)} then ${last.get(key)}, mnedcctl showed ${value}`);
  }
  return last;
}

describe('Prometheus metrics of the relay (real mnedcd-server on loopback)', { timeout: 120_000 }, () => {
  const relays: RelayProcess[] = [];
  const devices: WireClient[] = [];
  after(async () => {
    devices.forEach((d) => d.close());
    await Promise.all(relays.map((r) => r.dispose()));
  });
  const relay = async () => {
    const r = await RelayProcess.start(METRICS);
    relays.push(r);
    return r;
  };

  it('exports what mnedcctl stats shows, per device and per drop reason, after traffic', async () => {
    const r = await relay();
    const url = String((await r.daemon.waitFor(/^Prometheus metrics at http:\/\/127\.0\.0\.1:\d+\/metrics$/)).metrics);
    const [a, b] = [await WireClient.join(r.port, r.join, 'device-a'), await WireClient.join(r.port, r.join, 'device-b')];
    devices.push(a, b);
    // To an address no device holds: a noRoute drop. The relay reads a's frames in order, so once b has
    // a's next packet the drop is counted.
    a.send(ipPacket(a.ip, b.ip + 100, 'nobody'));
    for (let i = 0; i < 5; i++) a.send(ipPacket(a.ip, b.ip, `a→b ${i}`));
    await b.until(() => b.data.length >= 5, 'a\'s packets at b', 10_000);

    const before = await scrape(url);
    const stats = (await r.ctl(['stats', '--json'])).json as ServerStats;
    const afterScrape = await scrape(url);
    assert.equal(before.status, 200);
    const last = assertAgree('server', before.text, stats, afterScrape.text);
    assert.ok(last.get('mnedc_relay_rx_packets_total{}')! >= 6, 'the relay counted a\'s packets');
    assert.ok(last.get('mnedc_relay_device_rx_packets_total{"device":"device-a"}')! >= 6);
    assert.ok(last.get('mnedc_relay_device_tx_packets_total{"device":"device-b"}')! >= 5);
    assert.equal(last.get('mnedc_relay_dropped_packets_total{"reason":"noRoute"}'), 1);
    assert.equal(last.get('mnedc_relay_device_dropped_packets_total{"device":"device-a","reason":"noRoute"}'), 1);
    assert.ok(last.has('mnedc_relay_refused_connections_total{"reason":"authFailed"}'), 'refusal reasons are there at zero');
    assert.equal((await scrape(url.replace(/\/metrics$/, '/'))).status, 404);
  });

  it('SIGHUP does not move the listener: the change is logged as needing a restart, the old address serves on', async () => {
    const r = await relay();
    const url = String((await r.daemon.waitFor(/^Prometheus metrics at /)).metrics);
    const mark = r.daemon.lines.length;
    writeFileSync(r.config, mergeIni(readFileSync(r.config, 'utf8'), '[metrics]\nlisten = 127.0.0.1:1\n'));
    r.daemon.signal('SIGHUP');
    await r.daemon.waitFor(/^Changed settings need a restart to apply: \[metrics\] listen$/, { from: mark });
    assert.equal((await scrape(url)).status, 200);
  });

  it('a [metrics] listen address it cannot bind is a configuration error (exit 78) naming the key', async () => {
    const r = await relay();
    const taken = String((await r.daemon.waitFor(/^Prometheus metrics at /)).metrics).replace(/^http:\/\/|\/metrics$/g, '');
    const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-metrics-'));
    try {
      const config = path.join(dir, 'server.ini');
      const write = (listen: string) => writeFileSync(config,
        `[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}/state\n[control]\nsocket = ${dir}/s.sock\n[metrics]\nlisten = ${listen}\n`);
      write(taken);
      const busy = await runCommand(process.execPath, [SERVER_BIN, '--config', config, '--log-format', 'json'], 20_000);
      assert.equal(busy.code, 78, busy.stdout + busy.stderr);
      assert.match(busy.stdout, new RegExp(`\\[metrics\\] listen: cannot listen on ${taken.replace(/\./g, '\\.')}: .*EADDRINUSE`));
      write('localhost');
      const bad = await runCommand(process.execPath, [SERVER_BIN, '--config', config], 20_000);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /\[metrics\] listen: "localhost" is not host:port/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** GETs `url` from inside a lab namespace (the client's loopback is its namespace's own). */
const FETCH = 'require("http").get(process.argv[1], (r) => { r.pipe(process.stdout); }).on("error", (e) => { console.error(e.message); process.exit(1); })';

describe('Prometheus metrics of the client (real mnedcd-client in a lab)', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  const daemons: Daemon[] = [];
  const ctx = withBareLab(daemons);

  it('exports what mnedcctl stats shows, after pings through the relay', async () => {
    daemons.push(await ctx.overlay.startServer());
    const c = await ctx.overlay.startClient('c', { extra: METRICS });
    daemons.push(c, await ctx.overlay.startClient('d'));
    const url = String((await c.waitFor(/^Prometheus metrics at http:\/\/127\.0\.0\.1:\d+\/metrics$/)).metrics);
    const ping = await ctx.lab.exec('c', ['ping', '-q', '-c', '5', '-i', '0.2', await ctx.overlay.overlayIp('d')], { timeoutMs: 20_000 });
    assert.equal(ping.code, 0, ping.stdout);
    const inC = async () => {
      const run = await ctx.lab.exec('c', [process.execPath, '-e', FETCH, url], { timeoutMs: 10_000 });
      assert.equal(run.code, 0, run.stderr);
      return run.stdout;
    };
    const before = await inC();
    const stats = (await ctx.overlay.ctl('c', ['stats', '--json'])).json as ClientStats;
    const last = assertAgree('client', before, stats, await inC());
    assert.ok(last.get('mnedc_client_tunnel_rx_packets_total{}')! >= 5, 'c read its echo requests from the TUN');
    assert.ok(last.get('mnedc_client_session_rx_packets_total{}')! >= 5, 'the replies came from the relay');
    // NaN until the first keepalive is answered (every 2 s), a number of seconds after.
    assert.ok(last.has('mnedc_client_rtt_seconds{}'), 'the rtt gauge is there');
  });
});
