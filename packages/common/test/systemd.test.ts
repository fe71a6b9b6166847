import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import pino from 'pino';
import { SystemdNotifier, type SdNotify } from '../src/systemd';

describe('SystemdNotifier', () => {
  it('sends STATUS as one assignment whatever the text holds (a hostile relay names the reason)', () => {
    const sent: string[] = [];
    const sd: SdNotify = { ready: () => sent.push('READY=1'), stopping: () => {}, watchdog: () => {}, watchdogInterval: () => 0, sendState: (s) => sent.push(s) };
    const notifier = new SystemdNotifier(pino({ level: 'silent' }), {}, sd);
    notifier.status('rejected (auth): nope\nMAINPID=1\nSTOPPING=1');
    assert.deepEqual(sent, ['STATUS=rejected (auth): nope\\nMAINPID=1\\nSTOPPING=1']);
    assert.ok(!sent[0]!.includes('\n'));
  });
});
