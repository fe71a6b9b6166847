/**
 * Hostile devices for the lab, run inside the relay's namespace: `node hostile-device.js PORT JOIN JSON`
 * joins the relay on 127.0.0.1:PORT once per {deviceId, hostname} in JSON, with real HELLO proofs (anyone
 * holding the join string can), prints a JSON line {"msg":"joined <deviceId>", ip} per device, and stays
 * connected until it gets SIGTERM.
 */
import { WireClient } from '@mnedc/lab';

async function main(): Promise<void> {
  const [port, join, devices] = process.argv.slice(2);
  const clients: WireClient[] = [];
  for (const { deviceId, hostname } of JSON.parse(devices!) as Array<{ deviceId: string; hostname: string }>) {
    const client = await WireClient.join(Number(port), join!, deviceId, { hostname });
    clients.push(client);
    if (!client.welcome) throw new Error(`${deviceId} was not admitted: ${JSON.stringify(client.reject)}`);
    process.stdout.write(`${JSON.stringify({ msg: `joined ${deviceId}`, deviceId, ip: client.welcome.ip })}\n`);
  }
  process.on('SIGTERM', () => {
    for (const client of clients) client.close();
    process.exit(0);
  });
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
