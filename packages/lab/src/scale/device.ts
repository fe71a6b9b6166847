/**
 * One simulated device of the scale bench: real TLS 1.3 and HELLO proofs like WireClient, but lean (no
 * frame log, peers as a bitmap over bench indices) so a worker holds thousands. It reconnects on its own
 * after a loss, as mnedcd-client does (jittered 125–250 ms, doubling to 1 s, a relay's hint honoured).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import {
  CAPABILITY_PEERS_BIN, encodeFrame, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, FrameDecoder, FrameType,
  helloAuth, ipv4ToInt, parseJoin, parsePeersBinary, PROTOCOL_VERSION, type DiscoveryMode, type DiscoveryRequest, type PeerUpdate,
} from '@mnedc/protocol';
import { parseDnsResponse, parseUdp, probeId, PROBE_PORT, DNS_PORT, type DnsAnswer } from './packets';
import { deviceId, deviceIndex } from './stats';

/** What a device reports to its worker. */
export interface DeviceSink {
  /** Asks for a handshake slot; `go` runs when one is free (bounds handshakes in flight per worker). */
  gate(go: () => void): void;
  release(): void;
  probe(id: number): void;
  dns(answer: DnsAnswer): void;
  /** The device has just been welcomed (its name resolves on the overlay from now on). */
  welcomed(device: SimDevice): void;
}

export interface RelayTarget {
  /** One relay's port, or a cluster's: a device starts on ports[index % length] and moves on when it loses one. */
  ports: number[];
  join: string;
  /** HELLO.discovery, as a client's [client] discovery. */
  discovery: DiscoveryRequest;
}

const MAX_WAIT_MS = 15 * 60_000;

export class SimDevice {
  readonly id: string;
  socket: TLSSocket | null = null;
  /** Leased address (host order), 0 before the first WELCOME; kept while disconnected, as the client does. */
  ip = 0;
  serverIp = 0;
  keepaliveMs = 2000;
  welcomed = false;
  welcomedAt = 0;
  /** WELCOME.discovery of the current session: only "full" devices are pushed the peer list. */
  granted: DiscoveryMode = 'full';
  /** Payload bytes of every PEERS frame received, headers included. */
  peerBytes = 0;
  peerFrames = 0;
  /** PEERS payloads this bench could not read (a format it does not know). */
  unreadablePeers = 0;
  knownCount = 0;
  /** When this device first knew every other device (Date.now()), 0 before. */
  completeAt = 0;
  rejects = 0;
  /** Which of target.ports it is on (or tries next). */
  relay: number;
  private readonly known: Uint8Array;
  private decoder = new FrameDecoder();
  /** Derived once: the worker's CPU is the relay's competitor for the machine's cores. */
  private readonly publicKey: Buffer;
  private readonly secret: Buffer;
  private backoffMs = 0;
  private hintMs = 0;
  private gated = false;
  private stopped = false;

  constructor(readonly index: number, private readonly devices: number, private readonly key: KeyObject,
    private readonly target: RelayTarget, private readonly localAddress: string, private readonly sink: DeviceSink) {
    this.id = deviceId(index);
    this.known = new Uint8Array(Math.ceil(devices / 8));
    this.publicKey = createPublicKey(key).export({ format: 'der', type: 'spki' });
    this.secret = parseJoin(target.join).secret;
    this.relay = index % target.ports.length;
  }

  start(): void {
    this.gated = true;
    this.sink.gate(() => this.open());
  }

  private open(): void {
    if (this.stopped) return this.settle();
    this.decoder = new FrameDecoder();
    const tcp = netConnect({ host: '127.0.0.1', port: this.target.ports[this.relay]!, localAddress: this.localAddress });
    const socket = connect({ socket: tcp, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    this.socket = socket;
    socket.once('secureConnect', () => this.hello(socket));
    socket.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk, (frame) => this.onFrame(socket, frame));
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.once('close', () => this.onClose(socket));
  }

  /** Frees the handshake slot once: on WELCOME, REJECT or close. */
  private settle(): void {
    if (!this.gated) return;
    this.gated = false;
    this.sink.release();
  }

  private hello(socket: TLSSocket): void {
    const ekm = socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const auth = helloAuth(this.secret, this.key, ekm, this.id, this.publicKey);
    const previous = this.ip === 0 ? {} : { previousIp: [24, 16, 8, 0].map((s) => (this.ip >>> s) & 255).join('.') };
    socket.write(encodeJsonFrame(FrameType.Hello, {
      version: PROTOCOL_VERSION, deviceId: this.id, hostname: `${this.id}-host`, underlay: ['192.168.1.10'], auth, ...previous,
      capabilities: [CAPABILITY_PEERS_BIN], discovery: this.target.discovery,
    }));
  }

  private onFrame(socket: TLSSocket, frame: Buffer): void {
    const payload = frame.subarray(4);
    switch (frame[0]) {
      case FrameType.Welcome: {
        const welcome = JSON.parse(payload.toString()) as { ip: string; serverIp: string; keepaliveMs: number; discovery?: DiscoveryMode };
        this.ip = ipv4ToInt(welcome.ip);
        this.serverIp = ipv4ToInt(welcome.serverIp);
        this.keepaliveMs = welcome.keepaliveMs;
        this.granted = welcome.discovery ?? 'full';
        this.welcomed = true;
        this.welcomedAt = Date.now();
        this.backoffMs = 0;
        this.settle();
        this.sink.welcomed(this);
        break;
      }
      case FrameType.Reject: {
        this.rejects++;
        const reject = JSON.parse(payload.toString()) as { retryAfterMs?: number };
        this.hintMs = reject.retryAfterMs ?? 0;
        socket.destroy();
        break;
      }
      case FrameType.Goodbye: {
        const goodbye = JSON.parse(payload.toString()) as { reconnectMs?: number };
        this.hintMs = goodbye.reconnectMs ?? 0;
        break;
      }
      case FrameType.Ping: socket.write(encodeFrame(FrameType.Pong, payload)); break;
      case FrameType.Peers: this.onPeers(frame.length, payload, false); break;
      case FrameType.PeersBin: this.onPeers(frame.length, payload, true); break;
      case FrameType.Data: this.onData(Buffer.from(payload)); break;
    }
  }

  private onPeers(bytes: number, payload: Buffer, binary: boolean): void {
    this.peerBytes += bytes;
    this.peerFrames++;
    let update: Partial<PeerUpdate>;
    try {
      update = binary ? parsePeersBinary(payload) : JSON.parse(payload.toString()) as Partial<PeerUpdate>;
    } catch {
      this.unreadablePeers++;
      return;
    }
    if (update.reset) {
      this.known.fill(0);
      this.knownCount = 0;
    }
    for (const peer of update.up ?? []) this.mark(deviceIndex(String(peer.deviceId)), true);
    for (const id of update.down ?? []) this.mark(deviceIndex(String(id)), false);
    if (this.knownCount === this.devices - 1 && this.completeAt === 0) this.completeAt = Date.now();
  }

  private mark(index: number, up: boolean): void {
    if (index < 0 || index >= this.devices || index === this.index) return;
    const bit = 1 << (index & 7);
    const had = (this.known[index >> 3] & bit) !== 0;
    if (up && !had) {
      this.known[index >> 3] |= bit;
      this.knownCount++;
    } else if (!up && had) {
      this.known[index >> 3] &= ~bit;
      this.knownCount--;
    }
  }

  private onData(packet: Buffer): void {
    const udp = parseUdp(packet);
    if (!udp || udp.dst !== this.ip) return;
    if (udp.dstPort === PROBE_PORT) {
      const id = probeId(udp.payload);
      if (id !== null) this.sink.probe(id);
    } else if (udp.srcPort === DNS_PORT) {
      const answer = parseDnsResponse(udp.payload);
      if (answer) this.sink.dns(answer);
    }
  }

  private onClose(socket: TLSSocket): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.welcomed = false;
    this.settle();
    if (this.stopped) return;
    this.backoffMs = this.backoffMs === 0 ? 250 : Math.min(1000, this.backoffMs * 2);
    const wait = Math.min(MAX_WAIT_MS, Math.max(this.backoffMs * (0.5 + Math.random() / 2), this.hintMs * (1 + Math.random() / 2)));
    this.hintMs = 0;
    // As the client does: the next attempt goes to the cluster's next relay.
    this.relay = (this.relay + 1) % this.target.ports.length;
    setTimeout(() => this.start(), wait);
  }

  /** A DATA frame with `packet`, if connected; false otherwise. */
  send(packet: Buffer): boolean {
    if (!this.welcomed || !this.socket) return false;
    this.socket.write(encodeFrame(FrameType.Data, packet));
    return true;
  }

  ping(): void {
    if (this.welcomed && this.socket) this.socket.write(encodeFrame(FrameType.Ping, Buffer.alloc(8)));
  }

  stop(): void {
    this.stopped = true;
    this.socket?.destroy();
  }
}
