/**
 * Where a cluster keeps its shared state in etcd, all under `/mnedc/<network>/`:
 *
 *   leases/<device-id>     the device's lease: JSON {ip, hostname, underlay, createdAt, lastSeen}
 *   addresses/<ip>         the device ID holding that address: the guard that makes an address unique
 *   bindings/<device-id>   the fingerprint of the key bound to the device ID
 *   secrets/join           the network's join secret (base64url)
 *   relays/<relay-id>      a relay that is up: JSON {id, advertise, since}       } under that relay's one
 *   attach/<device-id>     the relay the device is connected to                  } etcd lease
 *
 * A lease and its address guard are created together, only if neither exists (a transaction, as flannel
 * allocates subnets), so two relays allocating at the same instant never hand out one address twice. None
 * of the first four has an etcd lease: a relay crash must never free an address or a device ID. Only
 * "relay R is up" and "device D is on relay R" go with R's lease.
 */
import { isNetworkName, isValidDeviceId } from '@mnedc/protocol';

export { isNetworkName };

export class ClusterKeys {
  readonly root: string;

  constructor(readonly network: string) {
    if (!isNetworkName(network)) throw new Error(`network name ${JSON.stringify(network)}: 1-63 of a-z 0-9 -, starting with a letter or digit`);
    this.root = `/mnedc/${network}/`;
  }

  get leases(): string {
    return `${this.root}leases/`;
  }

  get bindings(): string {
    return `${this.root}bindings/`;
  }

  get secrets(): string {
    return `${this.root}secrets/`;
  }

  get joinSecret(): string {
    return `${this.secrets}join`;
  }

  get relays(): string {
    return `${this.root}relays/`;
  }

  get attachments(): string {
    return `${this.root}attach/`;
  }

  relay(relayId: string): string {
    return `${this.relays}${relayId}`;
  }

  attachment(deviceId: string): string {
    return `${this.attachments}${deviceId}`;
  }

  lease(deviceId: string): string {
    return `${this.leases}${deviceId}`;
  }

  address(ip: string): string {
    return `${this.root}addresses/${ip}`;
  }

  binding(deviceId: string): string {
    return `${this.bindings}${deviceId}`;
  }

  /** The device ID of a key under `prefix`, or null for a key that is none of ours (never acted on). */
  deviceIdOf(prefix: string, key: string): string | null {
    if (!key.startsWith(prefix)) return null;
    const id = key.slice(prefix.length);
    return isValidDeviceId(id) ? id : null;
  }
}
