import { hostname, networkInterfaces } from 'node:os';
import { createLogger, EXIT_CONFIG, loadConfigOrExit, machineDeviceId, parseDaemonArgs } from '@mnedc/common';
import { Tun } from '@mnedc/tun';
import { RelayClient } from './client';
import { DEFAULT_CONFIG_PATH, parseClientConfig } from './config';
import { loadClientState, saveClientState, statePath } from './state';

const PROGRAM = 'mnedcd-client';
const VERSION: string = (require('../../package.json') as { version: string }).version;

function fatal(message: string, status: number): never {
  process.stderr.write(`${PROGRAM}: ${message}\n`);
  process.exit(status);
}

/** Private addresses peers may use to find a shorter path; never the overlay's own. */
function underlayAddresses(exclude: string): string[] {
  const found: string[] = [];
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (name === exclude) continue;
    for (const a of addresses ?? []) {
      if (a.internal || a.address.startsWith('fe80:')) continue;
      found.push(a.address);
    }
  }
  return found.slice(0, 16);
}

function main(): void {
  const args = parseDaemonArgs(PROGRAM, process.argv.slice(2), DEFAULT_CONFIG_PATH, VERSION);
  const config = loadConfigOrExit(PROGRAM, args.configPath, parseClientConfig);
  const log = createLogger(PROGRAM, config.log.level);
  let deviceId = config.client.device_id;
  if (!deviceId) {
    try {
      deviceId = machineDeviceId();
    } catch (err) {
      fatal(`${args.configPath}: [client] device_id: not set, and ${(err as Error).message}`, EXIT_CONFIG);
    }
  }
  const stateFile = statePath(config.client.state_dir);
  const { state, problem } = loadClientState(stateFile);
  if (problem) log.warn({ path: stateFile }, `Ignoring unreadable state ${stateFile} (${problem}); the server may assign a new address`);

  let tun: Tun;
  try {
    tun = Tun.open(config.client.interface);
  } catch (err) {
    log.fatal({ err }, `Cannot create TUN interface ${config.client.interface}: ${(err as Error).message}`);
    process.exit(1);
  }
  const client = new RelayClient({
    config,
    log,
    deviceId,
    hostname: hostname(),
    underlay: () => underlayAddresses(tun.name),
    device: tun,
    ...(state.lastIp ? { previousIp: state.lastIp } : {}),
    onLease: (welcome) => {
      try {
        saveClientState(stateFile, { lastIp: welcome.ip, server: client.server });
      } catch (err) {
        log.error({ err, path: stateFile }, `Cannot save state to ${stateFile}: ${(err as Error).message}`);
      }
    },
  });
  log.info({ deviceId, server: client.server, interface: tun.name }, `Device ${deviceId} joining ${client.server} on ${tun.name}`);
  client.start();
  const stop = (signal: string) => {
    log.info({ signal }, `Received ${signal}: leaving the overlay`);
    void client.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main();
