/**
 * DNS on the overlay, as a device sees it: dig in a client's namespace asks the relay's overlay address
 * (the real mnedcd-server with its TUN), over UDP and TCP; malformed queries get FORMERR and the relay
 * answers on; the relay's underlay address answers nothing; a device that joins resolves within 1 s.
 * UDP queries are answered by the data plane itself (DataPlane.serve); TCP ones by the kernel's socket.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { UNDERLAY } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab, type LabContext } from './lab-suite';

/** dig's reply as (status, answer lines); `+time=2 +tries=1` bounds each call. */
async function dig(ctx: LabContext, args: string[]): Promise<{ code: number; status: string; answers: string[]; out: string }> {
  const result = await ctx.lab.exec('a', ['dig', '+time=2', '+tries=1', '+nocookie', ...args], { timeoutMs: 10_000 });
  const status = /status: ([A-Z]+)/.exec(result.stdout)?.[1] ?? '';
  const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(result.stdout)?.[1] ?? '';
  const answers = section.split('\n').filter(Boolean).map((l) => l.split(/\s+/).slice(3).join(' '));
  return { code: result.code ?? -1, status, answers, out: result.stdout + result.stderr };
}

/** Sends raw bytes over UDP from a's namespace and prints the reply in hex ('' when none came in 2 s). */
const RAW_UDP = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 53))
try:
    print(s.recv(4096).hex())
except socket.timeout:
    print('')
`;

/**
 * A hostile device's query from UDP source port 0, in two IP fragments so the relay's data plane passes it
 * to its TUN and the kernel reassembles it for the UDP socket. argv: source, destination.
 */
const PORT_ZERO_FRAGMENTS = `
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = sys.argv[1], sys.argv[2]
q = bytes.fromhex('beef01000001000000000000') + b'\\x08device-b\\x05mnedc\\x00' + b'\\x00\\x01\\x00\\x01'
udp = struct.pack('!HHHH', 0, 53, 8 + len(q), 0) + q
def ip(payload, offset, more):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0x5151, (more << 13) | (offset // 8), 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip(udp[:16], 0, 1), (dst, 0))
s.sendto(ip(udp[16:], 16, 0), (dst, 0))
`;

describe('DNS on the overlay (lab)', { skip: skipUnlessRoot, timeout: 180_000 }, () => {
  const ctx = withOverlayLab();

  it('answers A, AAAA, PTR, NXDOMAIN, REFUSED over UDP and TCP on the overlay address', async () => {
    const server = ctx.ips.srv;
    await ctx.overlay.server.waitFor(/^Answering DNS for mnedc on /);
    const a = await dig(ctx, [`@${server}`, 'device-b.mnedc', 'A']);
    assert.equal(a.status, 'NOERROR', a.out);
    assert.deepEqual(a.answers, [`A ${ctx.ips.b}`], a.out);
    const tcp = await dig(ctx, ['+tcp', `@${server}`, 'DEVICE-C.mnedc', 'A']);
    assert.deepEqual(tcp.answers, [`A ${ctx.ips.c}`], tcp.out);
    const ptr = await dig(ctx, [`@${server}`, '-x', ctx.ips.d]);
    assert.deepEqual(ptr.answers, ['PTR device-d.mnedc.'], ptr.out);
    assert.equal((await dig(ctx, [`@${server}`, 'nobody.mnedc', 'A'])).status, 'NXDOMAIN');
    // AAAA: the device's IPv6 address in the overlay, as its own status shows it.
    const ip6 = ((await ctx.overlay.ctl('b', ['status', '--json'])).json as { ip6: string }).ip6;
    const aaaa = await dig(ctx, [`@${server}`, 'device-b.mnedc', 'AAAA']);
    assert.deepEqual([aaaa.status, aaaa.answers], ['NOERROR', [`AAAA ${ip6}`]], aaaa.out);
    assert.equal((await dig(ctx, [`@${server}`, 'example.com', 'A'])).status, 'REFUSED');
  });

  it('answers UDP in the data plane, without the relay\'s TUN; TCP still goes through it', async () => {
    const server = ctx.ips.srv;
    const stats = async () => (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as { local: { txPackets: number }; dns: { answers: number } };
    const before = await stats();
    for (let i = 0; i < 5; i++) assert.deepEqual((await dig(ctx, [`@${server}`, 'device-b.mnedc'])).answers, [`A ${ctx.ips.b}`]);
    const udp = await stats();
    assert.equal(udp.dns.answers - before.dns.answers, 5);
    assert.equal(udp.local.txPackets, before.local.txPackets, 'no UDP query was written to the relay\'s TUN');
    assert.deepEqual((await dig(ctx, ['+tcp', `@${server}`, 'device-b.mnedc'])).answers, [`A ${ctx.ips.b}`]);
    assert.ok((await stats()).local.txPackets > udp.local.txPackets, 'the TCP query did reach the TUN');
  });

  it('malformed queries get FORMERR and the relay answers on; its underlay address answers nothing', async () => {
    const server = ctx.ips.srv;
    // ID 0xbeef, one question whose name runs off the end; then a name with a compression pointer.
    for (const hex of ['beef0100000100000000000005616263', 'beef01000001000000000000c00c00010001']) {
      const reply = (await ctx.lab.exec('a', ['python3', '-c', RAW_UDP, server, hex], { timeoutMs: 10_000 })).stdout.trim();
      assert.match(reply, /^beef8/, `a response to 0xbeef: ${reply}`);
      assert.equal(parseInt(reply.slice(7, 8), 16), 1, `FORMERR: ${reply}`);
    }
    assert.deepEqual((await dig(ctx, [`@${server}`, 'device-b.mnedc'])).answers, [`A ${ctx.ips.b}`]);
    const underlay = await dig(ctx, [`@${UNDERLAY.srv}`, 'device-b.mnedc']);
    assert.notEqual(underlay.code, 0, underlay.out);
    assert.equal(underlay.status, '', underlay.out);
    const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as { dns: Record<string, number> };
    assert.ok(stats.dns.formerr >= 2, JSON.stringify(stats.dns));
    assert.ok(stats.dns.answers >= 1, JSON.stringify(stats.dns));
  });

  it('a query from source port 0 that reaches the relay\'s socket is dropped and counted; the relay answers on', async () => {
    const server = ctx.ips.srv;
    const dropped = async () => ((await ctx.overlay.ctl('srv', ['stats', '--json'])).json as { dns: { dropped: number } }).dns.dropped;
    const before = await dropped();
    const sent = await ctx.lab.exec('a', ['python3', '-c', PORT_ZERO_FRAGMENTS, ctx.ips.a, server], { timeoutMs: 10_000 });
    assert.equal(sent.code, 0, sent.stderr);
    // The relay is alive and answering (it would have exited on the throw), and it counted the query.
    assert.deepEqual((await dig(ctx, [`@${server}`, 'device-b.mnedc'])).answers, [`A ${ctx.ips.b}`]);
    assert.equal(await dropped(), before + 1);
  });

  it('a device that joins resolves within 1 s; one that leaves stops resolving', async () => {
    const server = ctx.ips.srv;
    const d = ctx.overlay.client('d');
    d.signal('SIGTERM');
    await d.waitExit();
    const deadline = Date.now() + 10_000;
    let gone = '';
    while (Date.now() < deadline && (gone = (await dig(ctx, [`@${server}`, 'device-d.mnedc'])).status) !== 'NXDOMAIN');
    assert.equal(gone, 'NXDOMAIN', 'device-d is gone');
    await ctx.overlay.startClient('d');
    // startClient returns once d logged "Connected to": its WELCOME is out, so the relay has its name.
    const joined = Date.now();
    let answer: string[] = [];
    while (Date.now() - joined < 1_000 && (answer = (await dig(ctx, [`@${server}`, 'device-d.mnedc'])).answers).length === 0);
    const took = Date.now() - joined;
    assert.deepEqual(answer, [`A ${ctx.ips.d}`], `resolved after ${took} ms`);
    assert.ok(took < 1_000, `resolved after ${took} ms`);
  });
});
