import { createLogger, loadConfigOrExit, machineDeviceId, parseDaemonArgs, EXIT_CONFIG } from '@mnedc/common';
import { Tun } from '@mnedc/tun';
import { DEFAULT_CONFIG_PATH, parseServerConfig } from './config';
import { LeaseStateError } from './lease-store';
import { RelayServer } from './server';

const PROGRAM = 'mnedcd-server';
const VERSION: string = (require('../../package.json') as { version: string }).version;

async function main(): Promise<void> {
  const args = parseDaemonArgs(PROGRAM, process.argv.slice(2), DEFAULT_CONFIG_PATH, VERSION);
  const config = loadConfigOrExit(PROGRAM, args.configPath, parseServerConfig);
  const log = createLogger(PROGRAM, config.log.level);
  let serverDeviceId: string;
  try {
    serverDeviceId = `server-${machineDeviceId().slice(0, 12)}`;
  } catch {
    serverDeviceId = 'server';
  }
  let server: RelayServer;
  try {
    server = new RelayServer({
      config,
      log,
      serverDeviceId,
      openDevice: (name, address, prefix, mtu) => {
        const tun = Tun.open(name);
        tun.configure({ address, prefix, mtu, up: true });
        return tun;
      },
    });
  } catch (err) {
    if (!(err instanceof LeaseStateError)) throw err;
    log.fatal(err.message);
    process.exit(EXIT_CONFIG);
  }
  try {
    await server.start();
  } catch (err) {
    log.fatal({ err }, `Cannot start: ${(err as Error).message}`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, `Received ${signal}: telling devices and saving leases`);
    server.stop().then(() => process.exit(0), (err: Error) => {
      log.error({ err }, `Error while stopping: ${err.message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
