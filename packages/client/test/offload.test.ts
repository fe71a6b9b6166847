/**
 * The client's side of offloads: with a relay that grants "gso" it sends and takes DATA_GSO as they are;
 * with one that does not (an older server) it turns the device's offloads off and converts what it reads.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import {
  encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, GSO_UDP_L4, internetChecksum, ipv4ToInt, onesSum,
  VNET_F_NEEDS_CSUM, VNET_HDR_BYTES, writeVnetHeader,
} from '@mnedc/protocol';
import { loadOrCreateIdentity, parseServerConfig, RelayServer } from '@mnedc/server';
import { parseClientConfig, RelayClient } from '../src';
import { FakeDevice } from './fake-device';

/** [virtio header][IPv4][UDP][payload], the UDP checksum left partial; `gsoSize` > 0 makes it a super-packet. */
function offloadedUdp(src: string, dst: string, payload: Buffer, gsoSize = 0): Buffer {
  const length = 28 + payload.length;
  const buf = Buffer.alloc(VNET_HDR_BYTES + length);
  const ip = VNET_HDR_BYTES;
  buf[ip] = 0x45;
  buf.writeUInt16BE(length, ip + 2);
  buf[ip + 8] = 64;
  buf[ip + 9] = 17;
  buf.writeUInt32BE(ipv4ToInt(src), ip + 12);
  buf.writeUInt32BE(ipv4ToInt(dst), ip + 16);
  buf.writeUInt16BE(internetChecksum(buf, ip, ip + 20), ip + 10);
  buf.writeUInt16BE(5000, ip + 20);
  buf.writeUInt16BE(5001, ip + 22);
  buf.writeUInt16BE(length - 20, ip + 24);
  payload.copy(buf, ip + 28);
  buf.writeUInt16BE(onesSum(buf, ip + 12, ip + 20, 17 + length - 20), ip + 26);
  writeVnetHeader(buf, 0, { flags: VNET_F_NEEDS_CSUM, gsoType: gsoSize ? GSO_UDP_L4 : 0, hdrLen: 28, gsoSize, csumStart: 20, csumOffset: 6 });
  return buf;
}

function udpChecksumVerifies(packet: Buffer): boolean {
  const pseudo = Buffer.alloc(12);
  packet.copy(pseudo, 0, 12, 20);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(packet.length - 20, 10);
  return internetChecksum(Buffer.concat([pseudo, packet.subarray(20)])) === 0;
}

const dirs: string[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-client-gso-'));
  dirs.push(dir);
  return dir;
}

function startClient(port: number, joinString: string, deviceId: string, device: FakeDevice): RelayClient {
  const config = parseClientConfig(`[client]\nserver = 127.0.0.1:${port}\njoin = ${joinString}\ndevice_id = ${deviceId}\n`, 'c.ini');
  const c = new RelayClient({
    config, log: pino({ level: 'silent' }), deviceId, hostname: deviceId, underlay: () => [], device,
    credentials: { join: config.client.join, deviceKey: generateKeyPairSync('ed25519').privateKey },
  });
  c.start();
  cleanups.push(() => c.stop());
  return c;
}

function connected(c: RelayClient): Promise<void> {
  if (c.state === 'connected') return Promise.resolve();
  return new Promise((resolve) => c.on('state', (s: string) => s === 'connected' && resolve()));
}

describe('RelayClient with offloads', () => {
  it('moves DATA_GSO unchanged between offloading devices and plain DATA to the others', async () => {
    const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${stateDir()}\n`, 's.ini');
    const server = new RelayServer({ config, log: pino({ level: 'silent' }), serverDeviceId: 'server' });
    const { port } = await server.start();
    cleanups.push(() => server.stop());
    const [devA, devB, devC] = [new FakeDevice(true), new FakeDevice(true), new FakeDevice(false)];
    const a = startClient(port, server.joinString, 'dev-a', devA);
    const b = startClient(port, server.joinString, 'dev-b', devB);
    const c = startClient(port, server.joinString, 'dev-c', devC);
    await Promise.all([connected(a), connected(b), connected(c)]);
    assert.ok(a.offloading && b.offloading && !c.offloading);
    const toB = offloadedUdp(a.lease!.ip, b.lease!.ip, Buffer.alloc(3000, 1), 1000);
    const toC = offloadedUdp(a.lease!.ip, c.lease!.ip, Buffer.alloc(3000, 2), 1000);
    devA.inject([Buffer.from(toB), Buffer.from(toC)]);
    await devB.until(() => devB.written.length === 1, 'the super-packet at b');
    assert.ok(devB.written[0]!.equals(toB) && devB.withHeader[0]);
    await devC.until(() => devC.written.length === 3, 'three segments at c');
    assert.ok(devC.written.every((p, i) => !devC.withHeader[i] && udpChecksumVerifies(p) && p.length === 1028));
    assert.deepEqual(devA.offloadCalls, [], 'offloads stay on');
  });

  it('with a relay that does not grant gso, turns offloads off and sends plain DATA', async () => {
    // An older relay: real identity and join string, but a WELCOME without capabilities.
    const dir = stateDir();
    const real = new RelayServer({ config: parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n`, 's.ini'), log: pino({ level: 'silent' }), serverDeviceId: 'server' });
    const joinString = real.joinString;
    const { identity } = loadOrCreateIdentity(dir);
    const received: Buffer[] = [];
    let hello: { capabilities?: string[] } = {};
    let sendToClient: (frame: Buffer) => void = () => {};
    const old: Server = createServer({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3' }, (socket) => {
      const decoder = new FrameDecoder();
      sendToClient = (frame) => socket.write(frame);
      socket.on('error', () => {});
      socket.on('data', (chunk: Buffer) => decoder.push(chunk, (frame) => {
        if (frame[0] === FrameType.Hello) {
          hello = JSON.parse(frame.subarray(4).toString()) as typeof hello;
          socket.write(encodeJsonFrame(FrameType.Welcome, { ip: '10.0.0.2', prefix: 24, mtu: 1400, serverIp: '10.0.0.1', keepaliveMs: 1000, deadAfterMs: 5000 }));
        } else if (frame[0] === FrameType.Data || frame[0] === FrameType.DataGso) received.push(Buffer.from(frame));
      }));
    });
    await new Promise<void>((resolve) => old.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => old.close(() => resolve())));
    const port = (old.address() as { port: number }).port;
    const dev = new FakeDevice(true);
    const c = startClient(port, joinString, 'dev-a', dev);
    await connected(c);
    assert.deepEqual(hello.capabilities, ['gso', 'peers-bin'], 'the client asked');
    assert.equal(c.offloading, false);
    assert.deepEqual(dev.offloadCalls, [0], 'and then let the kernel segment again');
    // What the kernel had queued before: a partial checksum and a super-packet, converted in JS.
    dev.inject([offloadedUdp('10.0.0.2', '10.0.0.3', Buffer.from('partial')), offloadedUdp('10.0.0.2', '10.0.0.3', Buffer.alloc(2500, 3), 1000)]);
    await dev.until(() => received.length >= 4, 'four DATA frames at the relay', 5000).catch(() => undefined);
    assert.equal(received.length, 4);
    assert.ok(received.every((f) => f[0] === FrameType.Data && udpChecksumVerifies(f.subarray(4))));
    assert.equal(received[0]!.subarray(4 + 28).toString(), 'partial');
    // DATA from the relay reaches the device as a bare packet.
    const packet = offloadedUdp('10.0.0.3', '10.0.0.2', Buffer.from('back')).subarray(VNET_HDR_BYTES);
    sendToClient(encodeFrame(FrameType.Data, packet));
    await dev.until(() => dev.written.length === 1, 'the packet at the device');
    assert.ok(dev.written[0]!.equals(packet) && !dev.withHeader[0]);
  });
});
