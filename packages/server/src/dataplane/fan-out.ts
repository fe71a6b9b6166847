import type { WriteBatch } from '@mnedc/link';
import { GSO_NONE, HEADER_BYTES, MULTICAST_GROUPS, reflectionDigest, segmentCount, toDataFrames, type GroupMask } from '@mnedc/protocol';
import { DEFAULT_MULTICAST_LIMITS, MulticastAdmission, newMulticastCounters, type FanOutCost, type MulticastLimits } from './multicast';
import type { TrafficCounters, Target } from './target';

/** One packet to a group, as the data plane read it. */
export interface GroupPacket {
  frame: Buffer;
  /** Where its IP header starts, and where the packet ends. */
  ip: number;
  end: number;
  /** Index into MULTICAST_GROUPS. */
  group: number;
  gso: boolean;
  bytes: number;
  /** The IPv4 lease of its sender (an IPv6 source counts as the lease it maps to). */
  source: number;
}

/**
 * Multicast and broadcast fan-out (protocol multicast.ts): the groups carried, their admission (each
 * sender's rate, the relay's copies, reflectors' echoes) and counters, and the copying itself.
 */
export class FanOut {
  readonly counters = newMulticastCounters();
  private groups: GroupMask = 0;
  private admission = new MulticastAdmission(DEFAULT_MULTICAST_LIMITS);
  private mtu = 65_535;

  /**
   * Limits that change start every sender afresh. `mtu`: the overlay's; a device's own interface sends no
   * larger packet, so a larger one (or a super-packet to segment) is someone making each copy cost more.
   */
  carry(groups: GroupMask, limits: MulticastLimits, mtu: number): void {
    this.groups = groups;
    this.admission = new MulticastAdmission(limits);
    this.mtu = mtu;
  }

  /**
   * Whether the packet is one a device's interface sends: at most the MTU, no segmentation asked for, and
   * nothing in the frame after it (each copy is the whole frame).
   */
  fits(packet: GroupPacket): boolean {
    const { frame, ip, end } = packet;
    return end - ip <= this.mtu && frame.length === end && (!packet.gso || frame[HEADER_BYTES + 1] === GSO_NONE);
  }

  carries(group: number): boolean {
    return group >= 0 && (this.groups & (1 << group)) !== 0;
  }

  /**
   * Copies `packet` from `from` to every target of `devices` but the sender and the relay's own interface,
   * then to every one of `relays`, if admitted. `totals`: the data plane's, which count each copy sent.
   */
  spread(from: Target, packet: GroupPacket, devices: Iterable<Target>, cost: FanOutCost, relays: Iterable<Target>,
    batch: WriteBatch, totals: TrafficCounters): void {
    const { frame, gso, bytes } = packet;
    const counters = this.counters[MULTICAST_GROUPS[packet.group]!];
    counters.received++;
    const admission = this.admission.admit(packet.source, reflectionDigest(frame, packet.ip, packet.end), Date.now(), cost);
    if (admission !== 'ok') {
      counters[admission]++;
      return;
    }
    // Segmented once for all the targets that take no super-packets, from a copy: conversion works in
    // place, and the targets that do take them are sent the frame as it came.
    let plain: Buffer | null = null;
    let plainPackets = 1;
    const copy = (target: Target): void => {
      let out = frame;
      let packets = 1;
      if (gso && !target.gso) {
        if (plain === null) {
          plainPackets = segmentCount(frame, HEADER_BYTES, frame.length);
          plain = toDataFrames(Buffer.from(frame), HEADER_BYTES, frame.length);
        }
        out = plain;
        packets = plainPackets;
      }
      if (!target.accepts(out.length, from)) {
        counters.queueFull++;
        return;
      }
      target.deliver(out, batch);
      counters.delivered++;
      target.counters.txPackets += packets;
      target.counters.txBytes += bytes;
      totals.txPackets += packets;
      totals.txBytes += bytes;
    };
    for (const target of devices) if (target !== from && !target.local) copy(target);
    for (const relay of relays) copy(relay);
  }
}
