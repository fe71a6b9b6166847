/**
 * Every word of mnedcctl's human output is explained: each column and field a command prints is a term
 * of its command in the glossary, `<command> --help` prints it, and the man page carries the same text.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { helpText } from '../src/args';
import { OUTPUT_TERMS, roffOutputTerms } from '../src/glossary';
import { renderClientPeers, renderResult, type QueryCommand } from '../src/render';
import {
  NOW, clientPeers, clientStats, clientStatus, leases, serverPeers, serverStats, serverStatus,
} from './fixtures';

const MAN_PAGE = join(__dirname, '../../../../man/mnedcctl.8');

/**
 * Table headers (cells two or more spaces apart) and the stats tables' row labels, when the output starts
 * with a table; "name  value" field names and section titles everywhere else.
 */
function labelsShown(text: string, startsWithTable: boolean): string[] {
  const labels: string[] = [];
  text.split('\n\n').forEach((block, i) => {
    const lines = block.split('\n').filter((line) => line !== '');
    if (startsWithTable && i === 0) {
      labels.push(...lines[0]!.trim().split(/ {2,}/));
      for (const line of lines.slice(1)) {
        const first = line.split(/ {2,}/)[0]!;
        if (/^\(|^tunnel$|^session$/.test(first)) labels.push(first);
      }
      return;
    }
    for (const line of lines) labels.push(line.endsWith(':') ? line.split(' ')[0]! : line.trim().split(/ {2,}/)[0]!);
  });
  return labels;
}

const CASES: Array<[QueryCommand, 'server' | 'client', unknown]> = [
  ['status', 'server', serverStatus], ['status', 'client', clientStatus],
  ['peers', 'server', serverPeers], ['peers', 'client', clientPeers],
  ['leases', 'server', leases],
  ['stats', 'server', serverStats], ['stats', 'client', clientStats],
];

test('every column and field shown is a term of its command, and its --help explains it', () => {
  for (const [command, daemon, result] of CASES) {
    const shown = labelsShown(renderResult(command, daemon, result, NOW), command !== 'status');
    assert.ok(shown.length >= 4, `${command} (${daemon}): found labels ${JSON.stringify(shown)}`);
    const terms = new Map(OUTPUT_TERMS[command as keyof typeof OUTPUT_TERMS][daemon].map((t) => [t.label.trim(), t.meaning]));
    const help = helpText(command);
    for (const label of shown) {
      const meaning = terms.get(label);
      assert.ok(meaning, `${command} (${daemon}) shows "${label}", which the glossary does not explain`);
      assert.ok(help.includes(`${label}`) && help.includes(meaning), `${command} --help does not explain "${label}"`);
    }
  }
});

test('the labels found include the ones an operator asked about', () => {
  const stats = labelsShown(renderResult('stats', 'server', serverStats, NOW), true);
  for (const label of ['MISSED', 'QUEUE FULL', 'auth failed', 'evicted', 'over budget', 'refused', 'cut', 'multicast', 'mdns', 'ssdp']) {
    assert.ok(stats.includes(label), label);
  }
  const peers = labelsShown(renderResult('peers', 'server', serverPeers, NOW), true);
  for (const label of ['RX', 'TX', 'RX RATE', 'MISSED']) assert.ok(peers.includes(label), label);
  assert.match(helpText('peers'), /pkt\/s count packets/);
});

test('the man page carries the glossary as it is', () => {
  const page = readFileSync(MAN_PAGE, 'utf8');
  const begin = page.indexOf('.\\" BEGIN OUTPUT TERMS');
  const end = page.indexOf('.\\" END OUTPUT TERMS');
  assert.ok(begin >= 0 && end > begin, 'man/mnedcctl.8 has the OUTPUT TERMS markers');
  const block = page.slice(page.indexOf('\n', begin) + 1, end);
  assert.equal(block, roffOutputTerms(),
    'man/mnedcctl.8 is out of date: replace the block between the markers with roffOutputTerms() from packages/ctl/src/glossary.ts');
});

test('peers on a client without the list says why it is empty', () => {
  assert.equal(renderResult('peers', 'client', [], NOW, clientStatus), 'no peers\n');
  const names = renderResult('peers', 'client', [], NOW, { ...clientStatus, discovery: 'names' });
  assert.match(names, /^no peer list: discovery is names, the relay sends this device no peers \(reach them by name on the overlay\); \[client\] discovery = full asks for the list\n$/);
  assert.match(renderClientPeers([], NOW, 'off'), /^no peer list: discovery is off/);
});
