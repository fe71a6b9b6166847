import { ConfigError, key, LOG_LEVELS, parseConfig, parsers, type ConfigOf } from '@mnedc/common';
import { isValidDeviceId } from '@mnedc/protocol';

export const DEFAULT_CONFIG_PATH = '/etc/mnedc/client.ini';

function deviceId(text: string): string {
  if (text !== '' && !isValidDeviceId(text)) {
    throw new Error(`${JSON.stringify(text)} is not a device ID (1..128 of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit)`);
  }
  return text;
}

export const clientSchema = {
  client: {
    /** Required: there is no sensible default for where the relay is. */
    server: key(parsers.hostPort),
    device_id: key(deviceId, ''),
    interface: key(parsers.interfaceName, 'mnedc0'),
    state_dir: key(parsers.absolutePath, '/var/lib/mnedc'),
    send_queue_kib: key(parsers.integer(16, 65_536), '1024'),
  },
  log: {
    level: key(parsers.oneOf(...LOG_LEVELS), 'info'),
  },
};

export type ClientConfig = ConfigOf<typeof clientSchema>;

export function parseClientConfig(text: string, file: string): ClientConfig {
  const config = parseConfig(clientSchema, text, file);
  if (config.client.interface === '') {
    throw new ConfigError(file, 'invalid', 'must name the TUN interface; the client has no use without one', 'client', 'interface');
  }
  return config;
}
