/**
 * OpenVPN 2.6 in the lab, as the established overlay the bench measures mnedc against: server in `srv`,
 * clients in the two deepest devices, TCP, client-to-client, so every packet between the clients is
 * relayed by the server process exactly as mnedc's are.
 *
 * The PKI is made for one run with openssl (no easy-rsa) in a private temporary directory that stop()
 * removes, and so does process exit; nothing of it outlives the bench.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCommand, UNDERLAY, type Lab } from './lab';
import { Daemon, type Device } from './overlay';

/** Apart from mnedc's 10.0.0.0/24 so both could even run side by side. */
export const OPENVPN_NETWORK = '10.8.0.0';
export const OPENVPN_NETMASK = '255.255.255.0';
export const OPENVPN_PORT = 1194;
export const OPENVPN_INTERFACE = 'ovpn0';
/** Same as mnedc's default overlay MTU, so both tunnels carry the same packet sizes. */
export const OPENVPN_MTU = 1400;

const READY = /Initialization Sequence Completed/;

/**
 * The settings shared by server and clients, each chosen to match what mnedc does so the comparison
 * measures the implementations, not their options.
 */
const COMMON = [
  `dev ${OPENVPN_INTERFACE}`,
  'dev-type tun',
  `tun-mtu ${OPENVPN_MTU}`,
  // mnedc is TLS 1.3 only and Node's first TLS 1.3 suite is TLS_AES_256_GCM_SHA384: the data channel
  // gets the same AEAD, and the control channel the same protocol version.
  'tls-version-min 1.3',
  'data-ciphers AES-256-GCM',
  // Debian's openvpn has no DCO kernel module; saying so keeps the run the same on a host that has one
  // (DCO would move the data path into the kernel, which is not what "OpenVPN in TCP mode" means here).
  'disable-dco',
  'verb 3',
];

export interface OpenVpnConfigs {
  server: string;
  clients: Record<string, string>;
}

/** Writes a throwaway CA, a server certificate and one client certificate per device into `dir`. */
export async function makePki(dir: string, clients: readonly string[]): Promise<void> {
  // Our own extension sections, so the result does not depend on the system's openssl.cnf.
  const extensions = path.join(dir, 'extensions.cnf');
  writeFileSync(extensions, [
    '[ca]', 'basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash',
    '[server]', 'basicConstraints = CA:FALSE', 'keyUsage = critical,digitalSignature,keyAgreement', 'extendedKeyUsage = serverAuth',
    'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid',
    '[client]', 'basicConstraints = CA:FALSE', 'keyUsage = critical,digitalSignature,keyAgreement', 'extendedKeyUsage = clientAuth',
    'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid', '',
  ].join('\n'));
  const file = (name: string) => path.join(dir, name);
  // P-256 keys: generated in milliseconds, and the key type does not touch the data channel.
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-noenc'];
  await openssl(['req', '-x509', ...newKey, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '1',
    '-subj', '/CN=mnedc-bench-ca', '-config', extensions, '-extensions', 'ca']);
  const names = ['server', ...clients];
  for (const name of names) {
    await openssl(['req', '-new', ...newKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${name}`,
      '-config', '/dev/null']);
    await openssl(['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.crt'), '-CAkey', file('ca.key'),
      '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-extfile', extensions,
      '-extensions', name === 'server' ? 'server' : 'client', '-out', file(`${name}.crt`)]);
  }
}

async function openssl(argv: string[]): Promise<void> {
  const result = await runCommand('openssl', argv, 30_000);
  if (result.code !== 0) throw new Error(`openssl ${argv[0]} failed (${result.code}): ${result.stderr.trim()}`);
}

/** Configuration texts for a server at `serverIp` and the named clients, with the PKI files in `dir`. */
export function openVpnConfigs(dir: string, serverIp: string, clients: readonly string[]): OpenVpnConfigs {
  const pki = (name: string) => [`ca ${path.join(dir, 'ca.crt')}`, `cert ${path.join(dir, `${name}.crt`)}`, `key ${path.join(dir, `${name}.key`)}`];
  const server = [
    'proto tcp-server',
    `local ${serverIp}`,
    `port ${OPENVPN_PORT}`,
    'topology subnet',
    `server ${OPENVPN_NETWORK} ${OPENVPN_NETMASK}`,
    // The point of the comparison: the server process relays between its clients (as mnedc's server does)
    // instead of handing packets to its kernel for routing.
    'client-to-client',
    ...COMMON,
    ...pki('server'),
    'dh none',
    'remote-cert-tls client',
    // mnedc sets TCP_NODELAY on both ends of its tunnel; this sets it on the server and pushes it.
    'tcp-nodelay',
    // mnedc's keepalive_ms/dead_after_ms defaults; pushed to the clients.
    'keepalive 5 15',
  ];
  const client = (name: string) => [
    'client',
    'proto tcp-client',
    `remote ${serverIp} ${OPENVPN_PORT}`,
    'nobind',
    ...COMMON,
    ...pki(name),
    'remote-cert-tls server',
  ];
  return {
    server: `${server.join('\n')}\n`,
    clients: Object.fromEntries(clients.map((name) => [name, `${client(name).join('\n')}\n`])),
  };
}

/** openvpn lives in /usr/sbin, which a non-login root shell or `npm run` may not have on PATH. */
export function openVpnBinary(): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'].filter((d) => d !== '');
  for (const dir of dirs) {
    const candidate = path.join(dir, 'openvpn');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('openvpn is not installed: run scripts/setup.sh as root (it installs Debian\'s openvpn package)');
}

export class OpenVpn {
  readonly dir: string;
  readonly configs: OpenVpnConfigs;
  server: Daemon | undefined;
  readonly clients = new Map<Device, Daemon>();
  private readonly removeDirAtExit = (): void => rmSync(this.dir, { recursive: true, force: true });

  private constructor(readonly lab: Lab, readonly devices: readonly Device[]) {
    this.dir = mkdtempSync(path.join(tmpdir(), `mnedc-openvpn-${lab.prefix}`));
    process.on('exit', this.removeDirAtExit);
    this.configs = openVpnConfigs(this.dir, UNDERLAY.srv, devices);
  }

  /**
   * Server in `srv`, then the clients; resolves once every one of them logged that its tunnel is up. On
   * failure whatever was started is stopped before the error is rethrown.
   */
  static async start(lab: Lab, devices: readonly Device[] = ['c', 'd']): Promise<OpenVpn> {
    const binary = openVpnBinary();
    const vpn = new OpenVpn(lab, devices);
    try {
      await makePki(vpn.dir, devices);
      const serverConfig = path.join(vpn.dir, 'server.conf');
      writeFileSync(serverConfig, vpn.configs.server);
      vpn.server = new Daemon('openvpn server', lab.spawn('srv', [binary, '--config', serverConfig], { pipe: true }));
      await vpn.server.waitForRaw(READY, 30_000);
      await Promise.all(devices.map(async (device) => {
        const config = path.join(vpn.dir, `${device}.conf`);
        writeFileSync(config, vpn.configs.clients[device]!);
        const daemon = new Daemon(`openvpn client ${device}`, lab.spawn(device, [binary, '--config', config], { pipe: true }));
        vpn.clients.set(device, daemon);
        await daemon.waitForRaw(READY, 30_000);
      }));
      return vpn;
    } catch (err) {
      await vpn.stop();
      throw err;
    }
  }

  /** The version line the server printed, e.g. "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] …". */
  version(): string {
    return this.server?.raw.map((line) => /(OpenVPN \d+\.\d+\S* .*)$/.exec(line)?.[1]).find((v) => v !== undefined) ?? 'unknown';
  }

  /** The address the server pool gave a device (or the server's own), as its interface has it. */
  async ip(node: Device | 'srv'): Promise<string> {
    const result = await this.lab.exec(node, ['ip', '-j', '-4', 'addr', 'show', 'dev', OPENVPN_INTERFACE]);
    const parsed = JSON.parse(result.stdout || '[]') as Array<{ addr_info: Array<{ local: string }> }>;
    const ip = parsed[0]?.addr_info[0]?.local;
    if (!ip) throw new Error(`${node} has no address on ${OPENVPN_INTERFACE}: ${result.stdout}${result.stderr}`);
    return ip;
  }

  /**
   * SIGTERM to every process, a bounded wait, SIGKILL for any still running; then the PKI is removed.
   * Idempotent, never throws: it runs in `finally` blocks.
   */
  async stop(): Promise<void> {
    await stopDaemons([...this.clients.values(), ...(this.server ? [this.server] : [])]);
    this.removeDirAtExit();
    process.removeListener('exit', this.removeDirAtExit);
  }
}

/** SIGTERM, up to 10 s for an orderly exit, then SIGKILL and a last bounded wait. Never throws. */
export async function stopDaemons(daemons: readonly Daemon[]): Promise<void> {
  await Promise.all(daemons.map(async (daemon) => {
    if (daemon.exited) return;
    daemon.signal('SIGTERM');
    try {
      await daemon.waitExit(10_000);
    } catch {
      daemon.signal('SIGKILL');
      await daemon.waitExit(5_000).catch(() => undefined);
    }
  }));
}
