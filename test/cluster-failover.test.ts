/**
 * Client failover in a cluster (issue 16): three real relay daemons on loopback sharing a real etcd, the
 * second and third endorsed by the first; real RelayClients whose TUN is a recording stand-in. A relay
 * killed with SIGKILL costs its devices a reconnect to another relay with the same address (within 5 s),
 * a device that was only told of the other relays by its WELCOME finds them too, packets cross the mesh
 * before and after, and a device returns to its preferred relay once that has answered for a while.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { EtcdCluster } from '@mnedc/etcd';
import { ipPacket, mergeIni, RelayProcess } from '@mnedc/lab';
import { ipv4ToInt } from '@mnedc/protocol';
import { endorseRelay, loadOrCreateIdentity } from '@mnedc/server';
import { parseClientConfig, RelayClient } from '@mnedc/client';
import type { TunConfig, TunDevice } from '@mnedc/tun';

/** A TUN stand-in: what the client writes to it is kept; `inject` is the host sending a packet. */
class RecordingTun implements TunDevice {
  readonly name = 'rec0';
  readonly vnetHeader = 0;
  readonly written: Buffer[] = [];
  configured: TunConfig[] = [];
  private onBatch: ((batch: Buffer, count: number) => void) | null = null;
  configure(config: TunConfig): void { this.configured.push(config); }
  start(onBatch: (batch: Buffer, count: number) => void): void { this.onBatch = onBatch; }
  pause(): void {}
  resume(): void {}
  writeBatch(packets: readonly Buffer[], count = packets.length): number {
    for (let i = 0; i < count; i++) this.written.push(Buffer.from(packets[i]!));
    return count;
  }
  close(): void {}
  inject(packet: Buffer): void {
    const batch = Buffer.alloc(4 + packet.length);
    batch.writeUInt32BE(packet.length);
    packet.copy(batch, 4);
    this.onBatch!(batch, 1);
  }
}

const log = pino({ level: 'silent' });
/** Polls for state that has no event of its own to wait on. */
async function until(check: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('client failover between the relays of a cluster', { timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  const relays: RelayProcess[] = [];
  const clients: RelayClient[] = [];
  const dirs: string[] = [];

  before(async () => {
    etcd = await EtcdCluster.start();
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await Promise.all(relays.map((r) => r.dispose()));
    await etcd?.stop();
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  async function relay(stateDir: string): Promise<RelayProcess> {
    const r = await RelayProcess.start(`[server]\nstate_dir = ${stateDir}\nsubnet = 10.40.0.0/24\nkeepalive_ms = 500\ndead_after_ms = 2000\n` +
      `[cluster]\netcd = ${etcd.endpoints.join(', ')}\nnetwork = failover-net\n`);
    relays.push(r);
    return r;
  }

  function device(id: string, servers: RelayProcess[], join: string): { client: RelayClient; tun: RecordingTun } {
    return deviceWith(id, servers, join, { probeEveryMs: 200, returnAfterMs: 1_000 });
  }

  function deviceWith(id: string, servers: RelayProcess[], join: string, failback: { probeEveryMs: number; returnAfterMs: number }): { client: RelayClient; tun: RecordingTun } {
    const config = parseClientConfig(`[client]\nserver = ${servers.map((r) => `127.0.0.1:${r.port}`).join(', ')}\njoin = ${join}\ndevice_id = ${id}\n`, 'c.ini');
    const tun = new RecordingTun();
    const client = new RelayClient({
      config, log, deviceId: id, hostname: id, underlay: () => [], device: tun,
      credentials: { join: config.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey },
      failback,
    });
    clients.push(client);
    client.start();
    return { client, tun };
  }

  const connectedTo = (client: RelayClient, r: RelayProcess) => client.state === 'connected' && client.server === `127.0.0.1:${r.port}`;

  async function delivered(from: { client: RelayClient; tun: RecordingTun }, to: { client: RelayClient; tun: RecordingTun }, what: string): Promise<void> {
    const packet = ipPacket(ipv4ToInt(from.client.lease!.ip), ipv4ToInt(to.client.lease!.ip), what);
    // The mesh follows etcd's watches: a device that just moved is routed to its new relay within moments.
    const deadline = Date.now() + 5_000;
    while (!to.tun.written.some((p) => p.includes(what))) {
      if (Date.now() > deadline) throw new Error(`${what}: not delivered`);
      from.tun.inject(packet);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('kill -9 of a relay: its devices are on another relay with the same IP within 5 s; the relay comes back into the mesh and takes its devices back', async () => {
    const first = mkdtempSync(join(tmpdir(), 'mnedc-failover-a-'));
    dirs.push(first);
    const a = await relay(first);
    const endorsed = (relayId: string) => {
      const d = mkdtempSync(join(tmpdir(), `mnedc-failover-${relayId}-`));
      dirs.push(d);
      writeFileSync(join(d, 'network.endorsement'), endorseRelay(first, loadOrCreateIdentity(d).identity.certPem, relayId, 30, Date.now()));
      copyFileSync(join(first, 'join.secret'), join(d, 'join.secret'));
      return d;
    };
    const b = await relay(endorsed('relay-b'));
    const c = await relay(endorsed('relay-c'));

    // d1 knows A (preferred) and B; d2 is configured with C alone and learns the others from its WELCOME.
    const d1 = device('fo-1', [a, b], a.join);
    const d2 = device('fo-2', [c], a.join);
    await until(() => connectedTo(d1.client, a) && connectedTo(d2.client, c), 'fo-1 on A, fo-2 on C');
    await until(() => d2.client.relays.length === 3, 'fo-2 learned the cluster\'s three relays');
    const ip1 = d1.client.lease!.ip;
    const ip2 = d2.client.lease!.ip;
    await delivered(d2, d1, 'C to A');

    const killedAt = Date.now();
    a.daemon.signal('SIGKILL');
    await until(() => connectedTo(d1.client, b), 'fo-1 on B', 5_000);
    assert.ok(Date.now() - killedAt < 5_000);
    assert.equal(d1.client.lease!.ip, ip1, 'the same address on the other relay');
    assert.equal(d1.tun.configured.length, 1, 'the TUN was configured once: its address never changed');
    await delivered(d2, d1, 'C to B');
    await delivered(d1, d2, 'B to C');

    // C killed too: fo-2 had only C configured; it goes to a relay its WELCOME named (A is down, so B).
    c.daemon.signal('SIGKILL');
    await until(() => connectedTo(d2.client, b), 'fo-2 on B, learned from its WELCOME', 5_000);
    assert.equal(d2.client.lease!.ip, ip2);

    // A back: it rejoins the mesh and takes new devices, and fo-1 returns to it once it answered a while.
    await a.restart();
    await until(() => connectedTo(d1.client, a), 'fo-1 back on its preferred relay A', 10_000);
    assert.equal(d1.client.lease!.ip, ip1);
    await delivered(d2, d1, 'B to A after the return');
    const d3 = device('fo-3', [a], a.join);
    await until(() => connectedTo(d3.client, a), 'a new device on the restarted A');
    await delivered(d3, d2, 'A to B, new device');
  });

  it('no flapping: a preferred relay that answers but turns the device away gets it back for a moment only, and the next try waits longer', async () => {
    const first = mkdtempSync(join(tmpdir(), 'mnedc-flap-p-'));
    dirs.push(first);
    const p = await relay(first);
    const qDir = mkdtempSync(join(tmpdir(), 'mnedc-flap-q-'));
    dirs.push(qDir);
    writeFileSync(join(qDir, 'network.endorsement'), endorseRelay(first, loadOrCreateIdentity(qDir).identity.certPem, 'flap-q', 30, Date.now()));
    copyFileSync(join(first, 'join.secret'), join(qDir, 'join.secret'));
    const q = await relay(qDir);
    const flapper = deviceWith('flap-1', [p, q], p.join, { probeEveryMs: 100, returnAfterMs: 500 });
    await until(() => connectedTo(flapper.client, p), 'flap-1 on P');
    const seen: string[] = [];
    flapper.client.on('state', (state: string) => { if (state === 'connected') seen.push(flapper.client.server); });

    // P comes back with room for one device, which another takes first: P answers probes but turns flap-1 away.
    p.daemon.signal('SIGKILL');
    await until(() => connectedTo(flapper.client, q), 'flap-1 on Q');
    writeFileSync(p.config, mergeIni(readFileSync(p.config, 'utf8'), '[limits]\nmax_clients = 1\n'));
    await p.restart();
    const squatter = device('flap-2', [p], p.join);
    await until(() => connectedTo(squatter.client, p), 'flap-2 takes P\'s one place');
    const left = seen.length;
    await until(() => seen.length > left, 'flap-1 tried P and is connected again', 10_000);
    const tried = new Date().toISOString();
    assert.equal(seen.at(-1), `127.0.0.1:${q.port}`, 'straight back on Q, not waiting for P\'s retry hint');
    // The next return waits twice as long (1 s of answers instead of 0.5): flap-1 stays on Q meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 800)); // a span of the scenario, not a wait for an event
    assert.equal(seen.length, left + 1, `no second try within 0.8 s of ${tried}: ${seen.join(', ')}`);
    assert.ok(connectedTo(flapper.client, q));
  });
});
