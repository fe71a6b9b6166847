import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  Backoff, describeSocketError, MAX_HINT_MS, MISTAKE_BASE_MS, MISTAKE_CAP_MS, OUTAGE_BASE_MS, OUTAGE_CAP_MS, rejectKind, RetryPolicy,
} from '../src';

/** The shipped schedules with the jitter fixed at `r` (0: the low end of each range, ~1: the high end). */
const policy = (r: number) => new RetryPolicy(new Backoff(OUTAGE_BASE_MS, OUTAGE_CAP_MS, () => r), new Backoff(MISTAKE_BASE_MS, MISTAKE_CAP_MS, () => r));

describe('RetryPolicy', () => {
  it('an outage never waits more than 1 s, however long it lasts, so devices are back < 2 s after the relay', () => {
    const high = policy(0.999999);
    const waits = Array.from({ length: 60 }, () => high.next('outage'));
    assert.deepEqual(waits.slice(0, 4), [250, 500, 1000, 1000]);
    assert.ok(waits.every((w) => w <= OUTAGE_CAP_MS), `waits ${waits.join(' ')}`);
    // Jitter in [d/2, d]: a fleet is spread over half a second at the cap, never retrying in lockstep.
    const low = policy(0);
    assert.deepEqual(Array.from({ length: 5 }, () => low.next('outage')), [125, 250, 500, 500, 500]);
    const spread = new RetryPolicy();
    const atCap = Array.from({ length: 200 }, () => spread.next('outage')).slice(10);
    assert.ok(Math.min(...atCap) >= 500 && Math.max(...atCap) <= 1000 && new Set(atCap).size > 50, 'jittered at the cap');
  });

  it('an operator mistake waits longer each time, up to 5 minutes, instead of spinning', () => {
    const high = policy(0.999999);
    const waits = Array.from({ length: 12 }, () => high.next('mistake'));
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000]);
    const low = policy(0);
    assert.equal(Array.from({ length: 12 }, () => low.next('mistake')).at(-1), 150_000);
  });

  it('keeps a schedule per kind, lets the relay\'s hint lengthen either within a bound, and a session resets both', () => {
    const p = policy(0.999999);
    p.next('mistake');
    p.next('mistake');
    assert.equal(p.next('outage'), 250, 'an outage after mistakes still starts short');
    assert.equal(p.next('mistake'), 4000, 'and the mistake schedule kept growing');
    assert.equal(p.next('outage', 30_000), 30_000, 'the relay knows its load: its hint lengthens the wait');
    assert.equal(p.next('mistake', 0), 8000, 'a hint never shortens the schedule: "retry at once" from a relay does not make a spin');
    assert.equal(p.next('outage', 0), 1000);
    assert.equal(p.next('outage', 3_600_000), MAX_HINT_MS, 'nor parks the device for longer than MAX_HINT_MS');
    p.reset();
    assert.equal(p.next('outage'), 250);
    assert.equal(p.next('mistake'), 1000);
  });
});

describe('describeSocketError', () => {
  const openssl = (code: string, reason: string) => ({
    code, message: `804C83A6947F0000:error:0A00010B:SSL routines:ssl3_get_record:${reason}:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n`,
  });

  it('a server that does not speak TLS (HTTP, SSH, anything) is named as such in one line, an operator mistake', () => {
    const f = describeSocketError(openssl('ERR_SSL_WRONG_VERSION_NUMBER', 'wrong version number'), false);
    assert.deepEqual(f, { kind: 'mistake', text: 'it does not speak TLS (a web, SSH or other server?); is it an mnedc relay? Check [client] server' });
    assert.equal(describeSocketError(openssl('ERR_SSL_PACKET_LENGTH_TOO_LONG', 'packet length too long'), false).text, f.text);
  });

  it('a TLS server without TLS 1.3, or another TLS failure, is one line with OpenSSL\'s reason only', () => {
    assert.deepEqual(describeSocketError(openssl('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'tlsv1 alert protocol version'), false),
      { kind: 'mistake', text: 'it speaks no TLS 1.3; is it an mnedc relay? Check [client] server' });
    assert.deepEqual(describeSocketError(openssl('ERR_SSL_SOMETHING_NEW', 'something new'), false),
      { kind: 'mistake', text: 'the TLS handshake failed (something new); is it an mnedc relay? Check [client] server' });
  });

  it('a relay down, unreachable, or closing before TLS (as a busy relay does) is an outage', () => {
    assert.deepEqual(describeSocketError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:3334' }, false),
      { kind: 'outage', text: 'connection refused (nothing listens there: the relay is down or restarting)' });
    assert.equal(describeSocketError({ code: 'EHOSTUNREACH', message: 'x' }, false).kind, 'outage');
    const early = describeSocketError({ code: 'ECONNRESET', message: 'Client network socket disconnected before secure TLS connection was established' }, false);
    assert.equal(early.kind, 'outage');
    assert.match(early.text, /closed the connection before TLS was up \(a busy relay does this/);
  });

  it('after TLS is up, even an SSL error is the link failing, not the server being something else', () => {
    assert.deepEqual(describeSocketError(openssl('ERR_SSL_DECRYPTION_FAILED', 'decryption failed'), true),
      { kind: 'outage', text: 'TLS error (decryption failed)' });
    assert.deepEqual(describeSocketError({ message: 'read ECONNRESET' }, true), { kind: 'outage', text: 'read ECONNRESET' });
  });
});

describe('rejectKind', () => {
  it('a wrong secret, a forbidden ID or another protocol version wait on the long schedule; busy and pool-full are outages', () => {
    assert.deepEqual(['auth', 'forbidden', 'version', 'busy', 'pool-full', 'other'].map(rejectKind),
      ['mistake', 'mistake', 'mistake', 'outage', 'outage', 'outage']);
  });
});
