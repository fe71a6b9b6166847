import { ConfigError, key, LOG_LEVELS, parseConfig, parsers, type ConfigOf } from '@mnedc/common';
import { parseSubnet, type Subnet } from '@mnedc/protocol';

export const DEFAULT_CONFIG_PATH = '/etc/mnedc/server.ini';

function overlaySubnet(text: string): Subnet {
  const subnet = parseSubnet(text);
  if (subnet.prefix < 16 || subnet.prefix > 30) {
    throw new Error(`/${subnet.prefix} is outside /16../30 (a /16 holds 65533 devices, a /30 one)`);
  }
  return subnet;
}

export const serverSchema = {
  server: {
    listen: key(parsers.listenAddress, '0.0.0.0:3334'),
    subnet: key(overlaySubnet, '10.0.0.0/24'),
    interface: key(parsers.interfaceName, 'mnedc0'),
    mtu: key(parsers.integer(576, 65535), '1400'),
    state_dir: key(parsers.absolutePath, '/var/lib/mnedc'),
    keepalive_ms: key(parsers.integer(100, 60_000), '2000'),
    dead_after_ms: key(parsers.integer(300, 600_000), '6000'),
    send_queue_kib: key(parsers.integer(16, 65_536), '512'),
  },
  control: {
    /** JSON-RPC for mnedcctl; empty disables it. */
    socket: key(parsers.optionalPath, '/run/mnedc/server.sock'),
  },
  log: {
    level: key(parsers.oneOf(...LOG_LEVELS), 'info'),
  },
};

/** Keys a SIGHUP applies to the running server; a change to any other key needs a restart. */
export const SERVER_LIVE_KEYS = ['[log] level', '[server] send_queue_kib', '[server] keepalive_ms', '[server] dead_after_ms'];

export type ServerConfig = ConfigOf<typeof serverSchema>;

export function parseServerConfig(text: string, file: string): ServerConfig {
  const config = parseConfig(serverSchema, text, file);
  const { keepalive_ms: keepalive, dead_after_ms: deadAfter } = config.server;
  if (deadAfter < 2 * keepalive) {
    throw new ConfigError(file, 'invalid',
      `${deadAfter} must be at least twice keepalive_ms (${keepalive}), or one lost ping kills a session`, 'server', 'dead_after_ms');
  }
  return config;
}
