/**
 * The scale bench's phases against one relay: join all, memory, discovery, probes, DNS, idle CPU, then
 * kill -9 and the reconnect storm with probes during it. Every phase has a deadline and reports what it
 * saw when that passes; nothing here waits unbounded.
 */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { REPO_ROOT } from '../lab';
import { cpuSeconds } from '../measure';
import type { DnsResult, WorkerStatus } from './protocol';
import { startRelays } from './cluster';
import type { ScaleRelay } from './relay';
import { deviceId, observerDevices, percentile, randomPairs, seededRandom, splitDevices, type ScaleOptions, type ScaleResult } from './stats';
import { all, sumStatus, WorkerHandle } from './workers';

const POLL_MS = 250;
const PEERS_DEADLINE_MS = 120_000;
const PROBE_GRACE_MS = 10_000;
const DNS_QUERIES = 200;

/** A fleet's join deadline: generous, since the point is to see how long it takes, yet bounded. */
function joinDeadlineMs(devices: number): number {
  return 120_000 + devices * 30;
}

type Say = (line: string) => void;

async function status(workers: WorkerHandle[]): Promise<WorkerStatus> {
  return sumStatus(await all<WorkerStatus>(workers, { cmd: 'status' }));
}

/** Polls the summed status until `done` holds or `deadlineMs` passes; the last status either way. */
async function pollUntil(workers: WorkerHandle[], done: (s: WorkerStatus) => boolean, deadlineMs: number,
  progress?: (s: WorkerStatus) => void): Promise<{ status: WorkerStatus; timedOut: boolean }> {
  const end = Date.now() + deadlineMs;
  let lastReport = 0;
  for (;;) {
    const s = await status(workers);
    if (done(s)) return { status: s, timedOut: false };
    if (Date.now() >= end) return { status: s, timedOut: true };
    if (progress && Date.now() - lastReport >= 5000) {
      lastReport = Date.now();
      progress(s);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Connected devices by index → address, and which relay each is on, from every worker. */
async function connectedIps(workers: WorkerHandle[]): Promise<Map<number, number> & { relayOf?: Map<number, number> }> {
  const lists = (await all<Array<[number, number, number]>>(workers, { cmd: 'ips' })).flat().filter(([, ip]) => ip !== 0);
  return Object.assign(new Map(lists.map(([index, ip]) => [index, ip])), { relayOf: new Map(lists.map(([index, , relay]) => [index, relay])) });
}

function ownerOf(shares: Array<{ first: number; count: number }>, index: number): number {
  return shares.findIndex((s) => index >= s.first && index < s.first + s.count);
}

/**
 * Sends `count` probes between random connected pairs; counts how many arrived within the grace period,
 * and of those between devices on different relays (`ips.relayOf`) how many crossed.
 */
async function probes(workers: WorkerHandle[], shares: Array<{ first: number; count: number }>, ips: Map<number, number> & { relayOf?: Map<number, number> },
  count: number, seed: number, spreadMs: number): Promise<{ sent: number; delivered: number; cross: { sent: number; delivered: number } }> {
  await all(workers, { cmd: 'received' });
  const pairs = randomPairs([...ips.keys()], count, seededRandom(seed));
  const sends: Array<Array<[number, number, number]>> = workers.map(() => []);
  pairs.forEach(([from, to], id) => sends[ownerOf(shares, from)].push([from, ips.get(to)!, id]));
  const sent = (await Promise.all(workers.map((w, i) => w.call<number>({ cmd: 'probe', sends: sends[i], spreadMs }, spreadMs + 60_000))))
    .reduce((a, b) => a + b, 0);
  const seen = new Set<number>();
  const end = Date.now() + spreadMs + PROBE_GRACE_MS;
  while (seen.size < pairs.length && Date.now() < end) {
    for (const ids of await all<number[]>(workers, { cmd: 'received' })) ids.forEach((id) => seen.add(id));
    if (seen.size < pairs.length) await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const across = new Set(pairs.flatMap(([from, to], id) => (ips.relayOf?.get(from) !== ips.relayOf?.get(to) ? [id] : [])));
  return { sent: pairs.length > 0 ? sent : 0, delivered: seen.size, cross: { sent: across.size, delivered: [...seen].filter((id) => across.has(id)).length } };
}

/** CPU seconds of every relay together. */
async function relaysCpu(relays: ScaleRelay[]): Promise<number> {
  return (await Promise.all(relays.map((r) => cpuSeconds(r.pid())))).reduce((a, b) => a + b, 0);
}

async function dns(workers: WorkerHandle[], shares: Array<{ first: number; count: number }>, ips: Map<number, number>): Promise<ScaleResult['dns']> {
  const pairs = randomPairs([...ips.keys()], Math.min(DNS_QUERIES, ips.size), seededRandom(53));
  const queries: Array<Array<[number, string, number]>> = workers.map(() => []);
  for (const [from, to] of pairs) queries[ownerOf(shares, from)].push([from, `${deviceId(to)}.mnedc`, ips.get(to)!]);
  return dnsSummary((await Promise.all(workers.map((w, i) => w.call<DnsResult[]>({ cmd: 'dns', queries: queries[i] }, 30_000)))).flat());
}

function dnsSummary(results: DnsResult[]): ScaleResult['dns'] {
  const times = results.map((r) => r.ms).filter((ms): ms is number => ms !== null).sort((a, b) => a - b);
  return { asked: results.length, answered: times.length, correct: results.filter((r) => r.correct).length,
    p50Ms: percentile(times, 50), p99Ms: percentile(times, 99) };
}

/**
 * In the storm, devices just welcomed are looked up by name at once: resolvable from the moment they
 * join? The observer asks (its devices are back first, it is otherwise idle), so the time is the relay's
 * and not that of a load worker busy with its own devices' handshakes.
 */
async function lookUpJoiners(observer: WorkerHandle, loadWorkers: WorkerHandle[]): Promise<Array<Promise<DnsResult>>> {
  const lookups: Array<Promise<DnsResult>> = [];
  const back = await pollUntil([observer], (s) => s.welcomed > 0, 30_000);
  if (back.timedOut) return lookups;
  for (const w of loadWorkers) {
    w.onWelcomed = (e) => lookups.push(observer.call<DnsResult>({ cmd: 'lookup', name: `${deviceId(e.index)}.mnedc`, expectIp: e.ip, since: e.at }, 10_000)
      .catch(() => ({ ms: null, correct: false })));
  }
  await all(loadWorkers, { cmd: 'dnsOnJoin', count: Math.ceil(DNS_QUERIES / loadWorkers.length) });
  return lookups;
}

function commit(): string {
  const head = spawnSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const dirty = spawnSync('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout.trim();
  return head + (dirty ? ' (modified)' : '');
}

export async function runScale(options: ScaleOptions, say: Say = () => {}): Promise<ScaleResult> {
  const n = options.devices;
  const notes: string[] = [];
  const start = loadavg();
  const cluster = await startRelays(n, options.relays);
  const relays = cluster.relays;
  const relay = relays[0]!;
  const runQueue = () => relays.reduce((sum, r) => sum + r.runQueueSeconds(), 0);
  const workers: WorkerHandle[] = [];
  try {
    const observed = observerDevices(n);
    const shares = splitDevices(n - observed, options.workers);
    if (observed > 0) shares.push({ first: n - observed, count: observed });
    shares.forEach((_, i) => workers.push(WorkerHandle.spawn(relay, i, observed > 0 && i === shares.length - 1)));
    const observer = observed > 0 ? workers[workers.length - 1] : null;
    const loadWorkers = observer ? workers.slice(0, -1) : workers;
    say(`${relays.length === 1 ? 'relay' : `${relays.length} relays of a cluster on etcd,`} pid ${relays.map((r) => r.pid()).join(', ')} in ${relay.ns} on 127.0.0.1:${relays.map((r) => r.port).join(', ')}; ` +
      `${n} devices over ${loadWorkers.length} workers` + (observer ? ` and an observer with ${observed}` : ''));

    const cpuBeforeJoin = await relaysCpu(relays);
    const waitBeforeJoin = runQueue();
    const t0 = Date.now();
    await Promise.all(workers.map((w, i) => w.call({ cmd: 'start', first: shares[i].first, count: shares[i].count, devices: n,
      target: { ports: relays.map((r) => r.port), join: relay.join, discovery: options.discovery } }, 120_000)));
    const joined = await pollUntil(workers, (s) => s.welcomed === n, joinDeadlineMs(n), (s) => say(`join: ${s.welcomed}/${n}`));
    if (joined.timedOut) notes.push(`join: ${joined.status.welcomed}/${n} after ${joinDeadlineMs(n) / 1000} s`);
    const joinAll = joined.status.lastWelcome;
    const join = { seconds: joined.timedOut ? null : (joinAll - t0) / 1000, joined: joined.status.welcomed };
    const rssKib = relays.reduce((sum, r) => sum + r.rssKib(), 0);
    if (joined.timedOut) notes.push('the idle CPU was measured while the devices not joined yet kept trying');
    // CPU per join holds still when the shared machine is busy, where wall-clock join time does not.
    const joinCpu = (await relaysCpu(relays)) - cpuBeforeJoin;
    const joinCpuMs = joinCpu * 1000 / Math.max(1, join.joined);
    // Below ~90% the relay waited for a core (a busy shared machine), not for the devices.
    const joinCpuShare = joinCpu / ((Date.now() - t0) / 1000) * 100;
    const joinRunQueueSeconds = runQueue() - waitBeforeJoin;
    say(`joined ${join.joined}/${n} in ${join.seconds ?? 'timeout'} s; relay RSS ${rssKib} KiB; relay CPU ${joinCpuMs.toFixed(1)} ms per join, ${joinCpuShare.toFixed(0)}% of a core, ${joinRunQueueSeconds.toFixed(1)} s waiting for one`);

    const peers = await pollUntil(workers, (s) => s.complete >= s.full, PEERS_DEADLINE_MS, (s) => say(`peers: ${s.complete}/${s.full} full-list devices know everyone`));
    if (peers.status.unreadable > 0) notes.push(`${peers.status.unreadable} PEERS frames in a format this bench cannot read`);
    say(`every peer known: ${peers.status.complete}/${peers.status.full} full-list devices; ${n - peers.status.full} look peers up by DNS`);

    const ips = await connectedIps(workers);
    const probed = await probes(workers, shares, ips, options.probes, 1, 1000);
    say(`probes: ${probed.delivered}/${probed.sent}` + (relays.length > 1 ? `, across relays ${probed.cross.delivered}/${probed.cross.sent}` : ''));
    // A cluster's relays in one namespace have no interface, so no DNS (scale/relay.ts).
    const noDns = { asked: 0, answered: 0, correct: 0, p50Ms: null, p99Ms: null };
    const dnsResult = relays.length === 1 ? await dns(workers, shares, ips) : noDns;
    if (relays.length > 1) notes.push('a cluster\'s relays in one namespace have no interface here: no DNS phases');
    say(`DNS: ${dnsResult.answered}/${dnsResult.asked} answered`);

    const before = await relaysCpu(relays);
    await new Promise((r) => setTimeout(r, options.secondsIdle * 1000));
    const idleCpuPercent = ((await relaysCpu(relays)) - before) / options.secondsIdle * 100;
    const discovery = (await status(workers)).peerBytes;
    say(`idle CPU ${idleCpuPercent.toFixed(1)}% over ${options.secondsIdle} s`);

    await all(workers, { cmd: 'mark' });
    for (const r of relays) await r.kill9();
    for (const r of relays) await r.start();
    const listening = Date.now();
    const cpuBeforeStorm = await relaysCpu(relays);
    const waitBeforeStorm = runQueue();
    say(`${relays.length === 1 ? 'relay' : 'every relay'} killed (-9) and restarted: reconnect storm`);
    const lookups = observer && relays.length === 1 ? await lookUpJoiners(observer, loadWorkers) : [];
    // Probes during the storm go between devices already back, once half are: the rest are still joining.
    const half = await pollUntil(workers, (s) => s.welcomed >= n / 2, joinDeadlineMs(n));
    const stormIps = await connectedIps(workers);
    const stormProbed = await probes(workers, shares, stormIps, options.probes, 2, 1000);
    const back = await pollUntil(workers, (s) => s.welcomed === n, joinDeadlineMs(n), (s) => say(`storm: ${s.welcomed}/${n} back`));
    if (half.timedOut || back.timedOut) notes.push(`storm: ${back.status.welcomed}/${n} back after ${joinDeadlineMs(n) / 1000} s`);
    const stormCpu = (await relaysCpu(relays)) - cpuBeforeStorm;
    for (const w of loadWorkers) w.onWelcomed = null;
    const dnsOnJoin = dnsSummary(await Promise.all(lookups));
    say(`DNS right after joining: ${dnsOnJoin.correct}/${dnsOnJoin.asked} right, p50/p99 ${dnsOnJoin.p50Ms}/${dnsOnJoin.p99Ms} ms`);
    const storm = { seconds: back.timedOut ? null : (back.status.lastWelcome - listening) / 1000, back: back.status.welcomed, sameIp: back.status.sameIp, hadIp: back.status.hadIp,
      cpuMsPerDevice: stormCpu * 1000 / Math.max(1, back.status.welcomed), cpuShare: stormCpu / ((Date.now() - listening) / 1000) * 100,
      runQueueSeconds: runQueue() - waitBeforeStorm };
    say(`storm: ${storm.back}/${n} back in ${storm.seconds ?? 'timeout'} s, ${storm.sameIp} of ${storm.hadIp} with the same IP; probes ${stormProbed.delivered}/${stormProbed.sent}; ` +
      `relay CPU ${storm.cpuMsPerDevice.toFixed(1)} ms per device back, ${storm.cpuShare.toFixed(0)}% of a core, ${storm.runQueueSeconds.toFixed(1)} s waiting for one`);

    return {
      devices: n, relays: relays.length, workers: workers.length, commit: commit(), cores: cpus().length, loadavg: { start, end: loadavg() },
      join, relay: { rssKib, kibPerDevice: rssKib / Math.max(1, join.joined), joinCpuMs, joinCpuShare, joinRunQueueSeconds, idleCpuPercent, idleSeconds: options.secondsIdle },
      discovery: { totalBytes: discovery, meanBytes: discovery / n },
      discoveryRequested: options.discovery,
      peers: { full: peers.status.full, complete: peers.status.complete, seconds: peers.timedOut ? null : Math.max(0, peers.status.lastComplete - joinAll) / 1000 },
      dns: dnsResult, ...(relays.length === 1 ? { dnsOnJoin } : {}), probes: { sent: probed.sent, delivered: probed.delivered },
      ...(relays.length > 1 ? { crossRelay: probed.cross } : {}),
      stormProbes: { sent: stormProbed.sent, delivered: stormProbed.delivered, connectedWhenSent: stormIps.size }, storm, notes,
    };
  } finally {
    await Promise.allSettled(workers.map((w) => w.call({ cmd: 'stop' }, 5000)));
    await cluster.stop();
  }
}

