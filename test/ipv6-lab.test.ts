/**
 * IPv6 inside the overlay with the real daemons in the lab (issue 17, acceptance 3 and 4): c (two NATs
 * deep) and d (behind another NAT) reach each other on their overlay IPv6 addresses with ping -6, a real
 * ssh session and iperf3 -6; a device forging another's IPv6 source gets nothing delivered,
 * counted as spoofed; a subnet broadcast from one device reaches the others.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Daemon, sshSession, sshSkipReason, startSshd, type Device } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab } from './lab-suite';

interface Status { ip: string; ip6?: string; multicast?: string[] }
interface ServerStats { clients: Array<{ deviceId: string; drops: Record<string, number> }>; multicast: Array<{ group: string; delivered: number }> }

/** Prints "bound", then each datagram received on argv[2] (address) port argv[1] as "got <text> from <address>". */
const UDP_LISTEN = `
const dgram = require('dgram');
const [port, address] = process.argv.slice(1);
const s = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
s.on('message', (m, r) => console.log('got ' + m + ' from ' + r.address));
s.bind(Number(port), address, () => { if (!address.includes(':')) s.setBroadcast(true); console.log('bound'); });
`;

/** Sends argv[3] to argv[1]:argv[2] from argv[4] (a local address), with SO_BROADCAST. */
const UDP_SEND = `
const dgram = require('dgram');
const [host, port, text, from] = process.argv.slice(1);
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
s.bind(0, from, () => { if (!host.includes(':')) s.setBroadcast(true); s.send(text, Number(port), host, (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); }); });
`;

/**
 * Writes one IPv6/UDP packet into mnedc0 through a packet socket, past the kernel's source address
 * checks: argv[1] source, argv[2] destination, port 9999, payload argv[3]. What a hostile device could send.
 */
const INJECT_IPV6 = `
import socket, sys, struct
src, dst, text = socket.inet_pton(socket.AF_INET6, sys.argv[1]), socket.inet_pton(socket.AF_INET6, sys.argv[2]), sys.argv[3].encode()
udp_len = 8 + len(text)
pseudo = src + dst + struct.pack('!I3xB', udp_len, 17)
udp = struct.pack('!HHHH', 40000, 9999, udp_len, 0) + text
data = pseudo + udp + (b'\\0' if len(udp) % 2 else b'')
total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
while total > 0xffff: total = (total & 0xffff) + (total >> 16)
csum = (~total & 0xffff) or 0xffff
udp = udp[:6] + struct.pack('!H', csum) + udp[8:]
packet = struct.pack('!IHBB', 0x60000000, udp_len, 17, 64) + src + dst + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x86dd))
s.sendto(packet, ('mnedc0', 0x86dd))
`;

describe('IPv6 inside the overlay, and broadcast', { skip: skipUnlessRoot, timeout: 240_000 }, () => {
  const ctx = withOverlayLab();
  const status = async (node: Device): Promise<Status> => (await ctx.overlay.ctl(node, ['status', '--json'])).json as Status;

  it('every device has its IPv6 address (the lease as interface ID) and its link-local twin on mnedc0, nothing else', async () => {
    const prefixes = new Set<string>();
    for (const node of ['a', 'b', 'c', 'd'] as Device[]) {
      const s = await status(node);
      assert.ok(s.ip6, `${node} has an IPv6 address: ${JSON.stringify(s)}`);
      const [a, b, c, d] = s.ip.split('.').map(Number) as [number, number, number, number];
      const tail = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
      assert.match(s.ip6!, new RegExp(`^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::${tail}$`));
      prefixes.add(s.ip6!.split('::')[0]!);
      const shown = await ctx.lab.exec(node, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'mnedc0']);
      const addresses = [...shown.stdout.matchAll(/inet6 (\S+)/g)].map((m) => m[1]).sort();
      assert.deepEqual(addresses, [`${s.ip6}/64`, `fe80::${tail}/64`].sort(), `${node}: ${shown.stdout}`);
      // multicast_routes = yes: applications that pick no interface reach the overlay's mDNS and SSDP.
      for (const group of ['224.0.0.251', '239.255.255.250']) {
        const route = await ctx.lab.exec(node, ['ip', '-o', 'route', 'get', group]);
        assert.match(route.stdout, /dev mnedc0/, `${node}: ${group}`);
      }
      assert.deepEqual(s.multicast, ['mdns', 'ssdp', 'broadcast']);
    }
    assert.equal(prefixes.size, 1, 'one /64 for the network');
  });

  it('c (two NATs deep) and d (behind another NAT): ping -6, an ssh session and iperf3 -6 over their IPv6 addresses', { skip: sshSkipReason() }, async (t) => {
    const c = (await status('c')).ip6!;
    const d = (await status('d')).ip6!;
    const ping = await ctx.lab.exec('c', ['ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', d], { timeoutMs: 10_000 });
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    assert.match(ping.stdout, /3 received/);
    const back = await ctx.lab.exec('d', ['ping', '-6', '-c', '1', '-W', '2', c], { timeoutMs: 10_000 });
    assert.equal(back.code, 0, back.stdout + back.stderr);

    // A real OpenSSH session from c to d's IPv6 overlay address, a line every 100 ms echoed back.
    const sshd = await startSshd(ctx.lab, 'd', d);
    const session = sshSession(ctx.lab, 'c', sshd, d);
    await session.waitFor(/^echoed 10$/);
    await sshd.daemon.waitForRaw(new RegExp(`Accepted publickey for root from ${c.replace(/\./g, '\\.')} `));

    const server = ctx.lab.spawn('d', ['iperf3', '-s', '-1', '--forceflush', '-B', d], { pipe: true });
    await new Daemon('iperf3 -s', server).waitForRaw(/Server listening/);
    const iperf = await ctx.lab.exec('c', ['iperf3', '-6', '-c', d, '-t', '3', '-J'], { timeoutMs: 30_000 });
    const result = JSON.parse(iperf.stdout) as { end: { sum_received: { bits_per_second: number } }; error?: string };
    assert.equal(result.error, undefined, `iperf3: ${result.error}`);
    const mbits = result.end.sum_received.bits_per_second / 1e6;
    t.diagnostic(`iperf3 -6 c → d: ${mbits.toFixed(0)} Mbit/s`);
    assert.ok(mbits > 10, `iperf3 -6 ran at ${mbits.toFixed(1)} Mbit/s`);

    const echoed = session.lines.length;
    await session.waitFor(/^echoed /, { from: echoed + 5 });
    assert.equal(session.exited, null, `the ssh session lives on: ${session.tail()}`);
    assert.deepEqual(await session.stop(), { code: 0, signal: null }, 'ssh ended cleanly');
    await sshd.stop();
  });

  it('a device forging another device\'s IPv6 source gets nothing delivered, and the relay counts it as spoofed', async () => {
    const [b, c, d] = await Promise.all((['b', 'c', 'd'] as Device[]).map(status));
    const listener = new Daemon('listener', ctx.lab.spawn('d', [process.execPath, '-e', UDP_LISTEN, '9999', d.ip6!], { pipe: true }));
    await listener.waitForRaw(/bound/);
    const spoofedBefore = await spoofedOf(ctx, 'device-c');
    const forged = await ctx.lab.exec('c', ['python3', '-c', INJECT_IPV6, b.ip6!, d.ip6!, 'forged'], { timeoutMs: 10_000 });
    assert.equal(forged.code, 0, forged.stderr);
    const honest = await ctx.lab.exec('c', ['python3', '-c', INJECT_IPV6, c.ip6!, d.ip6!, 'honest'], { timeoutMs: 10_000 });
    assert.equal(honest.code, 0, honest.stderr);
    // The relay handles one device's packets in order: the honest one arriving means the forged one was judged.
    await listener.waitForRaw(/^got honest from /);
    assert.deepEqual(listener.raw.filter((l) => l.startsWith('got ')), [`got honest from ${c.ip6}`]);
    assert.equal(await spoofedOf(ctx, 'device-c') - spoofedBefore, 1);
    listener.signal('SIGKILL');
  });

  it('a UDP broadcast to the subnet\'s broadcast address reaches every other device, not back to the sender', async () => {
    const listeners = (['a', 'b', 'd'] as Device[]).map((node) => new Daemon(`listener ${node}`, ctx.lab.spawn(node, [process.execPath, '-e', UDP_LISTEN, '9998', '0.0.0.0'], { pipe: true })));
    await Promise.all(listeners.map((l) => l.waitForRaw(/bound/)));
    const c = await status('c');
    const sent = await ctx.lab.exec('c', [process.execPath, '-e', UDP_SEND, '10.0.0.255', '9998', 'hello all', c.ip], { timeoutMs: 10_000 });
    assert.equal(sent.code, 0, sent.stderr);
    for (const listener of listeners) await listener.waitForRaw(new RegExp(`^got hello all from ${c.ip.replace(/\./g, '\\.')}$`));
    const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as ServerStats;
    assert.ok(stats.multicast.find((g) => g.group === 'broadcast')!.delivered >= 3, JSON.stringify(stats.multicast));
    listeners.forEach((l) => l.signal('SIGKILL'));
  });
});

async function spoofedOf(ctx: { overlay: { ctl: (node: 'srv', args: string[]) => Promise<{ json: unknown }> } }, deviceId: string): Promise<number> {
  const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as ServerStats;
  return stats.clients.find((c) => c.deviceId === deviceId)!.drops.spoofed ?? 0;
}
