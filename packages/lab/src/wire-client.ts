import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import {
  encodeFrame, encodeJsonFrame, EXPORTER_BYTES, EXPORTER_CONTEXT, EXPORTER_LABEL, FrameDecoder, FrameType, helloAuth,
  ipv4ToInt, parseGoodbye, parseJoin, parsePeersBinary, parsePeerUpdate, parseReject, parseWelcome, PROTOCOL_VERSION,
  type Goodbye, type PeerInfo, type Reject, type Welcome,
} from '@mnedc/protocol';

export function newDeviceKey(): KeyObject {
  return generateKeyPairSync('ed25519').privateKey;
}

/**
 * A bare protocol speaker for driving a relay from tests: TLS 1.3 and the real HELLO proofs, no TUN,
 * every frame observable. `join` is the server's join string; `key` the device key (fresh by default).
 */
export class WireClient {
  readonly socket: TLSSocket;
  readonly frames: Buffer[] = [];
  readonly data: Buffer[] = [];
  /** DATA_GSO payloads: virtio header + packet. */
  readonly gso: Buffer[] = [];
  readonly peers = new Map<string, PeerInfo>();
  /** Every device ID ever announced as gone, in order. */
  readonly downs: string[] = [];
  /** Bytes of PEERS and PEERS_BIN frames received, headers included. */
  discoveryBytes = 0;
  welcome: Welcome | null = null;
  reject: Reject | null = null;
  goodbye: Goodbye | null = null;
  closed = false;
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];

  constructor(port: number, readonly join: string, readonly key: KeyObject = newDeviceKey(), readonly answerPings = true,
    where: { host?: string; localAddress?: string } = {}) {
    // TCP first, so the source address can be chosen (tls.connect's types do not take localAddress).
    const tcp = netConnect({ host: where.host ?? '127.0.0.1', port, ...(where.localAddress ? { localAddress: where.localAddress } : {}) });
    this.socket = connect({ socket: tcp, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    this.socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk, (f) => this.onFrame(Buffer.from(f)));
      this.wake();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static async join(port: number, join: string, deviceId: string, extra: Record<string, unknown> = {}, key?: KeyObject): Promise<WireClient> {
    const client = new WireClient(port, join, key);
    await once(client.socket, 'secureConnect');
    client.hello(deviceId, extra);
    await client.until(() => client.welcome !== null || client.reject !== null || client.closed, `welcome for ${deviceId}`);
    return client;
  }

  hello(deviceId: string, extra: Record<string, unknown> = {}): void {
    const ekm = this.socket.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, EXPORTER_CONTEXT);
    const auth = helloAuth(parseJoin(this.join).secret, this.key, ekm, deviceId);
    this.socket.write(encodeJsonFrame(FrameType.Hello, { version: PROTOCOL_VERSION, deviceId, hostname: `${deviceId}-host`, underlay: ['192.168.1.10'], auth, ...extra }));
  }

  get ip(): number {
    return ipv4ToInt(this.welcome!.ip);
  }

  send(packet: Buffer): void {
    this.socket.write(encodeFrame(FrameType.Data, packet));
  }

  /** A DATA_GSO frame: `payload` is virtio header + packet. */
  sendGso(payload: Buffer): void {
    this.socket.write(encodeFrame(FrameType.DataGso, payload));
  }

  private onFrame(frame: Buffer): void {
    this.frames.push(frame);
    const payload = frame.subarray(4);
    switch (frame[0]) {
      case FrameType.Welcome: this.welcome = parseWelcome(payload); break;
      case FrameType.Reject: this.reject = parseReject(payload); break;
      case FrameType.Goodbye: this.goodbye = parseGoodbye(payload); break;
      case FrameType.Data: this.data.push(payload); break;
      case FrameType.DataGso: this.gso.push(payload); break;
      case FrameType.Ping: if (this.answerPings) this.socket.write(encodeFrame(FrameType.Pong, payload)); break;
      case FrameType.Peers:
      case FrameType.PeersBin: {
        this.discoveryBytes += frame.length;
        const update = frame[0] === FrameType.Peers ? parsePeerUpdate(payload) : parsePeersBinary(payload);
        if (update.reset) this.peers.clear();
        for (const p of update.up) this.peers.set(p.deviceId, p);
        for (const id of update.down) {
          this.peers.delete(id);
          this.downs.push(id);
        }
        break;
      }
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach((w) => w());
  }

  /** Resolves when `condition` holds after some frame arrives; fails after timeoutMs naming `what`. */
  async until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** Resolves once the socket takes writes again, or has closed: a sender's wait after write() said false. */
  drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A minimal IPv4 packet with a recognisable payload. */
export function ipPacket(src: number, dst: number, body: string | Buffer, protocol = 17): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  const packet = Buffer.alloc(20 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = protocol;
  packet.writeUInt32BE(src, 12);
  packet.writeUInt32BE(dst, 16);
  payload.copy(packet, 20);
  return packet;
}
