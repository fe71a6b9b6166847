/**
 * The relay's DNS responder on loopback (standing in for the overlay address, which needs the lab): real
 * UDP and TCP sockets, its bounds and counters. The lab test (test/dns-lab.test.ts) covers the overlay.
 */
import { strict as assert } from 'node:assert';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { DnsType, encodeName, ipv4ToInt, parseSubnet } from '@mnedc/protocol';
import { DnsResponder, type DnsLimits } from '../src/dns/responder';

function query(name: string, id = 7): Buffer {
  const header = Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, encodeName(name.split('.')), Buffer.from([0, DnsType.A, 0, 1])]);
}

const responders: DnsResponder[] = [];
afterEach(() => responders.splice(0).forEach((r) => r.close()));

async function start(limits?: Partial<DnsLimits>, subnet = '127.0.0.0/8'): Promise<DnsResponder> {
  const responder = new DnsResponder({
    host: '127.0.0.1', port: 0, domain: 'mnedc', subnet: parseSubnet(subnet), log: pino({ level: 'silent' }),
    limits: { perSource: { perSecond: 100, burst: 200 }, tcpConnections: 64, tcpIdleMs: 10_000, queuedAnswers: 1024, ...limits },
  });
  responders.push(responder);
  await responder.start();
  responder.names.up('device-a', ipv4ToInt('10.0.0.2'), '');
  return responder;
}

/** Sends each packet and collects the replies that come within `waitMs` of the last one sent. */
async function udp(port: number, packets: Buffer[], waitMs = 300): Promise<Buffer[]> {
  const socket = createSocket('udp4');
  const replies: Buffer[] = [];
  socket.on('message', (msg) => replies.push(msg));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  for (const packet of packets) socket.send(packet, port, '127.0.0.1');
  // No event says "no more replies": a quiet period it is, generous for a loaded machine.
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  socket.close();
  return replies;
}

describe('DNS responder sockets', () => {
  it('answers over UDP, FORMERR for junk with a readable header, and keeps answering', async () => {
    const dns = await start();
    const replies = await udp(dns.port, [query('device-a.mnedc'), Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0]), Buffer.alloc(5), query('device-a.mnedc', 8)]);
    assert.equal(replies.length, 3, 'the five-byte message gets nothing');
    const byId = new Map(replies.map((r) => [r.readUInt16BE(0), r]));
    assert.deepEqual(byId.get(7)!.subarray(-4), Buffer.from([10, 0, 0, 2]));
    assert.equal(byId.get(9)![3]! & 0xf, 1, 'FORMERR');
    assert.deepEqual(byId.get(8)!.subarray(-4), Buffer.from([10, 0, 0, 2]));
    assert.deepEqual({ ...dns.counters }, { queries: 4, answers: 2, nxdomain: 0, formerr: 1, refused: 0, notimp: 0, dropped: 1, rateLimited: 0, tcpRefused: 0 });
  });

  it('rate-limits UDP per source', async () => {
    const dns = await start({ perSource: { perSecond: 1, burst: 5 } });
    const replies = await udp(dns.port, Array.from({ length: 20 }, (_, i) => query('device-a.mnedc', i)));
    assert.equal(replies.length, 5);
    assert.equal(dns.counters.rateLimited, 15);
  });

  it('ignores sources outside the overlay', async () => {
    const dns = await start({}, '10.0.0.0/24');
    assert.deepEqual(await udp(dns.port, [query('device-a.mnedc')]), []);
    assert.equal(dns.counters.dropped, 1);
  });

  it('answers over TCP with length framing, several queries per connection, and caps connections', async () => {
    const dns = await start({ tcpConnections: 1 });
    const first = connect(dns.port, '127.0.0.1');
    const frames = [query('device-a.mnedc', 1), query('nobody.mnedc', 2)].map((q) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]));
    // Split mid-frame: framing must not depend on how TCP delivers.
    const all = Buffer.concat(frames);
    first.write(all.subarray(0, 5));
    setTimeout(() => first.write(all.subarray(5)), 20);
    const received = await new Promise<Buffer>((resolve, reject) => {
      let data = Buffer.alloc(0);
      first.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (data.length >= 4 && data.length >= 2 + data.readUInt16BE(0) + 2 + data.readUInt16BE(2 + data.readUInt16BE(0))) resolve(data);
      });
      first.on('error', reject);
    });
    const one = received.subarray(2, 2 + received.readUInt16BE(0));
    const two = received.subarray(4 + one.length);
    assert.deepEqual(one.subarray(-4), Buffer.from([10, 0, 0, 2]));
    assert.equal(two[3]! & 0xf, 3, 'NXDOMAIN');
    const second = connect(dns.port, '127.0.0.1');
    await new Promise((resolve) => second.on('close', resolve));
    assert.equal(dns.counters.tcpRefused, 1);
    first.destroy();
  });
});
