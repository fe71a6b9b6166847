/**
 * Runs inside a throwaway network namespace (spawned by tun.test.ts through
 * `ip netns exec`), because creating TUN devices and addresses must never touch
 * the host's namespace. Speaks JSON lines: events on stdout, commands on stdin.
 * Assertions that need the device live here; the parent checks the reports.
 */
import * as assert from 'node:assert/strict';
import * as asyncHooks from 'node:async_hooks';
import { execFile, execFileSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { VNET_HDR_BYTES } from '@mnedc/protocol';
import { BATCH_HEADER_BYTES, TUN_F, Tun, forEachPacket } from '../src/index';

const LOCAL = '10.99.0.1';
const PEER = '10.99.0.2';
const SUBNET_BROADCAST = '10.99.0.255';
const LOCAL6 = 'fd12:3456:789a::a09:5';
const PEER6 = 'fd12:3456:789a::a09:7';
const LINK_LOCAL6 = 'fe80::a09:5';
const WAIT_MS = 5000;

function emit(event: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

const pendingCommands: string[] = [];
let commandWaiter: ((line: string) => void) | undefined;

function listenForCommands(): readline.Interface {
  const commands = readline.createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    if (commandWaiter) {
      const w = commandWaiter;
      commandWaiter = undefined;
      w(line);
    } else pendingCommands.push(line);
  });
  return commands;
}

function nextCommand(): Promise<string> {
  const queued = pendingCommands.shift();
  if (queued !== undefined) return Promise.resolve(queued);
  return withTimeout(new Promise((resolve) => (commandWaiter = resolve)), 'command from parent');
}

function withTimeout<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Wakes waiters whose condition became true; callers kick() after each event. */
class Progress {
  private waiters: { check: () => boolean; resolve: () => void }[] = [];
  kick(): void {
    this.waiters = this.waiters.filter((w) => (w.check() ? (w.resolve(), false) : true));
  }
  until(check: () => boolean, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return withTimeout(new Promise<void>((resolve) => this.waiters.push({ check, resolve })), what);
  }
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function openConfigured(name = ''): Tun {
  const tun = Tun.open(name);
  tun.configure({ mtu: 1400, address: LOCAL, prefix: 24, up: true });
  return tun;
}

function ipChecksum(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += header.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Udp(src: string, dst: string, sport: number, dport: number, payload: Buffer, id: number): Buffer {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(id, 4);
  p.writeUInt16BE(0x4000, 6); // DF
  p[8] = 64;
  p[9] = 17;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  p.writeUInt16BE(ipChecksum(p.subarray(0, 20)), 10);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  p.writeUInt16BE(8 + payload.length, 24); // checksum 0 = none, legal for IPv4
  payload.copy(p, 28);
  return p;
}

/** Fills in the UDP checksum of an IPv4/UDP packet (with its pseudo-header); a sum of 0 is sent as 0xffff. */
function withUdpChecksum(p: Buffer): Buffer {
  const udp = p.subarray(20);
  const pseudo = Buffer.alloc(12);
  p.copy(pseudo, 0, 12, 20);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(udp.length, 10);
  udp.writeUInt16BE(0, 6);
  const sum = ipChecksum(Buffer.concat([pseudo, udp, Buffer.alloc(udp.length % 2)]));
  udp.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return p;
}

/** An IPv6 address in its canonical (RFC 5952) text, as the WHATWG URL parser writes it. */
function ipv6Text(bytes: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

interface Icmp6Seen {
  src: string;
  dst: string;
  type: number;
}

/** An ICMPv6 packet without extension headers (ping's echo requests), else undefined. */
function parseIcmp6(packet: Buffer): Icmp6Seen | undefined {
  if (packet.length < 48 || packet[0]! >> 4 !== 6 || packet[6] !== 58) return undefined;
  assert.equal(packet.readUInt16BE(4) + 40, packet.length, 'IPv6 payload length must match the record length');
  return { src: ipv6Text(packet.subarray(8, 24)), dst: ipv6Text(packet.subarray(24, 40)), type: packet[40]! };
}

/** `packet` behind a virtio_net_hdr (little-endian): flags, gso_type, gso_size, checksum at the UDP field. */
function withVnet(packet: Buffer, flags: number, gsoType: number, gsoSize: number): Buffer {
  const header = Buffer.alloc(VNET_HDR_BYTES);
  header[0] = flags;
  header[1] = gsoType;
  header.writeUInt16LE(28, 2);
  header.writeUInt16LE(gsoSize, 4);
  header.writeUInt16LE(20, 6);
  header.writeUInt16LE(6, 8);
  return Buffer.concat([header, packet]);
}

/** An IPv4/UDP packet whose checksum field holds only the folded pseudo-header sum (CHECKSUM_PARTIAL). */
function udpWithPartialChecksum(src: string, dst: string, dport: number, payload: Buffer, id: number): Buffer {
  const p = ipv4Udp(src, dst, 4000, dport, payload, id);
  let sum = 17 + (p.length - 20);
  for (let i = 12; i < 20; i += 2) sum += p.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  p.writeUInt16BE(sum, 26);
  return p;
}

interface UdpSeen {
  dst: string;
  dport: number;
  payload: string;
}

/** Parses an IPv4/UDP packet, verifying the framing survived the batch format. */
function parseUdp(packet: Buffer): UdpSeen | undefined {
  if (packet.length < 20 || packet[0]! >> 4 !== 4) return undefined; // e.g. stray IPv6 control traffic
  const ihl = (packet[0]! & 15) * 4;
  assert.equal(packet.readUInt16BE(2), packet.length, 'IP total length must equal the record length');
  assert.equal(ipChecksum(packet.subarray(0, ihl)), 0, 'kernel-built IP header checksum must verify');
  if (packet[9] !== 17) return undefined;
  return {
    dst: [...packet.subarray(16, 20)].join('.'),
    dport: packet.readUInt16BE(ihl + 2),
    payload: packet.subarray(ihl + 8).toString(),
  };
}

/** Sends all datagrams in one synchronous burst and resolves when the kernel has taken them all. */
async function sendBurst(sock: dgram.Socket, payloads: string[], port: number, host: string): Promise<void> {
  await withTimeout(
    Promise.all(
      payloads.map(
        (p) => new Promise<void>((resolve, reject) => sock.send(p, port, host, (err) => (err ? reject(err) : resolve()))),
      ),
    ),
    'UDP sends to complete',
  );
}

function udpSocket(): dgram.Socket {
  return dgram.createSocket('udp4');
}

const scenarios: Record<string, (args: string[]) => Promise<Record<string, unknown>>> = {
  /** Parent inspects the device with `ip` between steps. */
  async configure([name = '']) {
    const tun = openConfigured(name);
    emit('configured', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.configure({ address: '10.99.1.7', prefix: 16, mtu: 9000 });
    emit('reconfigured', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.configure({ up: false });
    emit('down', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.close();
    return { name: tun.name };
  },

  /**
   * The subnet broadcast: set with the address, followed when the prefix changes, gone at /32; a datagram
   * written into the TUN for it reaches a socket bound to the wildcard address.
   */
  async broadcast() {
    const tun = openConfigured();
    const sock = udpSocket();
    await new Promise<void>((resolve) => sock.bind(0, '0.0.0.0', resolve));
    sock.setBroadcast(true);
    const port = sock.address().port;
    const got: { payload: string; from: string }[] = [];
    const progress = new Progress();
    sock.on('message', (msg, rinfo) => {
      got.push({ payload: msg.toString(), from: rinfo.address });
      progress.kick();
    });
    emit('configured', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    const written = tun.writePacket(withUdpChecksum(ipv4Udp(PEER, SUBNET_BROADCAST, 4000, port, Buffer.from('to everyone'), 1)));
    await progress.until(() => got.length >= 1, 'the subnet-broadcast datagram on the wildcard socket');
    sock.close();
    tun.configure({ address: LOCAL, prefix: 16 });
    emit('widened', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.configure({ address: LOCAL, prefix: 32 });
    emit('narrowed', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.close();
    return { written, got };
  },

  /** IPv6 with only the configured addresses; the parent checks them between steps. */
  async ipv6() {
    const tun = Tun.open();
    const enabled = tun.enableIpv6();
    const cfg = { address: '10.9.0.5', prefix: 24, address6: LOCAL6, prefix6: 64, linkLocal6: LINK_LOCAL6, mtu: 1400, up: true };
    tun.configure(cfg);
    const echoes: Icmp6Seen[] = [];
    const progress = new Progress();
    tun.start((batch, count) => {
      forEachPacket(batch, count, (packet) => {
        const icmp = parseIcmp6(packet);
        if (icmp && icmp.type === 128) echoes.push(icmp); // echo request; MLD reports may pass too
      });
      progress.kick();
    });
    emit('configured', { name: tun.name, enabled });
    assert.equal(await nextCommand(), 'next');
    // Nothing answers at the far end of the TUN, so ping's exit status says nothing; the packet is what counts.
    const ping = new Promise<void>((resolve) => execFile('ping', ['-6', '-c1', '-W1', PEER6], () => resolve()));
    await progress.until(() => echoes.length >= 1, 'the echo request read from the TUN');
    await withTimeout(ping, 'ping to exit');
    tun.configure(cfg);
    emit('reconfigured', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.close();
    return { enabled, echoes };
  },

  /** Multicast routes out of the TUN; the parent asks the kernel with `ip route get` before and after. */
  async routes() {
    const tun = openConfigured();
    emit('configured', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.addRoute('224.0.0.251', 32);
    tun.addRoute('239.255.255.250', 32);
    tun.addRoute('239.255.255.250', 32);
    // The same configuration again changes nothing, so the kernel keeps the routes.
    tun.configure({ mtu: 1400, address: LOCAL, prefix: 24, up: true });
    emit('routed', { name: tun.name });
    assert.equal(await nextCommand(), 'next');
    tun.close();
    return {};
  },

  async read() {
    const N = 64;
    const tun = openConfigured();
    const seen: UdpSeen[] = [];
    const batchCounts: number[] = [];
    const asyncIds: number[] = [];
    const order: string[] = [];
    const progress = new Progress();
    tun.start((batch, count) => {
      batchCounts.push(count);
      asyncIds.push(asyncHooks.executionAsyncId());
      let records = 0;
      let end = 0;
      forEachPacket(batch, count, (packet, off) => {
        records++;
        end = off + BATCH_HEADER_BYTES + packet.length;
        const udp = parseUdp(packet);
        if (udp && udp.dst === PEER) seen.push(udp);
      });
      assert.equal(records, count);
      assert.equal(end, batch.length, 'records must exactly fill the batch');
      if (order.length === 0) {
        // make_callback semantics: ticks and microtasks drain before the loop moves on.
        setImmediate(() => order.push('immediate'));
        Promise.resolve().then(() => order.push('microtask'));
        process.nextTick(() => order.push('tick'));
        order.push('callback');
      }
      progress.kick();
    });
    const sock = udpSocket();
    await sendBurst(sock, Array.from({ length: N }, (_, i) => `pkt-${i}`), 9, PEER);
    await progress.until(() => seen.length >= N, `${N} packets`);
    await turn();
    sock.close();
    const stats = tun.stats();
    tun.close();
    return { seen, batchCounts, asyncIds, order, stats };
  },

  /** A drain stops at 256 packets, or earlier when the 1 MiB scratch could not fit another 64 KiB packet. */
  async limits() {
    const tun = Tun.open();
    tun.configure({ mtu: 9000, address: LOCAL, prefix: 24, up: true });
    const batches: { count: number; bytes: number; udp: number }[] = [];
    const progress = new Progress();
    let udpTotal = 0;
    tun.start((batch, count) => {
      let udp = 0;
      forEachPacket(batch, count, (packet) => {
        const u = parseUdp(packet);
        if (u && u.dst === PEER) udp++;
      });
      udpTotal += udp;
      batches.push({ count, bytes: batch.length, udp });
      progress.kick();
    });
    const sock = udpSocket();
    const SMALL = 300;
    await sendBurst(sock, Array.from({ length: SMALL }, (_, i) => `s-${i}`), 9, PEER);
    await progress.until(() => udpTotal >= SMALL, `${SMALL} small packets`);
    const small = batches.splice(0);
    const BIG = 200;
    const big = 'x'.repeat(8000);
    await sendBurst(sock, Array.from({ length: BIG }, () => big), 9, PEER);
    await progress.until(() => udpTotal >= SMALL + BIG, `${BIG} big packets`);
    sock.close();
    const stats = tun.stats();
    tun.close();
    return { small, big: batches, stats };
  },

  async write() {
    const N = 32;
    const tun = openConfigured();
    const sock = udpSocket();
    await new Promise<void>((resolve) => sock.bind(0, LOCAL, resolve));
    const port = sock.address().port;
    const got: { payload: string; from: string; sport: number }[] = [];
    const progress = new Progress();
    sock.on('message', (msg, rinfo) => {
      got.push({ payload: msg.toString(), from: rinfo.address, sport: rinfo.port });
      progress.kick();
    });
    const packets = Array.from({ length: N }, (_, i) => ipv4Udp(PEER, LOCAL, 4000, port, Buffer.from(`w-${i}`), i + 1));
    // An IP version nibble of 0 makes the kernel refuse the write (EINVAL): must count as a drop.
    const junk = Buffer.alloc(20);
    const written = tun.writeBatch([...packets, junk]);
    await progress.until(() => got.length >= N, `${N} datagrams on the bound socket`);
    const single = tun.writePacket(ipv4Udp(PEER, LOCAL, 4000, port, Buffer.from('single'), 999));
    await progress.until(() => got.length >= N + 1, 'writePacket datagram');
    sock.close();
    const stats = tun.stats();
    tun.close();
    return { written, single, got, stats };
  },

  /**
   * IFF_VNET_HDR: reads carry a virtio_net_hdr; writes take bare packets (given an all-zero header), packets
   * with their own header and a partial checksum, and — where the kernel has USO — UDP super-packets,
   * which the kernel segments for the receiving socket.
   */
  async offload() {
    const tun = Tun.open('', { offload: true });
    tun.configure({ mtu: 1400, address: LOCAL, prefix: 24, up: true });
    const headers: number[][] = [];
    const outgoing: UdpSeen[] = [];
    const progress = new Progress();
    tun.start((batch, count) => {
      forEachPacket(batch, count, (record) => {
        const packet = record.subarray(VNET_HDR_BYTES);
        const udp = packet[0]! >> 4 === 4 && packet[9] === 17 ? parseUdp(packet) : undefined;
        if (udp && udp.dst === PEER) {
          headers.push([...record.subarray(0, VNET_HDR_BYTES)]);
          outgoing.push(udp);
        }
      });
      progress.kick();
    });
    const out = udpSocket();
    await sendBurst(out, ['out-0', 'out-1'], 9, PEER);
    await progress.until(() => outgoing.length >= 2, 'two datagrams read with headers');
    out.close();

    const sock = udpSocket();
    await new Promise<void>((resolve) => sock.bind(0, LOCAL, resolve));
    const port = sock.address().port;
    const got: string[] = [];
    sock.on('message', (msg) => {
      got.push(msg.toString());
      progress.kick();
    });
    const bare = ipv4Udp(PEER, LOCAL, 4000, port, Buffer.from('bare'), 1);
    // NEEDS_CSUM with the checksum field holding the pseudo-header sum, as an offloading sender leaves it.
    const partial = withVnet(udpWithPartialChecksum(PEER, LOCAL, port, Buffer.from('partial'), 2), 1, 0, 0);
    const written = tun.writeBatch([bare, partial], 2, Uint8Array.from([0, 1]));
    await progress.until(() => got.length >= 2, 'the bare and the partial-checksum datagram');
    let uso: string[] | null = null;
    if (tun.offloads & TUN_F.USO4) {
      const payload = Buffer.from('a'.repeat(100) + 'b'.repeat(100) + 'c'.repeat(50));
      tun.writeBatch([withVnet(udpWithPartialChecksum(PEER, LOCAL, port, payload, 3), 1, 5, 100)], 1, Uint8Array.from([1]));
      await progress.until(() => got.length >= 5, 'three segments of a UDP super-packet');
      uso = got.slice(2);
    }
    sock.close();
    let plainKinds = '';
    const plain = Tun.open();
    try {
      plain.writeBatch([bare], 1, Uint8Array.from([1]));
    } catch (err) {
      plainKinds = (err as Error).message;
    }
    plain.close();
    const result = { vnetHeader: tun.vnetHeader, offloads: tun.offloads, plainVnet: plain.vnetHeader, headers, outgoing, written, got: got.slice(0, 2), uso, plainKinds, stats: tun.stats() };
    tun.close();
    return result;
  },

  /** The header size the addon opens an offloading device with (its VNET_HDR #define). */
  async vnet() {
    const tun = Tun.open('', { offload: true });
    const result = { vnetHeader: tun.vnetHeader };
    tun.close();
    return result;
  },

  async errors() {
    const report: Record<string, unknown> = {};
    const tun = openConfigured('mnerr0');
    assert.throws(() => tun.configure({ address: '10.99.0.300', prefix: 24 }), /invalid IPv4 address "10\.99\.0\.300"/);
    assert.throws(() => tun.configure({ address: '10.99.0.1', prefix: 33 }), /prefix must be an integer in 0\.\.32/);
    assert.throws(() => tun.configure({ mtu: 67 }), /mtu must be an integer in 68\.\.65535/);
    assert.throws(() => Tun.open('x'.repeat(16)), /at most 15 bytes/);
    // Native errors carry the operation, device name, strerror and errno code.
    assert.throws(() => Tun.open('mnerr0'), (e: NodeJS.ErrnoException) => {
      report.busy = { message: e.message, code: e.code };
      return e.message === 'TUNSETIFF mnerr0: Device or resource busy' && e.code === 'EBUSY';
    });
    assert.throws(() => Tun.open('bad/name'), (e: NodeJS.ErrnoException) => {
      report.invalid = { message: e.message, code: e.code };
      return e.message === 'TUNSETIFF bad/name: Invalid argument' && e.code === 'EINVAL';
    });
    // A non-Buffer element rejects the whole batch before anything is written.
    assert.throws(() => tun.writeBatch([Buffer.alloc(20), 'nope' as unknown as Buffer]), /packets\[1\] is not a Buffer/);
    assert.throws(() => tun.writePacket('nope' as unknown as Buffer), /packet must be a Buffer/);
    assert.equal(tun.stats().txPackets + tun.stats().txDrops, 0);
    assert.throws(() => tun.writeBatch([], 1), /count must be an integer in 0\.\.0/);
    assert.throws(() => tun.start(42 as unknown as () => void), /onBatch must be a function/);
    tun.start(() => {});
    assert.throws(() => tun.start(() => {}), /already started/);
    assert.throws(() => tun.addRoute('10.99.0.1', 24), /Tun\.addRoute mnerr0: 10\.99\.0\.1\/24 has host bits set/);
    assert.throws(() => tun.addRoute('fd00::', 64), /invalid IPv4 destination "fd00::"/);
    assert.throws(() => tun.addRoute('10.0.0.0', 33), /prefix must be an integer in 0\.\.32/);
    assert.throws(() => tun.addAddress6('fe80::1%lo', 64), /invalid IPv6 address "fe80::1%lo"/);
    assert.throws(() => tun.addAddress6('fd00::1', 129), /prefix must be an integer in 0\.\.128/);
    assert.throws(() => tun.configure({ prefix6: 64 }), /prefix6 given without address6/);
    assert.throws(() => tun.configure({ address6: 'fd00::1', prefix6: -1 }), /prefix6 must be an integer in 0\.\.128/);
    assert.throws(() => tun.configure({ address6: '10.0.0.1' }), /invalid IPv6 address "10\.0\.0\.1"/);
    assert.throws(() => tun.configure({ linkLocal6: 'fd00::1' }), /linkLocal6 must be an IPv6 link-local \(fe80::\/10\) address/);
    // The addon checks for itself too, for callers that bypass the wrapper.
    const native = (tun as unknown as { handle: { addRoute(d: string, p: number): void; addAddress6(a: string, p: number): void } }).handle;
    assert.throws(() => native.addRoute('10.99.0.1', 24), /addRoute mnerr0: invalid IPv4 destination "10\.99\.0\.1\/24" \(host bits set\)/);
    assert.throws(() => native.addAddress6('fd00::zz', 64), /addAddress6 mnerr0: invalid IPv6 address\/prefix "fd00::zz\/64"/);

    // IPv6 still off (the child's default): configure refuses before changing anything, the addon with EACCES.
    const off = Tun.open('mnerr1');
    assert.throws(() => off.configure({ mtu: 1300, address6: 'fd00::1' }), (e: NodeJS.ErrnoException) =>
      e.code === 'ERR_TUN_IPV6_DISABLED' && /^Tun\.configure mnerr1: IPv6 is disabled/.test(e.message));
    assert.equal(fs.readFileSync('/sys/class/net/mnerr1/mtu', 'utf8').trim(), '1500');
    assert.throws(() => off.addAddress6('fd00::1', 64), (e: NodeJS.ErrnoException) => {
      report.ipv6Off = { message: e.message, code: e.code };
      return e.code === 'EACCES';
    });
    // Routes need the device up.
    assert.throws(() => off.addRoute('239.255.255.250', 32), (e: NodeJS.ErrnoException) => {
      report.down = { message: e.message, code: e.code };
      return e.code === 'ENETDOWN';
    });
    off.close();

    tun.close();
    tun.close();
    const closed = /mnerr0: tun device is closed/;
    assert.throws(() => tun.writeBatch([Buffer.alloc(20)]), closed);
    assert.throws(() => tun.writePacket(Buffer.alloc(20)), closed);
    assert.throws(() => tun.configure({ mtu: 1500 }), closed);
    assert.throws(() => tun.addRoute('224.0.0.251', 32), closed);
    assert.throws(() => tun.addAddress6('fd00::1', 64), closed);
    assert.throws(() => tun.start(() => {}), closed);
    assert.throws(() => tun.pause(), closed);
    assert.throws(() => tun.resume(), closed);
    assert.equal(typeof tun.stats().rxPackets, 'number');
    // The device is non-persistent: closing the fd removes it, so the name is free again.
    await waitGone('mnerr0');
    const again = Tun.open('mnerr0');
    again.close();
    return report;
  },

  /** close() from inside the handler: the async context is released only after make_callback returns. */
  async closeInside() {
    const tun = openConfigured('mnci0');
    let calls = 0;
    let afterClose = '';
    const progress = new Progress();
    tun.start(() => {
      calls++;
      tun.close();
      try {
        tun.writePacket(Buffer.alloc(20));
      } catch (e) {
        afterClose = (e as Error).message;
      }
      progress.kick();
    });
    const sock = udpSocket();
    await sendBurst(sock, ['a', 'b'], 9, PEER);
    await progress.until(() => calls > 0, 'first callback');
    await waitGone('mnci0');
    for (let i = 0; i < 3; i++) await turn(); // a second wake-up (if 'b' was left queued) must not deliver
    sock.close();
    return { calls, afterClose };
  },

  /** Run under setpriv without CAP_NET_ADMIN. */
  async eperm() {
    try {
      Tun.open('mnperm0');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { message: e.message, code: e.code, errno: e.errno, syscall: e.syscall };
    }
    throw new Error('Tun.open succeeded without CAP_NET_ADMIN');
  },

  async pause() {
    const N = 16;
    const tun = openConfigured();
    let calls = 0;
    const payloads = new Set<string>();
    const progress = new Progress();
    tun.start((batch, count) => {
      calls++;
      forEachPacket(batch, count, (packet) => {
        const udp = parseUdp(packet);
        if (udp && udp.dst === PEER) payloads.add(udp.payload);
      });
      progress.kick();
    });
    tun.pause();
    const sock = udpSocket();
    await sendBurst(sock, Array.from({ length: N }, (_, i) => `p-${i}`), 9, PEER);
    // The packets are queued in the kernel now; several loop turns (each with
    // a poll phase) plus a short window would have delivered them if unpaused.
    for (let i = 0; i < 3; i++) await turn();
    await delay(50);
    const callsWhilePaused = calls;
    tun.resume();
    await progress.until(() => payloads.size >= N, `${N} packets after resume`);
    sock.close();
    const stats = tun.stats();
    tun.close();
    return { callsWhilePaused, received: payloads.size, stats };
  },

  /** A throwing handler must surface as an uncaught exception, and not wedge later deliveries. */
  async throws() {
    const tun = openConfigured();
    const caught = new Promise<string>((resolve) => process.once('uncaughtException', (e) => resolve(e.message)));
    let calls = 0;
    const progress = new Progress();
    tun.start(() => {
      calls++;
      progress.kick();
      if (calls === 1) throw new Error('boom from onBatch');
    });
    const sock = udpSocket();
    await sendBurst(sock, ['first'], 9, PEER);
    const message = await withTimeout(caught, 'uncaughtException');
    // If the exception were left pending, every later napi_make_callback would fail.
    await sendBurst(sock, ['second'], 9, PEER);
    await progress.until(() => calls >= 2, 'a callback after the throwing one');
    tun.close();
    sock.close();
    return { message, calls };
  },

  /** Finalizer closes an abandoned device; a started one is kept alive by its poll handle. */
  async gc() {
    const gc = (globalThis as { gc?: () => void }).gc;
    assert.ok(gc, 'child must run with --expose-gc');
    (() => {
      Tun.open('mngc0');
    })();
    assert.ok(fs.existsSync('/sys/class/net/mngc0'));
    let got = 0;
    const progress = new Progress();
    (() => {
      const t = Tun.open('mngc1');
      t.configure({ address: LOCAL, prefix: 24, up: true });
      // The handler deliberately does not capture t: only the native side may keep it alive.
      t.start(() => {
        got++;
        progress.kick();
      });
    })();
    for (let i = 0; i < 3; i++) {
      gc();
      await turn(); // some Node versions run N-API finalizers from setImmediate
    }
    await waitGone('mngc0');
    assert.ok(fs.existsSync('/sys/class/net/mngc1'), 'a started Tun must not be collected');
    const sock = udpSocket();
    await sendBurst(sock, ['still alive'], 9, PEER);
    await progress.until(() => got > 0, 'callback on the unreferenced started Tun');
    sock.close();
    return { got }; // mngc1 goes away with the process
  },
};

/**
 * Worker teardown with a live poll handle: the addon is dlclose()d when a
 * Worker's env goes away, so a uv_close callback still pending then would
 * jump into unmapped code (this crashed before the async cleanup hook).
 */
const WORKER_MODES = ['exit-started', 'exit-closed', 'natural-paused', 'terminate'] as const;
type WorkerMode = (typeof WORKER_MODES)[number];

function workerBody(mode: WorkerMode, name: string): void {
  const tun = Tun.open(name);
  tun.configure({ up: true });
  tun.start(() => {});
  switch (mode) {
    case 'exit-started':
      process.exit(0);
      break;
    case 'exit-closed':
      tun.close(); // uv_close still in flight when the env dies
      process.exit(0);
      break;
    case 'natural-paused':
      tun.pause(); // loop runs dry; normal env cleanup must close the handle
      break;
    case 'terminate':
      parentPort!.postMessage('ready');
      for (;;); // terminate() interrupts running JS
  }
}

scenarios.workers = async () => {
  const exits = await Promise.all(
    WORKER_MODES.map((mode, i) => {
      const w = new Worker(__filename, { workerData: { mode, name: `mnwk${i}` } });
      w.on('message', () => void w.terminate());
      return withTimeout(new Promise<number>((resolve) => w.once('exit', resolve)), `worker ${mode} to exit`);
    }),
  );
  for (let i = 0; i < WORKER_MODES.length; i++) await waitGone(`mnwk${i}`);
  return { exits };
};

/** Device removal happens when the fd closes, which follows uv_close asynchronously. */
async function waitGone(name: string): Promise<void> {
  const start = Date.now();
  while (fs.existsSync(`/sys/class/net/${name}`)) {
    if (Date.now() - start > WAIT_MS) throw new Error(`device ${name} still exists after ${WAIT_MS} ms`);
    await delay(5);
  }
}

/** Env var through which tun.test.ts tells the child which namespace it must be in. */
const NETNS_ENV = 'MNEDC_TUN_TEST_NETNS';

/** Refuses to touch the network unless we are provably inside the expected test namespace. */
function assertInTestNetns(expected: string): void {
  const current = execFileSync('ip', ['netns', 'identify'], { encoding: 'utf8' }).trim().split(/\s+/);
  if (!expected.startsWith('mntun-') || !current.includes(expected)) {
    throw new Error(`refusing to run: expected netns ${expected}, but running in ${JSON.stringify(current)}`);
  }
}

async function main(): Promise<void> {
  const [scenario = '', ...args] = process.argv.slice(2);
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${JSON.stringify(scenario)}`);
  assertInTestNetns(process.env[NETNS_ENV] ?? '');
  // Keeps IPv6 autoconf chatter (RS/MLD) off new devices; tests filter for IPv4 anyway.
  try {
    fs.writeFileSync('/proc/sys/net/ipv6/conf/default/disable_ipv6', '1');
  } catch {
    /* IPv6 not available: nothing to silence */
  }
  const commands = listenForCommands();
  const result = await run(args);
  emit('done', { result });
  commands.close();
}

if (!process.env[NETNS_ENV]) {
  // Picked up by a `node --test` directory glob (any .js under test/): this is a helper, not a test.
  console.log(`tun-child.js is a helper for tun.test.js (needs ${NETNS_ENV}); nothing to do`);
} else if (!isMainThread) {
  const { mode, name } = workerData as { mode: WorkerMode; name: string };
  workerBody(mode, name);
} else main().then(
  () => process.exit(0),
  (err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    emit('error', { message: e.message, stack: e.stack });
    process.exit(1);
  },
);
