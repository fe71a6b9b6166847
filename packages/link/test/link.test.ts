import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { encodeFrame, FrameDecoder, FrameType, HEADER_BYTES, ProtocolError } from '@mnedc/protocol';
import { Link, pingFrame, recordLength, RTT_ROUNDS, tunFraming, WRITE_OVERHEAD_BYTES, type WriteBatch } from '../src';

/** A connected pair of loopback sockets: the link's and the peer's. */
async function socketPair(): Promise<{ ours: Socket; theirs: Socket; close: () => void }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  const ours = connect(port, '127.0.0.1');
  const [theirs] = (await accepted) as [Socket];
  await once(ours, 'connect');
  return { ours, theirs, close: () => { ours.destroy(); theirs.destroy(); server.close(); } };
}

/** Frames the peer received, by type. */
function framesOf(socket: Socket): Buffer[] {
  const frames: Buffer[] = [];
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => decoder.push(chunk, (frame) => frames.push(Buffer.from(frame))));
  return frames;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('Link', () => {
  let pair: Awaited<ReturnType<typeof socketPair>>;
  before(async () => { pair = await socketPair(); });
  after(() => pair.close());

  it('hands PING to its owner before the handshake is over, and answers it itself after', async () => {
    const owner: number[] = [];
    const link = new Link(pair.ours, { budgetBytes: 1 << 20 }, (frame) => owner.push(frame[0]!));
    const received = framesOf(pair.theirs);
    link.receive(pingFrame(1234));
    assert.deepEqual(owner, [FrameType.Ping], 'not open: the owner decides (an error before WELCOME)');
    link.open = true;
    link.receive(Buffer.concat([pingFrame(5678), encodeFrame(FrameType.Data, Buffer.alloc(20))]));
    assert.deepEqual(owner, [FrameType.Ping, FrameType.Data], 'only DATA reaches the owner once open');
    await until(() => received.length === 1, 'the PONG');
    assert.equal(received[0]![0], FrameType.Pong);
    assert.equal(received[0]!.readDoubleBE(HEADER_BYTES), 5678, 'the PONG carries the PING\'s bytes');
  });

  it('times a PONG against its PING', () => {
    const link = new Link(pair.ours, { budgetBytes: 1 << 20 }, () => assert.fail('a PONG is the link\'s'));
    link.open = true;
    const pong = pingFrame(performance.now() - 40);
    pong[0] = FrameType.Pong;
    link.receive(pong);
    assert.ok(link.rttMs >= 40 && link.rttMs < 1000, `rtt ${link.rttMs}`);
  });

  it('throws ProtocolError on a malformed stream', () => {
    const link = new Link(pair.ours, { budgetBytes: 1 << 20 }, () => undefined);
    assert.throws(() => link.receive(Buffer.from([0x7f, 0, 0, 0])), ProtocolError);
  });

  it('declares the peer dead after deadAfterMs of silent rounds, and pings until then', () => {
    const link = new Link(pair.ours, { budgetBytes: 1 << 20 }, () => undefined);
    const ping = pingFrame();
    assert.equal(link.keepalive(1000, 3000, ping), true, 'heard at start');
    assert.equal(link.keepalive(1000, 3000, ping), true, '1 silent round');
    assert.equal(link.keepalive(1000, 3000, ping), true, '2 silent rounds');
    assert.equal(link.keepalive(1000, 3000, ping), false, '3 silent rounds = 3000 ms');
    link.receive(Buffer.alloc(0));
    assert.equal(link.keepalive(1000, 3000, ping), true, 'anything heard resets the count');
  });

  it('as the answerer pings a peer it hears only every RTT_ROUNDS rounds (for the RTT), a silent one every round', () => {
    const link = new Link(pair.ours, { budgetBytes: 1 << 20 }, () => undefined);
    let pings = 0;
    link.sendControl = () => {
      pings++;
      return true;
    };
    const ping = pingFrame();
    for (let i = 0; i < 2 * RTT_ROUNDS; i++) {
      link.receive(Buffer.alloc(0));
      assert.equal(link.keepalive(1000, 3000, ping, true), true);
    }
    assert.equal(pings, 2, 'heard every round: one RTT probe per RTT_ROUNDS rounds');
    pings = 0;
    assert.equal(link.keepalive(1000, 3000, ping, true), true, '1 silent round');
    assert.equal(link.keepalive(1000, 3000, ping, true), true, '2 silent rounds');
    assert.equal(pings, 2, 'each silent round gets its PING');
    assert.equal(link.keepalive(1000, 3000, ping, true), false, 'and silence still ends the link at deadAfterMs');
    const pinger = new Link(pair.ours, { budgetBytes: 1 << 20 }, () => undefined);
    let sent = 0;
    pinger.sendControl = () => {
      sent++;
      return true;
    };
    for (let i = 0; i < RTT_ROUNDS; i++) {
      pinger.receive(Buffer.alloc(0));
      pinger.keepalive(1000, 3000, ping);
    }
    assert.equal(sent, RTT_ROUNDS, 'a pinger (the client) pings every round, heard or not');
  });

  it('refuses DATA beyond the budget\'s data limit and counts it missed, while control still fits the reserve', async () => {
    const { ours, theirs, close } = await socketPair();
    theirs.pause();
    let over = -1;
    const link = new Link(ours, { budgetBytes: 256 * 1024 }, () => undefined);
    const small = await socketPair();
    const cut = new Link(small.ours, { budgetBytes: 16 * 1024, onOverBudget: (needed) => { over = needed; } }, () => undefined);
    link.open = true;
    const frame = encodeFrame(FrameType.Data, Buffer.alloc(1400));
    const batch: WriteBatch = [];
    let accepted = 0;
    while (link.accepts(frame.length)) {
      link.queueData(frame, batch);
      accepted++;
    }
    assert.equal(batch.length, 1, 'the link joined the batch once');
    assert.ok(link.queued + frame.length + WRITE_OVERHEAD_BYTES > link.budget.dataLimit, 'stopped at the data limit');
    batch[0]!.flush();
    assert.ok(accepted > 10 && link.missed === 1, `accepted ${accepted}, missed ${link.missed}`);
    assert.equal(link.sendControl(encodeFrame(FrameType.Goodbye, Buffer.from('{}'))), true, 'control fits the reserve');
    assert.equal(cut.sendControl(encodeFrame(FrameType.Peers, Buffer.alloc(20 * 1024))), false, 'beyond the whole budget');
    assert.ok(over > 20 * 1024, 'and the owner was told how much it would have needed');
    small.close();
    close();
  });

  it('finish sends the last frame, closes, and destroys a socket the peer holds open after the linger', async () => {
    const { ours, theirs, close } = await socketPair();
    const received = framesOf(theirs);
    const link = new Link(ours, { budgetBytes: 1 << 20 }, () => undefined);
    link.open = true;
    link.finish(encodeFrame(FrameType.Goodbye, Buffer.from('{"code":"x","reason":"y"}')), 50);
    assert.equal(link.open, false);
    await once(theirs, 'end');
    assert.deepEqual(received.map((f) => f[0]), [FrameType.Goodbye]);
    assert.equal(link.sendControl(pingFrame()), false, 'nothing is sent after finish');
    await once(ours, 'close');
    close();
  });
});

describe('tunFraming', () => {
  it('turns a TUN batch record into a frame by its type byte', () => {
    const packet = Buffer.alloc(20);
    packet[0] = 0x45;
    const record = Buffer.alloc(HEADER_BYTES + 20);
    record.writeUInt32BE(20);
    packet.copy(record, HEADER_BYTES);
    const plain = tunFraming(false);
    record[0] = plain.type;
    assert.equal(recordLength(record, 0), 20);
    const frames: Buffer[] = [];
    new FrameDecoder().push(record, (frame) => frames.push(frame));
    assert.equal(frames[0]![0], FrameType.Data);
    assert.equal(record[plain.versionAt]! >> 4, 4);
    assert.equal(tunFraming(true).type, FrameType.DataGso);
    assert.ok(tunFraming(true).min > plain.min);
  });
});
