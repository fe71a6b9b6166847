import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * A stable device ID that does not reveal /etc/machine-id (which must stay private, see machine-id(5)):
 * an HMAC keyed by the machine ID over an application constant, as sd_id128_get_machine_app_specific does.
 */
const APP_ID = 'mnedc device id v1';

export function deviceIdFromMachineId(machineId: string): string {
  const id = machineId.trim();
  if (!/^[0-9a-f]{32}$/i.test(id)) throw new Error(`machine ID ${JSON.stringify(id.slice(0, 40))} is not 32 hex digits`);
  return createHmac('sha256', id.toLowerCase()).update(APP_ID).digest('hex').slice(0, 32);
}

export function machineDeviceId(path = '/etc/machine-id'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot derive a device ID from ${path} (${(err as Error).message}); set device_id`);
  }
  return deviceIdFromMachineId(text);
}
