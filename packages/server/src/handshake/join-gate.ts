import { PROTOCOL_VERSION, type AuthFailure, type Hello, type Reject } from '@mnedc/protocol';
import type { Refusal } from './admission';
import { KeyedRate, type Rate } from './rate';

/**
 * Whether an authenticated-or-not HELLO may become a session: who the device is, then what even a genuine
 * device may not do. Pure (the clock is injected); the relay acts on the verdicts.
 */

/** Connections turned away, by reason: each also logs a rate-limited warning. */
export interface RefusalCounters extends Record<Refusal, number> {
  /** Unfinished handshakes closed to make room for newer ones (admission.ts says which go first). */
  evicted: number;
  handshakeTimeout: number;
  tlsFailed: number;
  /** A HELLO of another protocol version, or claiming the relay's own device ID. */
  badHello: number;
  authFailed: number;
  boundToOtherKey: number;
  /** A device joining again sooner than [limits] device_joins_per_minute allows. */
  deviceJoinRate: number;
  maxClients: number;
  /** A new device beyond [limits] max_devices bound devices. */
  maxDevices: number;
  /** A new device beyond the [limits] new_devices_per_minute rate. */
  newDeviceRate: number;
  poolFull: number;
  /** A device joining while the cluster's shared state (etcd) could not be read. */
  clusterUnavailable: number;
}

export function newRefusalCounters(): RefusalCounters {
  return {
    rateLimited: 0, tooManyHandshakes: 0, tooManyFromSource: 0, evicted: 0, handshakeTimeout: 0, tlsFailed: 0, badHello: 0,
    authFailed: 0, boundToOtherKey: 0, deviceJoinRate: 0, maxClients: 0, maxDevices: 0, newDeviceRate: 0, poolFull: 0, clusterUnavailable: 0,
  };
}

/**
 * A retry hint spread over [ms, 1.5·ms]: devices turned away (or told to come back) in the same moment do
 * not all return in the same moment. Never sooner than asked: the limit that refused them holds until then.
 */
export function spreadRetry(ms: number, random: () => number = Math.random): number {
  return Math.min(3_600_000, Math.round(ms + (random() * ms) / 2));
}

/** A REJECT with its retry hint, if any, spread by spreadRetry. */
export function spreadReject(reject: Reject, random: () => number = Math.random): Reject {
  return reject.retryAfterMs === undefined ? reject : { ...reject, retryAfterMs: spreadRetry(reject.retryAfterMs, random) };
}

/** A HELLO turned away: the counter, the operator's log line, and what the device is told. */
export interface Turnaway {
  reason: keyof RefusalCounters;
  message: string;
  reject: Reject;
}

export type AuthVerdict = { ok: true; device: { keyFingerprint: string } } | { ok: false; failure: AuthFailure };

/** Who the device is (the fingerprint of its proven key), settled before anything it could take. */
export function identify(hello: Hello, auth: AuthVerdict, bound: string | undefined, serverDeviceId: string, remote: string): string | Turnaway {
  const id = hello.deviceId;
  if (hello.version !== PROTOCOL_VERSION) {
    return {
      reason: 'badHello',
      message: `Rejected ${id} from ${remote}: protocol version ${hello.version}, this server speaks ${PROTOCOL_VERSION}`,
      reject: { code: 'version', reason: `protocol version ${hello.version} is not supported; this server speaks version ${PROTOCOL_VERSION}` },
    };
  }
  if (id === serverDeviceId) {
    return { reason: 'badHello', message: `Rejected ${id} from ${remote}: the relay's own device ID`, reject: { code: 'forbidden', reason: `device ID ${id} is the server's own` } };
  }
  if (!auth.ok) {
    const reason = auth.failure === 'device'
      ? 'the device key proof is invalid'
      : auth.failure === 'missing'
        ? 'this server requires a join string (the HELLO carried no credentials)'
        : 'the join secret is wrong or was rotated; get the current join string from the server (mnedcd-server --print-join)';
    return { reason: 'authFailed', message: `Rejected ${id} from ${remote}: ${reason}`, reject: { code: 'auth', reason } };
  }
  const key = auth.device.keyFingerprint;
  if (bound !== undefined && bound !== key) {
    return {
      reason: 'boundToOtherKey',
      message: `Rejected ${id} from ${remote}: its key ${key} is not the bound ${bound}`,
      reject: { code: 'auth', reason: `device ID ${id} belongs to another device key; if this device was reinstalled, run "mnedcctl forget ${id}" on the server` },
    };
  }
  return key;
}

export interface JoinLimitSettings {
  /** 0: as many as the pool has addresses. */
  maxClients: number;
  /** Bound devices at most; 0: DEVICES_PER_ADDRESS per address of the pool. */
  maxDevices: number;
  deviceJoins: Rate;
  newDevices: Rate;
}

/** What the relay knows of the device and itself when it decides. */
export interface JoinContext {
  /** The device is bound to the key it proved (not new). */
  known: boolean;
  /** It has a session now (this join is a takeover). */
  connected: boolean;
  connectedCount: number;
  boundCount: number;
  poolCapacity: number;
}

/**
 * Bound devices allowed per address when [limits] max_devices is 0: bindings outlive leases (an address
 * is reclaimed from a device gone past its lease lifetime, its binding stays), but not without bound.
 */
export const DEVICES_PER_ADDRESS = 4;

/**
 * What even an authenticated device may not do: rejoin in a loop (each join costs a lease lookup, log lines
 * and a peer snapshot, the one way to ask for the peer list), crowd out others beyond max_clients, or,
 * unbound yet, mint new device IDs faster or further than the limits allow.
 */
export class JoinLimits {
  /** Joins per device ID, and new device IDs overall (one key: ''). */
  private readonly deviceJoins: KeyedRate;
  private readonly newDevices: KeyedRate;

  constructor(private settings: JoinLimitSettings, now: () => number = Date.now) {
    this.deviceJoins = new KeyedRate(settings.deviceJoins, now);
    this.newDevices = new KeyedRate(settings.newDevices, now);
  }

  set limits(settings: JoinLimitSettings) {
    this.settings = settings;
    this.deviceJoins.rate = settings.deviceJoins;
    this.newDevices.rate = settings.newDevices;
  }

  check(id: string, context: JoinContext): Turnaway | null {
    const rejoin = this.deviceJoins.take(id);
    if (!rejoin.ok) {
      return {
        reason: 'deviceJoinRate',
        message: `Rejected ${id}: it joins too often ([limits] device_joins_per_minute)`,
        reject: { code: 'busy', reason: `device ${id} joined too often; wait before joining again`, retryAfterMs: rejoin.retryAfterMs },
      };
    }
    const full = this.capacity(id, context);
    if (full || context.known) return full;
    const { maxDevices } = this.settings;
    const cap = maxDevices > 0 ? maxDevices : DEVICES_PER_ADDRESS * context.poolCapacity;
    if (context.boundCount >= cap) {
      return {
        reason: 'maxDevices',
        message: `Rejected new device ${id}: ${context.boundCount} devices are bound, the limit is ${cap} ([limits] max_devices); "mnedcctl forget" removes unused ones`,
        reject: { code: 'busy', reason: `the server has as many devices as it takes (${cap}); an operator must forget unused ones first`, retryAfterMs: 600_000 },
      };
    }
    const fresh = this.newDevices.take('');
    if (!fresh.ok) {
      return {
        reason: 'newDeviceRate',
        message: `Rejected new device ${id}: new devices arrive faster than [limits] new_devices_per_minute`,
        reject: { code: 'busy', reason: 'too many new devices are joining; retrying later', retryAfterMs: fresh.retryAfterMs },
      };
    }
    return null;
  }

  /** max_clients, also checked again when a join completes after its binding was written. */
  capacity(id: string, context: Pick<JoinContext, 'connected' | 'connectedCount'>): Turnaway | null {
    const { maxClients } = this.settings;
    if (context.connected || maxClients <= 0 || context.connectedCount < maxClients) return null;
    return {
      reason: 'maxClients',
      message: `Rejected ${id}: ${maxClients} devices are connected ([limits] max_clients)`,
      reject: { code: 'busy', reason: `the server accepts at most ${maxClients} devices at once`, retryAfterMs: 30_000 },
    };
  }

  /** Forgets devices whose buckets are full again, so the maps stay bounded. */
  sweep(): void {
    this.deviceJoins.sweep();
    this.newDevices.sweep();
  }
}
