import { deviceIdName, hostnameLabel, Rank } from '../names';

interface Holder {
  ip: number;
  /** The names this device claims, with their rank. */
  claims: Map<string, Rank>;
}

/**
 * Which name is whose, kept up to date one device at a time (O(names of that device) per join or
 * leave, so a join storm of N devices costs O(N), not O(N²)). The rules are the hosts file's
 * (client hosts.ts assignNames): a name resolves to the one device claiming it at the strongest rank
 * claimed; when two devices tie there, nobody gets it. A device ID in DNS form is its device's alone,
 * a sanitised ID (`Device_B` → `device-b`) only when no canonical ID and no other ID sanitise to it,
 * a hostname's first label only when no device ID gives that name and no other device has that
 * hostname. Names are relative to the domain, lowercase.
 */
export class DnsNames {
  private readonly devices = new Map<string, Holder>();
  /** name → rank → device IDs claiming it at that rank. */
  private readonly claimants = new Map<string, Array<Set<string>>>();
  private readonly byIp = new Map<number, string>();

  get size(): number {
    return this.devices.size;
  }

  /** A device is on the overlay at `ip` (again: its earlier claims are replaced). */
  up(deviceId: string, ip: number, hostname: string): void {
    this.down(deviceId);
    const claims = new Map<string, Rank>();
    const id = deviceIdName(deviceId);
    if (id) claims.set(id.name, id.rank);
    const host = hostnameLabel(hostname);
    if (host && !claims.has(host)) claims.set(host, Rank.Hostname);
    for (const [name, rank] of claims) {
      let ranks = this.claimants.get(name);
      if (!ranks) this.claimants.set(name, (ranks = [new Set(), new Set(), new Set()]));
      ranks[rank]!.add(deviceId);
    }
    this.devices.set(deviceId, { ip, claims });
    this.byIp.set(ip, deviceId);
  }

  down(deviceId: string): void {
    const holder = this.devices.get(deviceId);
    if (!holder) return;
    this.devices.delete(deviceId);
    if (this.byIp.get(holder.ip) === deviceId) this.byIp.delete(holder.ip);
    for (const [name, rank] of holder.claims) {
      const ranks = this.claimants.get(name)!;
      ranks[rank]!.delete(deviceId);
      if (ranks.every((set) => set.size === 0)) this.claimants.delete(name);
    }
  }

  /** The device a name is given to, if any. */
  owner(name: string): string | undefined {
    const ranks = this.claimants.get(name);
    if (!ranks) return undefined;
    for (const set of ranks) {
      if (set.size === 0) continue;
      // The strongest rank anyone claims decides; a tie there blocks the weaker ranks too.
      return set.size === 1 ? set.values().next().value : undefined;
    }
    return undefined;
  }

  /** The overlay address of the device a name is given to. */
  resolve(name: string): number | undefined {
    const owner = this.owner(name);
    return owner === undefined ? undefined : this.devices.get(owner)!.ip;
  }

  /** The name reverse lookups give for an address: its device's strongest name that is its own. */
  nameOf(ip: number): string | undefined {
    const deviceId = this.byIp.get(ip);
    if (deviceId === undefined) return undefined;
    const holder = this.devices.get(deviceId)!;
    let best: { name: string; rank: Rank } | undefined;
    for (const [name, rank] of holder.claims) {
      if (this.owner(name) === deviceId && (!best || rank < best.rank)) best = { name, rank };
    }
    return best?.name;
  }
}
