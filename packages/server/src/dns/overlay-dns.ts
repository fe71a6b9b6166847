import type { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from '@mnedc/common';
import { intToIpv4, ipv4ToInt } from '@mnedc/protocol';
import type { ServerConfig } from '../config';
import type { PeerEvent } from '../devices';
import { DnsResponder } from './responder';

export const DNS_PORT = 53;

export interface OverlayDnsOptions {
  config: ServerConfig;
  log: Logger;
  serverIp: number;
  serverDeviceId: string;
  /** The relay's 'peer' and 'remote-peer' events: a device joining is resolvable from that moment, leaving takes its name. */
  events: EventEmitter;
  port?: number;
  /** The network's IPv6 /64: names get AAAA answers too. */
  prefix6?: Buffer | null;
}

/**
 * Starts the responder when the relay has its own TUN (the overlay address must be local to bind it) and
 * [dns] enabled = yes. Names are those of connected devices only, the relay itself included: a name then
 * means "on the overlay now", as in the hosts file; an offline device's name is NXDOMAIN even though it
 * keeps its lease. A responder that cannot bind is logged and left out; relaying goes on.
 */
export async function startOverlayDns(options: OverlayDnsOptions): Promise<DnsResponder | null> {
  const { config, log, serverIp } = options;
  if (config.dns.enabled !== 'yes' || !config.server.interface) return null;
  const host = intToIpv4(serverIp);
  const responder = new DnsResponder({
    host, port: options.port ?? DNS_PORT, domain: config.dns.domain, subnet: config.server.subnet, log, ...(options.prefix6 ? { prefix6: options.prefix6 } : {}),
  });
  try {
    await responder.start();
  } catch (err) {
    responder.close();
    const e = err as NodeJS.ErrnoException;
    log.error({ err: e }, `DNS on the overlay is off: cannot listen on ${host}:${options.port ?? DNS_PORT} (${e.code ?? e.message})` +
      (e.code === 'EACCES' ? '; port 53 needs CAP_NET_BIND_SERVICE' : ''));
    return null;
  }
  responder.names.up(options.serverDeviceId, serverIp, hostname());
  // Devices on the cluster's other relays have names here too: every relay gives the same answers.
  const follow = (event: PeerEvent) => {
    if (event.event === 'up') responder.names.up(event.deviceId, ipv4ToInt(event.ip), event.hostname);
    else responder.names.down(event.deviceId);
  };
  options.events.on('peer', follow);
  options.events.on('remote-peer', follow);
  log.info({ dns: `${host}:${responder.port}`, domain: responder.domain }, `Answering DNS for ${responder.domain} on ${host}:${responder.port} (UDP and TCP)`);
  return responder;
}
