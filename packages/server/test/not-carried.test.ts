/** What the relay does not carry: multicast, broadcast and IPv6 are dropped, counted, never answered with ICMP. */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { CAPABILITY_GSO, intToIpv4, ipv4ToInt, VNET_HDR_BYTES } from '@mnedc/protocol';
import { parseServerConfig, RelayServer } from '../src';
import { ipPacket, WireClient } from '@mnedc/lab';

const dirs: string[] = [];
const servers: RelayServer[] = [];
const clients: WireClient[] = [];

afterEach(async () => {
  clients.splice(0).forEach((c) => c.close());
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function relay(logged: Array<{ msg: string }>, settings = ''): Promise<{ server: RelayServer; port: number; join: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'mnedc-notcarried-'));
  dirs.push(dir);
  const config = parseServerConfig(`[server]\nlisten = 127.0.0.1:0\ninterface =\nstate_dir = ${dir}\n${settings}`, 'test.ini');
  const log = pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line) as { msg: string }) });
  const server = new RelayServer({ config, log, serverDeviceId: 'server-test' });
  servers.push(server);
  const { port } = await server.start();
  return { server, port, join: server.joinString };
}

async function device(port: number, joinString: string, id: string, extra: Record<string, unknown> = {}): Promise<WireClient> {
  const client = await WireClient.join(port, joinString, id, extra);
  clients.push(client);
  return client;
}

/** An IPv6 UDP packet from fe80::1 to ff02::1, as a kernel sends from an interface with IPv6 on. */
function ipv6Packet(): Buffer {
  const packet = Buffer.alloc(48);
  packet[0] = 0x60;
  packet.writeUInt16BE(8, 4);
  packet[6] = 17;
  packet[7] = 1;
  packet.writeUInt16BE(0xfe80, 8); packet[23] = 1;
  packet.writeUInt16BE(0xff02, 24); packet[39] = 1;
  return packet;
}

describe('destinations the relay does not carry', () => {
  it('drops multicast and broadcast without ICMP, counted apart from noRoute, when it carries none', async () => {
    const { server, port, join: j } = await relay([], 'multicast = off\n');
    const a = await device(port, j, 'dev-a');
    for (const dst of ['224.0.0.251', '239.255.255.250', '255.255.255.255', '10.0.0.255', '10.0.0.0']) {
      a.send(ipPacket(a.ip, ipv4ToInt(dst), `to ${dst}`));
    }
    // A unicast address nobody holds is answered; the relay handles one connection's frames in order, so
    // the answer to this last packet arriving alone means none of the others got one.
    a.send(ipPacket(a.ip, ipv4ToInt('10.0.0.200'), 'nobody home'));
    await a.until(() => a.data.length >= 1, 'the ICMP unreachable for 10.0.0.200');
    assert.equal(a.data.length, 1, 'only one ICMP error came back');
    assert.equal(intToIpv4(a.data[0]!.readUInt32BE(28 + 16)), '10.0.0.200', 'and it quotes the unicast packet');
    const session = server.session('dev-a')!;
    assert.deepEqual([session.counters.drops.multicast, session.counters.drops.broadcast, session.counters.drops.noRoute], [2, 3, 1]);
    assert.deepEqual([server.totals.drops.multicast, server.totals.drops.broadcast, server.totals.drops.noRoute], [2, 3, 1]);
  });

  it('with ipv6 = no, drops IPv6 as ipv6 (not malformed), in DATA and DATA_GSO, with one log line that names IPv6', async () => {
    const logged: Array<{ msg: string }> = [];
    const { server, port, join: j } = await relay(logged, 'ipv6 = no\n');
    const a = await device(port, j, 'dev-a', { capabilities: [CAPABILITY_GSO] });
    const b = await device(port, j, 'dev-b');
    for (let i = 0; i < 50; i++) a.send(ipv6Packet());
    a.sendGso(Buffer.concat([Buffer.alloc(VNET_HDR_BYTES), ipv6Packet()]));
    a.send(ipPacket(a.ip, b.ip, 'after the IPv6'));
    await b.until(() => b.data.length === 1, 'the IPv4 packet sent after the IPv6 ones');
    const session = server.session('dev-a')!;
    assert.deepEqual([session.counters.drops.ipv6, session.counters.drops.malformed], [51, 0]);
    assert.equal(server.totals.drops.ipv6, 51);
    const lines = logged.filter((l) => /IPv6|malformed/i.test(l.msg));
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.match(lines[0]!.msg, /^Dropped IPv6 packets from dev-a: this relay routes no IPv6 \(\[server\] ipv6 = no\)/);
    assert.equal(a.data.length, 0, 'no ICMP for IPv6');
  });
});
