/** DATA_GSO through the relay: negotiation, pass-through, segmentation for the others, bad headers. */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import {
  CAPABILITY_GSO, GSO_TCPV4, internetChecksum, onesSum, VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '@mnedc/protocol';
import { parseServerConfig, RelayServer } from '../src';
import { ipPacket, WireClient } from '@mnedc/lab';

const dirs: string[] = [];
const servers: RelayServer[] = [];
const clients: WireClient[] = [];

async function relay(logged: string[] = []): Promise<{ server: RelayServer; port: number; join: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-gso-'));
  dirs.push(dir);
  const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n`, 'test.ini');
  const server = new RelayServer({ config, log: pino({ level: 'warn' }, { write: (line: string) => logged.push(line) }), serverDeviceId: 'server-test' });
  servers.push(server);
  const { port } = await server.start();
  return { server, port, join: server.joinString };
}

async function device(port: number, joinString: string, id: string, gso: boolean): Promise<WireClient> {
  const client = await WireClient.join(port, joinString, id, gso ? { capabilities: [CAPABILITY_GSO] } : {});
  clients.push(client);
  return client;
}

/** A TCP super-packet as an offloading sender's TUN hands it over: partial checksum, gso_size `mss`. */
function tcpSuperPacket(src: number, dst: number, payload: Buffer, mss: number): Buffer {
  const tcp = Buffer.alloc(20 + payload.length);
  tcp.writeUInt32BE(1000, 4);
  tcp[12] = 0x50;
  tcp[13] = 0x18;
  payload.copy(tcp, 20);
  const packet = ipPacket(src, dst, tcp, 6);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  packet.writeUInt16BE(onesSum(packet, 12, 20, 6 + tcp.length), 36);
  const buf = Buffer.alloc(VNET_HDR_BYTES + packet.length);
  packet.copy(buf, VNET_HDR_BYTES);
  writeVnetHeader(buf, 0, { flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 40, gsoSize: mss, csumStart: 20, csumOffset: 16 });
  return buf;
}

afterEach(async () => {
  clients.splice(0).forEach((c) => c.close());
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('offloaded packets through the relay', () => {
  it('grants gso only to devices that ask for it', async () => {
    const { port, join: j } = await relay();
    const plain = await device(port, j, 'dev-plain', false);
    const offload = await device(port, j, 'dev-gso', true);
    assert.deepEqual(plain.welcome!.capabilities, []);
    assert.deepEqual(offload.welcome!.capabilities, [CAPABILITY_GSO]);
  });

  it('passes DATA_GSO unchanged to a gso device and segments it for the others', async () => {
    const { server, port, join: j } = await relay();
    const sender = await device(port, j, 'dev-a', true);
    const gsoPeer = await device(port, j, 'dev-b', true);
    const plainPeer = await device(port, j, 'dev-c', false);
    const payload = Buffer.alloc(10_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const toGso = tcpSuperPacket(sender.ip, gsoPeer.ip, payload, 1360);
    sender.sendGso(Buffer.from(toGso));
    sender.sendGso(tcpSuperPacket(sender.ip, plainPeer.ip, payload, 1360));
    await gsoPeer.until(() => gsoPeer.gso.length === 1, 'the super-packet at b');
    assert.ok(gsoPeer.gso[0]!.equals(toGso), 'forwarded byte for byte');
    await plainPeer.until(() => plainPeer.data.length === 8, 'eight segments at c');
    assert.equal(plainPeer.gso.length, 0);
    const segments = plainPeer.data;
    for (const segment of segments) {
      assert.ok(segment.length <= 1400);
      assert.equal(internetChecksum(segment, 0, 20), 0, 'IPv4 header checksum');
      const pseudo = Buffer.alloc(12);
      segment.copy(pseudo, 0, 12, 20);
      pseudo[9] = 6;
      pseudo.writeUInt16BE(segment.length - 20, 10);
      assert.equal(internetChecksum(Buffer.concat([pseudo, segment.subarray(20)])), 0, 'TCP checksum');
    }
    assert.ok(Buffer.concat(segments.map((s) => s.subarray(40))).equals(payload));
    const session = server.sessionList().find((s) => s.deviceId === 'dev-c')!;
    assert.equal(session.counters.txPackets, 8);
  });

  it('drops a lying virtio header with a warning and keeps the session', async () => {
    const logged: string[] = [];
    const { server, port, join: j } = await relay(logged);
    const sender = await device(port, j, 'dev-a', true);
    const peer = await device(port, j, 'dev-b', false);
    const bad = tcpSuperPacket(sender.ip, peer.ip, Buffer.alloc(3000), 1360);
    bad.writeUInt16LE(1, 4); // gso_size 1: 3000 one-byte segments
    sender.sendGso(bad);
    const good = tcpSuperPacket(sender.ip, peer.ip, Buffer.alloc(100, 1), 1360);
    sender.sendGso(good);
    await peer.until(() => peer.data.length === 1, 'the good packet');
    assert.equal(server.totals.drops.malformed, 1);
    assert.ok(!sender.closed);
    assert.ok(logged.some((l) => /Dropped packets \(malformed\).*gso_size 1 /.test(l)), logged.join(''));
  });

  it('closes a session that sends DATA_GSO without having negotiated it', async () => {
    const { port, join: j } = await relay();
    const sender = await device(port, j, 'dev-a', false);
    const peer = await device(port, j, 'dev-b', true);
    sender.sendGso(tcpSuperPacket(sender.ip, peer.ip, Buffer.alloc(100), 1360));
    await sender.until(() => sender.closed, 'the session to close');
    assert.match(sender.goodbye?.reason ?? '', /DATA_GSO without the gso capability/);
  });
});
