import { RateLimitedWarning, type Logger } from '@mnedc/common';
import type { WriteBatch } from '@mnedc/link';
import {
  buildIcmpUnreachable, checkOffloadPacket, encodeFrame, formatIpv6, FrameType, groupOf, groupOf6, GSO_NONE, HEADER_BYTES, ICMP_HOST_UNREACHABLE, intToIpv4,
  nonUnicastDestination, NOT_CARRIED, NOT_GROUP, readUdp, segmentCount, toDataFrames, udpReply, VNET_F_NEEDS_CSUM,
  type GroupMask, type Subnet,
} from '@mnedc/protocol';
import { FanOut } from './fan-out';
import { DEFAULT_MULTICAST_LIMITS, type MulticastCounters, type MulticastLimits } from './multicast';
import { destination6, end6, linkLocalDestination6, source6, wellFormed6 } from './ipv6-route';
import { checkFrame, frameDestination, packetOffset, RoutingTable, Verdict, type DropReason } from './router';
import { newCounters, type LocalUdpService, type Target } from './target';

/**
 * Where the data plane sends what no local target holds: another relay of the cluster (mesh/mesh.ts).
 * A relay is a Target; its packets come in through forwardFromRelay.
 */
export interface MeshRoutes {
  /** The relay carrying the device at `ip`; 'down' when it is not linked now; null when no relay carries it. */
  routeTo(ip: number): Target | 'down' | null;
  /** Whether `source` is a device `relay` carries: the only source a relay may send from. */
  carries(relay: Target, source: number): boolean;
  /** The relays linked now: each gets one copy of a device's multicast. */
  linked(): Iterable<Target>;
  /** Devices of the whole network now, on every relay: each is a sender with a share of this relay's copies. */
  networkSize(): number;
}

/** Unreachables are a courtesy: a source spraying unknown addresses gets at most this many per second. */
const ICMP_PER_SECOND = 200;
/** IPv6 where the relay routes none (its own interface, [server] ipv6 = no): worth a line an hour. */
const IPV6_NOTICE_MS = 3_600_000;

/**
 * Routes DATA and DATA_GSO frames between targets by destination address. One hop: what arrives from a
 * target is checked (its source must be the target's address), delivered to the destination's target or
 * dropped and counted, never sent anywhere else. The caller ends each batch with endBatch, which flushes
 * every target written to in one write each.
 */
export class DataPlane {
  /** Everything relayed, including by targets that have since gone; not what the relay answered itself (ICMP, DNS). */
  readonly totals = newCounters();
  /** Targets written to since the batch began (and links with PONGs to send). */
  readonly batch: WriteBatch = [];
  private readonly routes = new RoutingTable<Target>();
  private icmpTokens = ICMP_PER_SECOND;
  private icmpRefill = Date.now();
  /** Drops are logged rate-limited per reason. */
  private readonly warnings: RateLimitedWarning;
  private readonly ipv6Notice: RateLimitedWarning;
  private service: LocalUdpService | null = null;
  private mesh: MeshRoutes | null = null;
  /** Multicast and broadcast fanned out (fan-out.ts); none until carry() names some groups. */
  private readonly fan = new FanOut();
  /** The network's IPv6 /64 (8 bytes) when IPv6 is routed, else null. */
  private prefix6: Buffer | null = null;

  constructor(private readonly subnet: Subnet, private readonly serverIp: number, log: Logger) {
    this.warnings = new RateLimitedWarning(log);
    this.ipv6Notice = new RateLimitedWarning(log, IPV6_NOTICE_MS);
  }

  route(target: Target): void {
    this.routes.set(target.ip, target);
  }

  /**
   * UDP to the relay's own address on `service.port` is answered here, in the batch it came in, rather
   * than through the relay's TUN, kernel and socket and back: one pass of the event loop instead of three,
   * which is what keeps DNS answers prompt while a join storm saturates the relay. null: all to the TUN.
   */
  serve(service: LocalUdpService | null): void {
    this.service = service;
  }

  /**
   * The groups whose packets are fanned out to every other device (`multicast =`), and the limits that
   * keep that from becoming a flood. Limits that change start every sender afresh.
   */
  carry(groups: GroupMask, limits: MulticastLimits = DEFAULT_MULTICAST_LIMITS, mtu = 65_535): void {
    this.fan.carry(groups, limits, mtu);
  }

  /** What was fanned out, per group. */
  get multicast(): MulticastCounters {
    return this.fan.counters;
  }

  /** Routes IPv6 inside the network's /64 (protocol ipv6.ts); null: IPv6 is dropped as ipv6. */
  routeIpv6(prefix: Buffer | null): void {
    this.prefix6 = prefix;
  }

  /** Devices on other relays of the cluster are reached through `mesh`. */
  attachMesh(mesh: MeshRoutes | null): void {
    this.mesh = mesh;
  }

  /** Only while the route still leads to `target`, so a replaced session cannot unroute its successor. */
  unroute(target: Target): void {
    this.routes.delete(target.ip, target);
  }

  /**
   * A DATA or DATA_GSO frame from `from`. DATA_GSO goes on as it came to targets that take it and is
   * segmented for the others.
   */
  forward(from: Target, frame: Buffer): void {
    const gso = frame[0] === FrameType.DataGso;
    const ip = packetOffset(frame);
    const bytes = frame.length - ip;
    this.countReceived(from, bytes);
    if (frame[ip]! >> 4 === 6) {
      this.forward6(from, frame, ip, gso, bytes, false);
      return;
    }
    if (gso && this.badOffload(from, frame)) return;
    const verdict = checkFrame(frame, from.ip, ip);
    if (verdict !== Verdict.Deliver) {
      this.drop(from, verdict === Verdict.Spoofed ? 'spoofed' : 'malformed', frame);
      return;
    }
    const destination = frameDestination(frame, ip);
    if (destination === this.serverIp && this.service !== null && !from.local && this.answerLocally(from, frame, ip, gso)) return;
    let target = this.routes.get(destination);
    const group = target === undefined ? groupOf(frame, ip, this.subnet) : NOT_GROUP;
    if (group !== NOT_GROUP) {
      this.fanOut(from, frame, ip, group, gso, bytes, true);
      return;
    }
    if (target === undefined && this.mesh !== null && !from.local) {
      // The relay's own address is each relay's own: its host's traffic never crosses the mesh.
      const relay = this.mesh.routeTo(destination);
      if (relay === 'down') {
        this.drop(from, 'relayDown', frame);
        return;
      }
      if (relay !== null) target = relay;
    }
    if (target === undefined) {
      // A unicast address: multicast and broadcast went to fanOut, which never answers with ICMP (RFC 1122).
      this.drop(from, 'noRoute', frame);
      this.unreachable(from, frame.subarray(ip));
      return;
    }
    this.send(from, target, frame, gso, bytes);
  }

  /**
   * A DATA or DATA_GSO frame from another relay of the cluster: delivered to a device of this relay when
   * its source is a device that relay carries; never sent on to a relay (one hop, no loops) nor to this
   * relay's own interface (whose address is each relay's own).
   */
  forwardFromRelay(from: Target, frame: Buffer): void {
    const gso = frame[0] === FrameType.DataGso;
    const ip = packetOffset(frame);
    const bytes = frame.length - ip;
    this.countReceived(from, bytes);
    if (frame[ip]! >> 4 === 6) {
      this.forward6(from, frame, ip, gso, bytes, true);
      return;
    }
    if (frame[ip]! >> 4 !== 4 || frame.length - ip < 20) {
      this.drop(from, 'malformed', frame);
      return;
    }
    if (gso && this.badOffload(from, frame)) return;
    const source = frame.readUInt32BE(ip + 12);
    if (this.mesh === null || !this.mesh.carries(from, source)) {
      this.drop(from, 'spoofed', frame);
      return;
    }
    if (checkFrame(frame, source, ip) !== Verdict.Deliver) {
      this.drop(from, 'malformed', frame);
      return;
    }
    const target = this.routes.get(frameDestination(frame, ip));
    if (target === undefined) {
      const group = groupOf(frame, ip, this.subnet);
      if (group !== NOT_GROUP) this.fanOut(from, frame, ip, group, gso, bytes, false);
      else this.countDrop(from, 'noRoute');
      return;
    }
    if (target.local) {
      this.countDrop(from, 'noRoute');
      return;
    }
    this.send(from, target, frame, gso, bytes);
  }

  /**
   * IPv6, from a device or (`fromRelay`) from another relay: routed and checked as IPv4 is, through the
   * IPv4 lease each address maps to. A device sends from its overlay address, or from its link-local
   * address to a carried group or another device's link-local address; a relay only from devices it
   * carries. Unicast goes to devices' addresses only; no ICMPv6 errors come back.
   */
  private forward6(from: Target, frame: Buffer, ip: number, gso: boolean, bytes: number, fromRelay: boolean): void {
    const prefix = this.prefix6;
    if (prefix === null) {
      this.dropIpv6(from);
      return;
    }
    if (gso && this.badOffload(from, frame)) return;
    if (!wellFormed6(frame, ip)) {
      this.drop(from, 'malformed', frame, 'IPv6 lengths do not fit the frame');
      return;
    }
    const group = groupOf6(frame, ip);
    // Multicast not carried (the kernels' own MLD reports and router solicitations, from link-local
    // sources) goes nowhere whatever its source: counted as such, not as spoofed.
    if (group === NOT_CARRIED) {
      this.countDrop(from, 'multicast');
      return;
    }
    const linkLocal = group === NOT_GROUP ? linkLocalDestination6(frame, ip) : null;
    const source = source6(frame, ip, prefix, group >= 0 || linkLocal !== null);
    if (source === null || (fromRelay ? this.mesh === null || !this.mesh.carries(from, source) : source !== from.ip)) {
      this.countDrop(from, 'spoofed');
      return;
    }
    if (group !== NOT_GROUP) {
      this.fanOut(from, frame, ip, group, gso, bytes, !fromRelay, source, end6(frame, ip));
      return;
    }
    const destination = linkLocal ?? destination6(frame, ip, prefix);
    let target = destination === null ? undefined : this.routes.get(destination);
    if (target === undefined && destination !== null && !fromRelay && !from.local && this.mesh !== null) {
      const relay = this.mesh.routeTo(destination);
      if (relay === 'down') {
        this.countDrop(from, 'relayDown');
        return;
      }
      if (relay !== null) target = relay;
    }
    // What comes from another relay never goes to this relay's own interface (its address is each relay's own).
    if (target === undefined || (fromRelay && target.local)) {
      this.countDrop(from, 'noRoute');
      return;
    }
    this.send(from, target, frame, gso, bytes);
  }

  /**
   * A packet to a group (groupOf): each other device of this relay gets a copy and, when it came from one
   * of them (`toRelays`), each linked relay gets one, which delivers it to its own devices only. The
   * relay's own interface neither sends nor gets any: its address is each relay's own in a cluster.
   */
  private fanOut(from: Target, frame: Buffer, ip: number, group: number, gso: boolean, bytes: number, toRelays: boolean,
    source = frame.readUInt32BE(ip + 12), end = ip + frame.readUInt16BE(ip + 2)): void {
    if (!this.fan.carries(group) || from.local) {
      const v4 = frame[ip]! >> 4 === 4;
      this.countDrop(from, (v4 ? nonUnicastDestination(frameDestination(frame, ip), this.subnet) : null) ?? 'multicast');
      return;
    }
    const packet = { frame, ip, end, group, gso, bytes, source };
    if (!this.fan.fits(packet)) {
      this.drop(from, 'malformed', frame, `a ${end - ip}-byte packet to a group${gso ? ' (offloaded)' : ''}: only what fits the overlay's MTU unsegmented, with nothing after it in its frame, is fanned out`);
      return;
    }
    // What a packet costs is a copy per device here (the relays it goes to are few); every device of the
    // network, here or on another relay, is a sender with an equal share of those copies.
    const relays = toRelays && this.mesh !== null ? this.mesh.linked() : [];
    const senders = Math.max(this.routes.size, this.mesh?.networkSize() ?? 0);
    this.fan.spread(from, packet, this.routes.values(), { copies: this.routes.size, senders }, relays, this.batch, this.totals);
  }

  private countReceived(from: Target, bytes: number): void {
    from.counters.rxPackets++;
    from.counters.rxBytes += bytes;
    this.totals.rxPackets++;
    this.totals.rxBytes += bytes;
  }

  /** A DATA_GSO whose offload header does not hold: dropped as malformed (true). */
  private badOffload(from: Target, frame: Buffer): boolean {
    const problem = checkOffloadPacket(frame, HEADER_BYTES, frame.length);
    if (problem === null) return false;
    this.drop(from, 'malformed', frame, problem);
    return true;
  }

  private send(from: Target, target: Target, frame: Buffer, gso: boolean, bytes: number): void {
    if (!target.accepts(frame.length, from)) {
      this.countDrop(from, 'queueFull');
      return;
    }
    let packets = 1;
    let out = frame;
    if (gso && !target.gso) {
      packets = segmentCount(frame, HEADER_BYTES, frame.length);
      out = toDataFrames(frame, HEADER_BYTES, frame.length);
    }
    target.deliver(out, this.batch);
    target.counters.txPackets += packets;
    target.counters.txBytes += bytes;
    this.totals.txPackets += packets;
    this.totals.txBytes += bytes;
  }

  /** Ends a batch: one write per target touched. A target that throws does not leave the others corked. */
  endBatch(): void {
    const batch = this.batch;
    try {
      for (let i = 0; i < batch.length; i++) batch[i]!.flush();
    } finally {
      batch.length = 0;
    }
  }

  countDrop(from: Target, reason: DropReason): void {
    this.totals.drops[reason]++;
    from.counters.drops[reason]++;
  }

  private drop(from: Target, reason: DropReason, frame: Buffer, problem?: string): void {
    this.countDrop(from, reason);
    this.warnings.warn(`drop:${reason}`, () => {
      const ip = packetOffset(frame);
      const destination = frame[ip]! >> 4 === 6 && frame.length - ip >= 40 ? formatIpv6(frame, ip + 24) : intToIpv4(frameDestination(frame));
      return {
        fields: { deviceId: from.deviceId, reason, destination, ...(problem ? { problem } : {}) },
        message: `Dropped packets (${reason}), e.g. from ${from.local ? 'the server' : from.deviceId} to ${destination}${problem ? `: ${problem}` : ''}`,
      };
    });
  }

  private dropIpv6(from: Target): void {
    this.countDrop(from, 'ipv6');
    this.ipv6Notice.warn('ipv6', () => ({
      fields: { deviceId: from.deviceId, reason: 'ipv6' },
      message: `Dropped IPv6 packets from ${from.local ? 'the server\'s own interface' : from.deviceId}: ` +
        'this relay routes no IPv6 ([server] ipv6 = no) (counted as drops.ipv6)',
    }));
  }

  /**
   * Whether the service took the packet: a datagram to its port, answered (or refused by it) here. Any
   * other packet for the relay, a fragment, IP options or a bad checksum included, goes on to its TUN.
   */
  private answerLocally(from: Target, frame: Buffer, ip: number, gso: boolean): boolean {
    const service = this.service!;
    let verify = true;
    if (gso) {
      // An offloading device sends every packet so: one whole packet is fine, its checksum maybe left partial.
      if (frame[HEADER_BYTES + 1] !== GSO_NONE) return false;
      verify = (frame[HEADER_BYTES]! & VNET_F_NEEDS_CSUM) === 0;
    }
    const udp = readUdp(frame, ip, { verify, destinationPort: service.port });
    if (udp === null) return false;
    // Port 0 is no port to answer to (and the kernel's socket would refuse the send).
    if (udp.sourcePort === 0) {
      this.countDrop(from, 'malformed');
      return true;
    }
    const answer = service.answer(from.ip, frame.subarray(udp.payloadStart, udp.payloadEnd));
    if (answer === null) return true;
    const reply = encodeFrame(FrameType.Data, udpReply(frame, ip, udp, answer));
    if (!from.accepts(reply.length)) {
      this.countDrop(from, 'queueFull');
      return true;
    }
    from.deliver(reply, this.batch);
    from.counters.txPackets++;
    from.counters.txBytes += reply.length - HEADER_BYTES;
    return true;
  }

  /** `packet`: the IPv4 packet that found no route; the answer goes back to its sender. */
  private unreachable(from: Target, packet: Buffer): void {
    const now = Date.now();
    if (now - this.icmpRefill >= 1000) {
      this.icmpTokens = ICMP_PER_SECOND;
      this.icmpRefill = now;
    }
    if (this.icmpTokens <= 0) return;
    const icmp = buildIcmpUnreachable(packet, this.serverIp, ICMP_HOST_UNREACHABLE);
    if (!icmp) return;
    this.icmpTokens--;
    const frame = encodeFrame(FrameType.Data, icmp);
    if (!from.accepts(frame.length)) return;
    from.deliver(frame, this.batch);
    // A device's counters show what it was sent, answers included; the relay's own TUN counts relayed traffic only.
    if (from.local) return;
    from.counters.txPackets++;
    from.counters.txBytes += icmp.length;
  }
}
