import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import {
  encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, ipv4ToInt, parseGoodbye, parsePeerUpdate, parseReject,
  parseWelcome, PROTOCOL_VERSION, type Goodbye, type PeerInfo, type Reject, type Welcome,
} from '@mnedc/protocol';

/** A bare protocol speaker for driving a relay from tests: no TUN, every frame observable. */
export class WireClient {
  readonly socket: Socket;
  readonly frames: Buffer[] = [];
  readonly data: Buffer[] = [];
  readonly peers = new Map<string, PeerInfo>();
  /** Every device ID ever announced as gone, in order. */
  readonly downs: string[] = [];
  welcome: Welcome | null = null;
  reject: Reject | null = null;
  goodbye: Goodbye | null = null;
  closed = false;
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];

  constructor(port: number, readonly answerPings = true) {
    this.socket = connect({ host: '127.0.0.1', port });
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

  static async join(port: number, deviceId: string, extra: Record<string, unknown> = {}): Promise<WireClient> {
    const client = new WireClient(port);
    await once(client.socket, 'connect');
    client.hello(deviceId, extra);
    await client.until(() => client.welcome !== null || client.reject !== null || client.closed, `welcome for ${deviceId}`);
    return client;
  }

  hello(deviceId: string, extra: Record<string, unknown> = {}): void {
    this.socket.write(encodeJsonFrame(FrameType.Hello, { version: PROTOCOL_VERSION, deviceId, hostname: `${deviceId}-host`, underlay: ['192.168.1.10'], ...extra }));
  }

  get ip(): number {
    return ipv4ToInt(this.welcome!.ip);
  }

  send(packet: Buffer): void {
    this.socket.write(encodeFrame(FrameType.Data, packet));
  }

  private onFrame(frame: Buffer): void {
    this.frames.push(frame);
    const payload = frame.subarray(4);
    switch (frame[0]) {
      case FrameType.Welcome: this.welcome = parseWelcome(payload); break;
      case FrameType.Reject: this.reject = parseReject(payload); break;
      case FrameType.Goodbye: this.goodbye = parseGoodbye(payload); break;
      case FrameType.Data: this.data.push(payload); break;
      case FrameType.Ping: if (this.answerPings) this.socket.write(encodeFrame(FrameType.Pong, payload)); break;
      case FrameType.Peers: {
        const update = parsePeerUpdate(payload);
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
