import type { Lab, LabNodeName } from './lab';
import { Daemon } from './overlay';

/**
 * A datagram socket standing in for systemd's NOTIFY_SOCKET. Node has no AF_UNIX datagram sockets, so a
 * few lines of Python receive them and print each assignment ("READY=1", "STATUS=…") as its own JSON
 * log line: `waitFor(/^READY=1$/)` then reads like the protocol.
 */
const RECEIVER = `
import json, os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
print(json.dumps({"msg": "listening"}), flush=True)
while True:
    data = s.recv(65536).decode("utf-8", "replace")
    for line in data.split("\\n"):
        if line:
            print(json.dumps({"msg": line, "t": time.monotonic()}), flush=True)
`;

export async function notifySocket(lab: Lab, node: LabNodeName, path: string): Promise<Daemon> {
  const receiver = new Daemon('notify socket', lab.spawn(node, ['python3', '-c', RECEIVER, path], { pipe: true }));
  await receiver.waitFor(/^listening$/);
  return receiver;
}
