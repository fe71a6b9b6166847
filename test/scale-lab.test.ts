/**
 * The scale bench (`npm run bench:scale`) at 500 devices: the real mnedcd-server in its own namespace with
 * its TUN, 500 simulated devices (real TLS 1.3 and HELLO proofs) from 250 loopback sources over two worker
 * processes. The goals, scaled down: all join, every probe between random pairs arrives (after
 * joining and during the reconnect storm after kill -9), every device comes back with its address, every
 * device knows every peer (below discovery_full_max), DNS answers every lookup right within 1 s, and join
 * time, relay CPU per join, memory per device and idle CPU stay within bounds several times what was
 * measured on the 2-core machine (so a regression that makes joins or sessions several times dearer fails).
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { formatTable, runScale } from '@mnedc/lab';
import { skipUnlessRoot } from './lab-suite';

const DEVICES = 500;
// Measured at 500 on the 2-core machine (load average ~3): joined in 2.3 s, storm 2.4 s, 3.3 ms of relay
// CPU per join, 195 KiB per device (the relay's ~60 MiB base included), idle 4% of a core. With room for a
// machine loaded by other tests (at load 8–10 the join took 22 s on older code):
const JOIN_SECONDS = 45;
const JOIN_CPU_MS = 15;
const KIB_PER_DEVICE = 400;
/** The 10,000-device goal; 500 devices use a sixth of it. */
const IDLE_CPU_PERCENT = 25;

describe('scale: 500 simulated devices on one relay', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  it('joins all, delivers every probe also during a kill -9 reconnect storm, and gives every device its address back', async (t) => {
    const result = await runScale({ devices: DEVICES, discovery: 'auto', workers: 2, probes: 500, secondsIdle: 3, relays: 1 });
    const table = `\n${formatTable([result])}\n${JSON.stringify(result)}`;
    t.diagnostic(table);
    assert.equal(result.join.joined, DEVICES, `all joined${table}`);
    assert.equal(result.peers.full, DEVICES, `below discovery_full_max every device asking "auto" is pushed the list${table}`);
    assert.equal(result.peers.complete, DEVICES, `every device knows every peer${table}`);
    assert.equal(result.probes.delivered, result.probes.sent, `probes delivered${table}`);
    assert.equal(result.probes.sent, 500, `probes sent${table}`);
    assert.equal(result.stormProbes.delivered, result.stormProbes.sent, `probes delivered during the storm${table}`);
    assert.ok(result.stormProbes.sent > 0, `probes sent during the storm${table}`);
    assert.equal(result.storm.back, DEVICES, `all back after kill -9${table}`);
    assert.equal(result.storm.sameIp, DEVICES, `all back with the same address${table}`);
    assert.ok(result.join.seconds! < JOIN_SECONDS, `join within ${JOIN_SECONDS} s${table}`);
    assert.ok(result.relay.joinCpuMs! < JOIN_CPU_MS, `relay CPU per join under ${JOIN_CPU_MS} ms${table}`);
    assert.ok(result.relay.kibPerDevice! < KIB_PER_DEVICE, `relay RSS under ${KIB_PER_DEVICE} KiB per device${table}`);
    assert.ok(result.storm.seconds! < JOIN_SECONDS, `storm over within ${JOIN_SECONDS} s${table}`);
    assert.ok(result.relay.idleCpuPercent! < IDLE_CPU_PERCENT, `idle relay under ${IDLE_CPU_PERCENT}% of a core${table}`);
    assert.equal(result.dns.correct, result.dns.asked, `every DNS lookup of a peer answered with its address${table}`);
    assert.ok(result.dns.p99Ms! < 1000, `DNS p99 under 1 s${table}`);
    assert.ok(result.dnsOnJoin!.asked > 0, `devices looked up the moment they joined${table}`);
    assert.equal(result.dnsOnJoin!.correct, result.dnsOnJoin!.asked, `each resolvable at once, within 1 s${table}`);
  });
});
