/**
 * Issue 15, store crash-safety against the real mnedcd-server on loopback: kill -9 in the middle of a
 * join storm, restart on the same state directory, and no device that was welcomed loses its address,
 * whether it asks for it back (previousIp) or not, and no address goes to two devices.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { RelayProcess, WireClient } from '@mnedc/lab';

const STORM = 300;
/** The relay is killed the moment this many WELCOMEs have arrived: mid-storm, with writes in flight. */
const KILL_AFTER = 150;
/** Strangers that join first after the restart, so an address whose lease was lost would go to one of them. */
const STRANGERS = 40;
const LIMITS = '[server]\nsubnet = 10.0.0.0/16\n[limits]\nnew_device_burst = 100000\nnew_devices_per_minute = 100000\n' +
  'connections_per_source_per_second = 5000\nconnection_burst_per_source = 5000\nmax_handshakes_per_source = 1024\n';

const relays: RelayProcess[] = [];
const clients: WireClient[] = [];
after(async () => {
  clients.forEach((c) => c.close());
  await Promise.all(relays.map((r) => r.dispose()));
});

async function join(r: RelayProcess, deviceId: string, extra: Record<string, unknown> = {}, key?: WireClient['key']): Promise<WireClient> {
  const client = await WireClient.join(r.port, r.join, deviceId, extra, key);
  clients.push(client);
  assert.ok(client.welcome, `${deviceId} was not welcomed: ${JSON.stringify(client.reject)}`);
  return client;
}

/** Runs `work` over `items` with at most `width` at a time. */
async function inParallel<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await work(items[next++]!);
  }));
}

/**
 * Starts `storm` devices at once, kills the relay with SIGKILL the moment `killAfter` WELCOMEs have
 * arrived, restarts it on the same state, lets strangers join first, then brings every device back: each
 * welcomed one must get its address again (every other one asking with previousIp), and no address may be
 * given twice.
 */
async function crashDuringJoins(stormSize: number, killAfter: number): Promise<{ welcomed: number }> {
  const relay = await RelayProcess.start(LIMITS);
  relays.push(relay);
  const storm = Array.from({ length: stormSize }, (_, i) => ({ id: `storm-${i}`, client: new WireClient(relay.port, relay.join) }));
  clients.push(...storm.map((d) => d.client));
  await Promise.all(storm.map(({ client }) => once(client.socket, 'secureConnect')));
  let welcomed = 0;
  // All HELLOs in one go, once every TLS handshake is done: the test process is idle when the WELCOMEs
  // come, so the kill follows the killAfter-th within a millisecond or two.
  await Promise.all(storm.map(async ({ id, client }) => {
    client.hello(id);
    await client.until(() => client.welcome !== null || client.reject !== null || client.closed, `an answer to ${id}`, 60_000);
    if (client.welcome && ++welcomed === killAfter) relay.daemon.signal('SIGKILL');
  }));
  await relay.daemon.waitExit();
  const survivors = storm.filter((d) => d.client.welcome !== null);
  assert.ok(survivors.length >= killAfter, `${survivors.length} welcomed`);

  await relay.restart();
  const held = new Map<string, string>();
  const hold = (client: WireClient, id: string) => {
    const ip = client.welcome!.ip;
    assert.equal(held.get(ip) ?? id, id, `${ip} given to ${held.get(ip)} and to ${id}`);
    held.set(ip, id);
  };
  await inParallel(Array.from({ length: STRANGERS }, (_, i) => `stranger-${i}`), 8, async (id) => hold(await join(relay, id), id));
  // Newest first: an address lost with its lease would be the lowest free one, a stranger's by now.
  const back = [...survivors].reverse();
  await inParallel(back.map((d, i) => ({ ...d, ask: i % 2 === 0 })), 16, async ({ id, client, ask }) => {
    const again = await join(relay, id, ask ? { previousIp: client.welcome!.ip } : {}, client.key);
    assert.equal(again.welcome!.ip, client.welcome!.ip, `${id} ${ask ? 'asked for' : 'was owed'} ${client.welcome!.ip}`);
    hold(again, id);
  });
  const unanswered = storm.filter((d) => d.client.welcome === null);
  await inParallel(unanswered, 16, async ({ id, client }) => hold(await join(relay, id, {}, client.key), id));
  assert.equal(held.size, STRANGERS + stormSize);
  return { welcomed: survivors.length };
}

describe('stores: kill -9 during a join storm', () => {
  it('every welcomed device gets its address back, with or without previousIp, and none is given twice', { timeout: 180_000 }, async () => {
    const { welcomed } = await crashDuringJoins(STORM, KILL_AFTER);
    assert.ok(welcomed < STORM, 'the kill came before the storm was over');
  });

  it('kill -9 right after the last WELCOME of a burst loses no lease (a lease saved "soon" after its WELCOME would be)', { timeout: 60_000 }, async () => {
    await crashDuringJoins(40, 40);
  });
});
