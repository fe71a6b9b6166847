/**
 * Multicast fan-out against the real mnedcd-server process on loopback (issue 17, acceptance 5 and the
 * no-loops rule): 50 devices sending mDNS at 10 packets a second each get every other's packets while a
 * 51st floods at 10,000 a second, and two devices that echo every mDNS packet they hear (as a reflector
 * would, from their own address) make no loop.
 */
import { strict as assert } from 'node:assert';
import { after, afterEach, describe, it } from 'node:test';
import { internetChecksum, MDNS_IPV4 } from '@mnedc/protocol';
import { ipPacket, RelayProcess, WireClient } from '@mnedc/lab';

interface GroupStats { group: string; received: number; delivered: number; rateLimited: number; duplicate: number; queueFull: number }

const relays: RelayProcess[] = [];
const devices: WireClient[] = [];
afterEach(() => devices.splice(0).forEach((d) => d.close()));
after(async () => Promise.all(relays.splice(0).map((r) => r.dispose())));

/** An mDNS datagram as a host sends it: UDP 5353 → 224.0.0.251:5353, TTL 255, a valid header checksum. */
function mdns(source: number, payload: string): Buffer {
  const body = Buffer.from(payload);
  const udp = Buffer.alloc(8 + body.length);
  udp.writeUInt16BE(5353, 0);
  udp.writeUInt16BE(5353, 2);
  udp.writeUInt16BE(udp.length, 4);
  body.copy(udp, 8);
  const packet = ipPacket(source, MDNS_IPV4, udp);
  packet[8] = 255;
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  return packet;
}

const payloadOf = (packet: Buffer) => packet.subarray(28).toString();
const sourceOf = (packet: Buffer) => packet.readUInt32BE(12);

async function join(relay: RelayProcess, count: number, prefix: string): Promise<WireClient[]> {
  const joined: WireClient[] = [];
  for (let i = 0; i < count; i++) {
    const device = await WireClient.join(relay.port, relay.join, `${prefix}-${i}`);
    assert.ok(device.welcome, `${prefix}-${i} joined (${device.reject?.reason ?? 'closed'})`);
    devices.push(device);
    joined.push(device);
  }
  return joined;
}

async function multicastStats(relay: RelayProcess): Promise<Record<string, GroupStats>> {
  const stats = (await relay.ctl(['stats', '--json'])).json as { multicast: GroupStats[] };
  return Object.fromEntries(stats.multicast.map((g) => [g.group, g]));
}

describe('multicast fan-out at the real relay', { timeout: 120_000 }, () => {
  it('50 devices at 10 mDNS packets/s each get all of each other\'s while a flooder at 10,000/s is held to its rate', async () => {
    const relay = await RelayProcess.start('[limits]\nmulticast_per_device_per_second = 50\nmulticast_burst = 100\n');
    relays.push(relay);
    const senders = await join(relay, 50, 'dev');
    const [flooder] = await join(relay, 1, 'flooder');
    assert.deepEqual(flooder!.welcome!.multicast, ['mdns', 'ssdp', 'broadcast'], 'the WELCOME announces the groups carried');
    const seconds = 3;
    const perSender = 10 * seconds;
    const started = Date.now();
    let flooded = 0;
    await Promise.all([
      ...senders.map(async (device, d) => {
        for (let k = 0; k < perSender; k++) {
          device.send(mdns(device.ip, `dev-${d} #${k}`));
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }),
      (async () => {
        while (Date.now() - started < seconds * 1000) {
          for (let i = 0; i < 100; i++) flooder!.send(mdns(flooder!.ip, `flood #${flooded++}`));
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })(),
    ]);
    const elapsed = (Date.now() - started) / 1000;
    const fromOthers = (device: WireClient) => device.data.filter((p) => sourceOf(p) !== flooder!.ip);
    for (const device of senders) {
      await device.until(() => fromOthers(device).length >= 49 * perSender, `all 49 × ${perSender} packets at ${device.welcome!.ip}`, 20_000);
    }
    assert.ok(flooded >= 20_000, `the flooder sent ${flooded} in ${elapsed.toFixed(1)} s`);
    for (const [d, device] of senders.entries()) {
      const received = fromOthers(device);
      assert.equal(received.length, 49 * perSender, `dev-${d} got exactly the others' packets`);
      assert.ok(!received.some((p) => payloadOf(p).startsWith(`dev-${d} `)), `dev-${d} got none of its own back`);
      assert.ok(received.every((p) => p[8] === 255), 'TTL 255 as sent');
      const flood = device.data.length - received.length;
      // The burst, then the rate for as long as the flood lasted (a second's slack for the last packets in flight).
      assert.ok(flood <= 100 + 50 * (elapsed + 1), `dev-${d} got ${flood} of the flood's ${flooded}`);
    }
    const stats = await multicastStats(relay);
    assert.ok(stats.mdns!.rateLimited >= flooded - (100 + 50 * (elapsed + 1)), JSON.stringify(stats.mdns));
    assert.equal(stats.mdns!.duplicate, 0);
  });

  it('two devices echoing every mDNS packet they hear make no loop: each echo is dropped as a duplicate', async () => {
    const relay = await RelayProcess.start();
    relays.push(relay);
    const [origin, echoA, echoB, listener] = await join(relay, 4, 'echo');
    let echoed = 0;
    for (const reflector of [echoA!, echoB!]) {
      reflector.socket.on('data', () => setImmediate(() => {
        // Re-sends what it heard from its own address, as an avahi reflector would (any other source is spoofed).
        for (const packet of reflector.data.splice(0)) {
          reflector.send(mdns(reflector.ip, payloadOf(packet)));
          echoed++;
        }
      }));
    }
    for (let k = 0; k < 5; k++) origin!.send(mdns(origin!.ip, `question #${k}`));
    await listener!.until(() => listener!.data.length >= 5, 'the 5 questions');
    // Each reflector echoes each question once; each echo is seen by the relay and must go nowhere.
    await listener!.until(() => echoed >= 10, 'both reflectors echoing', 10_000);
    const deadline = Date.now() + 10_000;
    let stats = await multicastStats(relay);
    while (stats.mdns!.duplicate < 10 && Date.now() < deadline) stats = await multicastStats(relay);
    assert.equal(stats.mdns!.duplicate, 10, JSON.stringify(stats.mdns));
    assert.equal(stats.mdns!.received, 15);
    assert.deepEqual(listener!.data.map(payloadOf), [0, 1, 2, 3, 4].map((k) => `question #${k}`), 'the listener heard each question once');
    assert.equal(origin!.data.length, 0, 'the origin heard no echo of its own question');
    assert.equal(echoed, 10, 'no echo of an echo: the loop never started');
  });

  it('what the relay fans out is counted per group in stats, and a relay with multicast = off fans out nothing', async () => {
    const relay = await RelayProcess.start('[server]\nmulticast = off\n');
    relays.push(relay);
    const [a, b] = await join(relay, 2, 'off');
    a!.send(mdns(a!.ip, 'unheard'));
    a!.send(ipPacket(a!.ip, b!.ip, 'unicast after it'));
    await b!.until(() => b!.data.length >= 1, 'the unicast packet');
    assert.equal(sourceOf(b!.data[0]!), a!.ip);
    assert.equal(b!.data.length, 1, 'only the unicast packet arrived');
    const stats = (await relay.ctl(['stats', '--json'])).json as { multicast: GroupStats[]; totals: { drops: Record<string, number> } };
    assert.deepEqual(stats.multicast, []);
    assert.equal(stats.totals.drops.multicast, 1);
    const human = await relay.ctl(['stats']);
    assert.match(human.stdout, /multicast: none carried \(\[server\] multicast = off\)/);
    assert.equal(b!.welcome!.multicast, undefined, 'the WELCOME announces no groups');
  });

  it('attacks found in review, against the real relay: padding after a small group packet, and replaying another device\'s datagram', async () => {
    const relay = await RelayProcess.start();
    relays.push(relay);
    const [attacker, victim, listener] = await join(relay, 3, 'review');
    // 1. A 40-byte mDNS packet with 60 KB after it in its frame: fanned out, every copy would be the frame.
    for (let i = 0; i < 20; i++) attacker!.send(Buffer.concat([mdns(attacker!.ip, `padded ${i}`), Buffer.alloc(60_000)]));
    attacker!.send(mdns(attacker!.ip, 'honest'));
    await listener!.until(() => listener!.data.some((p) => payloadOf(p) === 'honest'), 'the honest packet after the padded ones');
    assert.deepEqual(listener!.data.map(payloadOf), ['honest'], 'no padded packet was fanned out');
    const stats = (await relay.ctl(['stats', '--json'])).json as { clients: Array<{ deviceId: string; drops: Record<string, number> }> };
    assert.equal(stats.clients.find((c) => c.deviceId === 'review-0')!.drops.malformed, 20);

    // 2. The victim repeats its datagram every 1.5 s (SSDP, mDNS backoff); the attacker heard it and, once
    // the echo window after the first is over, replays it from its own address every 400 ms. The victim's
    // own copies must all still arrive (they did not when the last sender owned a datagram).
    listener!.data.length = 0;
    const question = 'M-SEARCH * HTTP/1.1 (the victim\'s)';
    let replay: NodeJS.Timeout | undefined;
    try {
      for (let k = 0; k < 4; k++) {
        victim!.send(mdns(victim!.ip, question));
        if (k === 0) {
          await new Promise((resolve) => setTimeout(resolve, 1_200));
          replay = setInterval(() => attacker!.send(mdns(attacker!.ip, question)), 400);
          await new Promise((resolve) => setTimeout(resolve, 300));
        } else await new Promise((resolve) => setTimeout(resolve, 1_500));
      }
    } finally {
      clearInterval(replay);
    }
    await listener!.until(() => listener!.data.filter((p) => sourceOf(p) === victim!.ip).length >= 4, 'all 4 of the victim\'s copies', 10_000);
    assert.ok(listener!.data.some((p) => sourceOf(p) === attacker!.ip), 'the replays themselves went out between the victim\'s (not echoes)');
  });
});
