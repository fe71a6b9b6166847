/**
 * Devices on the cluster's other relays in this relay's peer directory: they come by two watches (the
 * registry's attachments and the leases), in either order, and go when they are attached nowhere.
 */
import { strict as assert } from 'node:assert';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { ipv4ToInt } from '@mnedc/protocol';
import { followRemotePeers } from '../src/cluster/remote-peers';
import type { RelayRegistry } from '../src/cluster/registry';
import type { PeerEvent } from '../src/devices';
import type { Lease } from '../src/stores/lease-pool';
import { PeerDirectory } from '../src/stores/peer-directory';
import { until } from './until';

function setup() {
  const registry = Object.assign(new EventEmitter(), { self: { id: 'relay-a' }, attached: new Map<string, string>() });
  (registry as unknown as { relayOf(id: string): string | undefined }).relayOf = (id) => registry.attached.get(id);
  const leases = new Map<string, Lease>();
  const local = new Set<string>();
  const events: PeerEvent[] = [];
  const directory = new PeerDirectory({ schedule: () => ({ cancel: () => {} }) });
  const stop = followRemotePeers(registry as unknown as RelayRegistry, directory, (id) => leases.get(id), (id) => local.has(id), (e) => events.push(e));
  const attach = (id: string, relay: string | undefined) => {
    if (relay) registry.attached.set(id, relay);
    else registry.attached.delete(id);
    registry.emit('attach', id, relay);
  };
  const lease = (id: string, ip: string) => leases.set(id, { deviceId: id, ip: ipv4ToInt(ip), hostname: `${id}-host`, underlay: [], createdAt: 0, lastSeen: 0 } as Lease);
  const listed = () => [...directory.list()].map((p) => `${p.deviceId}@${p.ip}`).sort();
  return { attach, lease, local, events, listed, stop };
}

describe('devices on the other relays', () => {
  it('an attachment whose lease is already known: up at once, with the lease\'s name and address; down when attached nowhere', () => {
    const t = setup();
    t.lease('d1', '10.0.0.5');
    t.attach('d1', 'relay-b');
    assert.deepEqual(t.listed(), ['d1@10.0.0.5']);
    assert.deepEqual(t.events.map((e) => [e.event, e.deviceId, e.hostname]), [['up', 'd1', 'd1-host']]);
    t.attach('d1', undefined);
    assert.deepEqual(t.listed(), []);
    assert.deepEqual(t.events.map((e) => e.event), ['up', 'down']);
    t.stop.stop();
  });

  it('an attachment that comes before its lease: up once the lease is read', async () => {
    const t = setup();
    t.attach('d2', 'relay-c');
    assert.deepEqual(t.listed(), []);
    t.lease('d2', '10.0.0.6');
    await until(() => t.listed().length === 1, 'd2 listed once its lease is known', 5_000);
    assert.deepEqual(t.listed(), ['d2@10.0.0.6']);
    t.stop.stop();
  });

  it('this relay\'s own devices and its own attachments are not another relay\'s', () => {
    const t = setup();
    t.lease('d3', '10.0.0.7');
    t.local.add('d3');
    t.attach('d3', 'relay-b');
    t.attach('d4', 'relay-a');
    assert.deepEqual(t.listed(), []);
    assert.deepEqual(t.events, []);
    t.stop.stop();
  });
});
