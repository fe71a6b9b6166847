/**
 * What a RelayClient must do with each frame a relay sends, restated from the protocol's rules for the
 * client's fuzz harness (fuzz-harness.ts), which compares the real client with it after every read.
 */
import { strict as assert } from 'node:assert';
import {
  CAPABILITY_GSO, checkOffloadPacket, FrameType, frameName, ipv4ToInt, parseGoodbye, parsePeersBinary, parsePeerUpdate, parseReject, parseWelcome, ProtocolError, subnetOf,
  type Welcome,
} from '@mnedc/protocol';
import { welcomeRuleBroken } from '@mnedc/protocol/dist/test/fuzz-cases';
import { onOverlay } from '../src/peer-table';

export const SELF_ID = 'self-device';
export const CONFIGURE_FAILURE = 'fake configure failure: RTNETLINK answers: File exists';
export const WRITE_FAILURE = 'fake write failure: EBADFD';

export type DeviceFault = 'none' | 'configure' | 'write';

export interface SessionPlan {
  /** What the relay sends on this connection. */
  stream: Buffer;
  /** Split points into stream (sorted, within 0..length); reads are further split at 16 KiB. */
  cuts: readonly number[];
  /** The relay presents a certificate other than the pinned one. */
  wrongServer: boolean;
  /** How the connection ends once the stream is out: the relay closes it, or a socket error first. */
  end: 'close' | 'error';
}

export interface RunPlan {
  vnet: boolean;
  /** The socket's remoteAddress: the relay's address as the client sees it. */
  relay: string | undefined;
  previousIp: string | undefined;
  fault: DeviceFault;
  sessions: readonly SessionPlan[];
  /** stop() with the last connection still open (it must say GOODBYE), rather than after the relay closed it. */
  stopLive: boolean;
}

function errorMessage(err: unknown): string {
  if (err instanceof ProtocolError) return err.message;
  throw err;
}

/**
 * What the client must do, restated frame by frame from the protocol's rules. Values persist across
 * connections as the client's do (its lease, the TUN's address, the peer table).
 */
export class Model {
  connected = false;
  gso = false;
  ended = false;
  error: string[] | null = null;
  retryHint: number | null = null;
  /** This session ended with a REJECT or a refused lease only an operator can fix: the client waits on the long schedule. */
  mistake = false;
  /** What lastError must contain after the chunk; [] with `exactEmpty` after a WELCOME. */
  lastErrorHas: string[] | null = null;
  lastErrorEmpty = false;
  lease: Welcome | null = null;
  configuredAddress = '';
  offloads: number;
  readonly configured: object[] = [];
  readonly offloadCalls: number[] = [];
  leaseCalls = 0;
  readonly writes: Array<{ packet: Buffer; gso: boolean }> = [];
  private pending: Array<{ packet: Buffer; gso: boolean }> = [];
  pongs: Buffer[] = [];
  /** Device ID → IP of every peer announced up and not down since. */
  readonly announced = new Map<string, string>();
  inSnapshot = false;

  constructor(private readonly plan: RunPlan) {
    this.offloads = plan.vnet ? 0x6f : 0;
  }

  beginSession(): void {
    this.connected = false;
    this.ended = false;
    this.error = null;
    this.mistake = false;
    this.pongs = [];
  }

  fail(...names: string[]): void {
    this.error = names;
    this.lastErrorHas = names;
    this.lastErrorEmpty = false;
  }

  frame(type: number, payload: Buffer): void {
    if (this.error) return;
    if (!this.connected) {
      if (type === FrameType.Welcome) this.welcome(payload);
      // An endorsement the pinned relay did not need is ignored, whatever it holds.
      else if (type === FrameType.Endorse) return;
      else if (type === FrameType.Reject) {
        let reject;
        try { reject = parseReject(payload); } catch (err) { return this.fail('protocol error', errorMessage(err)); }
        this.retryHint = reject.retryAfterMs ?? null;
        this.mistake = ['auth', 'forbidden', 'version'].includes(reject.code);
        this.ended = true;
        this.lastErrorHas = ['rejected', reject.reason];
        this.lastErrorEmpty = false;
      } else this.fail('protocol error', frameName(type), 'before WELCOME');
      return;
    }
    switch (type) {
      case FrameType.Data:
        // Only packets from inside the overlay reach the TUN: a relay forwards devices' packets only.
        if (this.fromOverlay(payload, 0)) this.pending.push({ packet: payload, gso: false });
        return;
      case FrameType.DataGso:
        if (!this.gso) return this.fail('protocol error', 'DATA_GSO');
        // A virtio header that does not hold never reaches the TUN.
        if (checkOffloadPacket(payload, 0, payload.length) !== null) return;
        if (this.fromOverlay(payload, 10)) this.pending.push({ packet: payload, gso: true });
        return;
      case FrameType.Ping:
        // Once a GOODBYE has ended our side there is nothing to answer on.
        if (!this.ended) this.pongs.push(payload);
        return;
      case FrameType.Pong:
        return;
      case FrameType.Peers:
      case FrameType.PeersBin: {
        let update;
        try { update = type === FrameType.Peers ? parsePeerUpdate(payload) : parsePeersBinary(payload); } catch (err) { return this.fail('protocol error', errorMessage(err)); }
        if (update.reset) this.inSnapshot = true;
        if (!update.more) this.inSnapshot = false;
        for (const p of update.up) {
          if (p.deviceId === SELF_ID) continue;
          // Only peers on the leased subnet: the client ignores (and forgets) the others.
          if (this.lease && !onOverlay(p.ip, subnetOf(ipv4ToInt(this.lease.ip), this.lease.prefix))) this.announced.delete(p.deviceId);
          else this.announced.set(p.deviceId, p.ip);
        }
        for (const id of update.down) this.announced.delete(id);
        return;
      }
      case FrameType.Goodbye: {
        let goodbye;
        try { goodbye = parseGoodbye(payload); } catch (err) { return this.fail('protocol error', errorMessage(err)); }
        this.retryHint = goodbye.reconnectMs ?? null;
        this.ended = true;
        this.lastErrorHas = ['server', goodbye.reason];
        this.lastErrorEmpty = false;
        return;
      }
      default:
        this.fail('protocol error', frameName(type));
    }
  }

  /** A lease the client must not take: an operator's to fix, so the client waits on the long schedule. */
  private refuseLease(why: string): void {
    this.fail('refused the lease', why);
    this.mistake = true;
  }

  /** An IPv4 packet from the lease's subnet (no IPv6 in these WELCOMEs, so none of it). */
  private fromOverlay(buf: Buffer, at: number): boolean {
    if (!this.lease || buf.length - at < 20 || buf[at]! >> 4 !== 4) return false;
    return this.inSubnet(buf.readUInt32BE(at + 12));
  }

  private inSubnet(ip: number): boolean {
    const mask = this.lease!.prefix === 0 ? 0 : (0xffffffff << (32 - this.lease!.prefix)) >>> 0;
    return ((ip & mask) >>> 0) === ((ipv4ToInt(this.lease!.ip) & mask) >>> 0);
  }

  private welcome(payload: Buffer): void {
    let welcome: Welcome;
    try { welcome = parseWelcome(payload); } catch (err) { return this.refuseLease(errorMessage(err)); }
    // The relay's own address inside the offered subnet would route the tunnel into itself.
    const relay = (this.plan.relay ?? '').replace(/^::ffff:/, '');
    const size = 2 ** (32 - welcome.prefix);
    const quad = (a: string) => a.split('.').reduce((s, p) => s * 256 + Number(p), 0);
    if (/^\d+\.\d+\.\d+\.\d+$/.test(relay) && Math.floor(quad(relay) / size) === Math.floor(quad(welcome.ip) / size)) {
      return this.refuseLease("covers the relay's own address");
    }
    const address = `${welcome.ip}/${welcome.prefix}@${welcome.mtu}`;
    if (address !== this.configuredAddress) {
      if (this.plan.fault === 'configure') return this.fail(CONFIGURE_FAILURE);
      assert.equal(welcomeRuleBroken(JSON.parse(payload.toString('utf8')) as Record<string, unknown>), null, 'the oracle refuses a WELCOME parseWelcome accepted');
      this.configured.push({ address: welcome.ip, prefix: welcome.prefix, mtu: welcome.mtu, up: true });
      this.configuredAddress = address;
    }
    this.gso = this.plan.vnet && welcome.capabilities.includes(CAPABILITY_GSO);
    if (this.plan.vnet) {
      if (!this.gso && this.offloads !== 0) this.offloadCalls.push((this.offloads = 0));
      else if (this.gso && this.offloads === 0) this.offloadCalls.push((this.offloads = 0x6f));
    }
    if (this.lease?.ip !== welcome.ip) this.leaseCalls++;
    this.lease = welcome;
    // Granted no list (names, off): the peers of an earlier session are reported down, the table empty.
    if (welcome.discovery === 'names' || welcome.discovery === 'off') {
      this.announced.clear();
      this.inSnapshot = false;
    }
    this.connected = true;
    this.retryHint = null;
    this.lastErrorHas = [];
    this.lastErrorEmpty = true;
  }

  /** End of a read: the batch goes to the TUN. */
  flush(): void {
    if (this.pending.length === 0) return;
    if (this.plan.fault === 'write') this.fail('cannot write to', WRITE_FAILURE);
    else this.writes.push(...this.pending);
    this.pending = [];
  }
}
