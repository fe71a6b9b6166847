/**
 * A scale-bench worker process: holds a share of the simulated devices inside the relay's namespace and
 * answers its parent's requests over the IPC channel (messages in protocol.ts). Devices connect through a
 * gate of HANDSHAKES_IN_FLIGHT so this process's own TLS work does not time out handshakes.
 */
import { generateKeyPairSync } from 'node:crypto';
import { intToIpv4 } from '@mnedc/protocol';
import { SimDevice, type DeviceSink } from './device';
import { dnsQuery, probePayload, udpPacket, PROBE_PORT, DNS_PORT, type DnsAnswer } from './packets';
import type { DnsResult, Request, WorkerStatus } from './protocol';
import { sourceAddress } from './stats';

const HANDSHAKES_IN_FLIGHT = 128;
const DNS_TIMEOUT_MS = 1000;

let devices: SimDevice[] = [];
const waiting: Array<() => void> = [];
let inFlight = 0;
const probesReceived: number[] = [];
const dnsPending = new Map<number, { sentAt: number; expect: string; done: (r: DnsResult) => void }>();
let nextDnsId = 1;
/** Devices still to report to the parent as they are welcomed (dnsOnJoin). */
let reportWelcomes = 0;

/** A connected device of this worker other than `device`, to ask the relay a name. */
function asker(device?: SimDevice): SimDevice | undefined {
  for (let tries = 0; tries < 50; tries++) {
    const other = devices[Math.floor(Math.random() * devices.length)];
    if (other && other !== device && current(other)) return other;
  }
  return devices.find((d) => d !== device && current(d));
}

/** Leased addresses when the parent last said 'mark' (before kill -9), to count who got the same back. */
let marked: number[] = [];
let markedAt = 0;

/**
 * Welcomed by the relay running now: after 'mark' (just before kill -9) only a WELCOME since counts, as a
 * busy worker may not have seen every connection to the killed relay close yet.
 */
function current(d: SimDevice): boolean {
  return d.welcomed && d.welcomedAt >= markedAt;
}

const sink: DeviceSink = {
  gate(go) {
    if (inFlight < HANDSHAKES_IN_FLIGHT) {
      inFlight++;
      go();
    } else {
      waiting.push(go);
    }
  },
  release() {
    const next = waiting.shift();
    if (next) setImmediate(next);
    else inFlight--;
  },
  probe(id) {
    probesReceived.push(id);
  },
  welcomed(device) {
    if (reportWelcomes === 0) return;
    reportWelcomes--;
    process.send!({ event: 'welcomed', index: device.index, ip: device.ip, at: device.welcomedAt });
  },
  dns(answer: DnsAnswer) {
    const pending = dnsPending.get(answer.id);
    if (!pending) return;
    dnsPending.delete(answer.id);
    pending.done({ ms: Date.now() - pending.sentAt, correct: answer.rcode === 0 && answer.addresses.includes(pending.expect) });
  },
};

function status(): WorkerStatus {
  let welcomed = 0, full = 0, complete = 0, lastComplete = 0, lastWelcome = 0, peerBytes = 0, unreadable = 0, sameIp = 0;
  const hadIp = marked.filter((ip) => ip !== 0).length;
  for (const [i, d] of devices.entries()) {
    if (current(d)) {
      welcomed++;
      if (d.granted === 'full') full++;
      lastWelcome = Math.max(lastWelcome, d.welcomedAt);
      if (marked.length > 0 && marked[i] !== 0 && marked[i] === d.ip) sameIp++;
    }
    if (d.completeAt !== 0 && d.granted === 'full') {
      complete++;
      lastComplete = Math.max(lastComplete, d.completeAt);
    }
    peerBytes += d.peerBytes;
    unreadable += d.unreadablePeers;
  }
  return { welcomed, full, complete, lastComplete, lastWelcome, peerBytes, unreadable, sameIp, hadIp };
}

/** Asks `device`'s relay for `name`; the time counts from `since`, and no answer within 1 s of it is none. */
function dnsLookup(device: SimDevice, name: string, expect: string, since = Date.now()): Promise<DnsResult> {
  return new Promise((resolve) => {
    const id = nextDnsId;
    nextDnsId = (nextDnsId % 0xffff) + 1;
    const timer = setTimeout(() => {
      dnsPending.delete(id);
      resolve({ ms: null, correct: false });
    }, Math.max(0, since + DNS_TIMEOUT_MS - Date.now()));
    dnsPending.set(id, { sentAt: since, expect, done: (r) => { clearTimeout(timer); resolve(r); } });
    const packet = udpPacket(device.ip, device.serverIp, 40_000 + (id % 20_000), DNS_PORT, dnsQuery(id, name));
    if (!device.send(packet)) {
      clearTimeout(timer);
      dnsPending.delete(id);
      resolve({ ms: null, correct: false });
    }
  });
}

async function handle(request: Request): Promise<unknown> {
  switch (request.cmd) {
    case 'start': {
      devices = [];
      for (let i = request.first; i < request.first + request.count; i++) {
        const key = generateKeyPairSync('ed25519').privateKey;
        devices.push(new SimDevice(i, request.devices, key, request.target, sourceAddress(i), sink));
      }
      devices.forEach((d) => d.start());
      // Devices ping too, as clients do; ticks spread them over the keepalive interval.
      let tick = 0;
      setInterval(() => {
        const slots = Math.max(1, Math.round((devices[0]?.keepaliveMs ?? 2000) / 100));
        for (let i = tick % slots; i < devices.length; i += slots) devices[i].ping();
        tick++;
      }, 100).unref();
      return null;
    }
    case 'status': return status();
    case 'ips': return devices.map((d) => [d.index, current(d) ? d.ip : 0, d.relay]);
    case 'mark':
      marked = devices.map((d) => d.ip);
      markedAt = Date.now();
      return null;
    case 'probe': {
      const byIndex = new Map(devices.map((d) => [d.index, d]));
      let sent = 0;
      const gap = request.spreadMs / Math.max(1, request.sends.length);
      for (const [k, [from, toIp, id]] of request.sends.entries()) {
        const device = byIndex.get(from);
        if (device?.send(udpPacket(device.ip, toIp, 30_000, PROBE_PORT, probePayload(id)))) sent++;
        if (gap >= 1 && k % 10 === 9) await new Promise((r) => setTimeout(r, gap * 10));
      }
      return sent;
    }
    case 'received': return probesReceived.splice(0);
    case 'dns': {
      const byIndex = new Map(devices.map((d) => [d.index, d]));
      return Promise.all(request.queries.map(([from, name, expect]) => {
        const device = byIndex.get(from);
        return device ? dnsLookup(device, name, intToIpv4(expect)) : Promise.resolve({ ms: null, correct: false });
      }));
    }
    case 'dnsOnJoin':
      reportWelcomes = request.count;
      return null;
    case 'lookup': {
      const device = asker();
      return device ? dnsLookup(device, request.name, intToIpv4(request.expectIp), request.since) : { ms: null, correct: false };
    }
    case 'stop':
      devices.forEach((d) => d.stop());
      setTimeout(() => process.exit(0), 200);
      return null;
  }
}

process.on('message', (message: { id: number; request: Request }) => {
  handle(message.request).then(
    (result) => process.send!({ id: message.id, result }),
    (error: Error) => process.send!({ id: message.id, error: error.message }),
  );
});
// The parent is gone (killed, crashed): nothing here may outlive it.
process.on('disconnect', () => process.exit(0));
