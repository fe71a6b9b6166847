/*
 * A strict reader of the Prometheus text exposition format (0.0.4), for the tests that scrape the
 * daemons: promtool lints names and HELP, but accepts a repeated series or a family split in two, which
 * Prometheus itself rejects at scrape time. Everything the format does not allow is an error naming its line.
 * Histograms and summaries (whose samples carry suffixed names) are not read: the daemons export neither.
 */

export type MetricKind = 'counter' | 'gauge' | 'untyped';

export interface Sample {
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  type: MetricKind;
  help: string;
  samples: Sample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const KINDS: readonly string[] = ['counter', 'gauge', 'untyped'];
const VALUE = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/;

function parseValue(text: string): number {
  if (!VALUE.test(text)) throw new Error(`${JSON.stringify(text)} is not a sample value`);
  if (text === 'NaN') return NaN;
  if (text.endsWith('Inf')) return text.startsWith('-') ? -Infinity : Infinity;
  return Number(text);
}

/** `a="x",b="y\"z"` → { a: 'x', b: 'y"z' }; only \\, \" and \n are escapes. */
function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let at = 0;
  while (at < text.length) {
    const eq = text.indexOf('=', at);
    const name = eq < 0 ? '' : text.slice(at, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${JSON.stringify(text.slice(at, eq < 0 ? undefined : eq))}`);
    if (Object.hasOwn(labels, name)) throw new Error(`label ${name} given twice`);
    if (text[eq + 1] !== '"') throw new Error(`label ${name}: value not quoted`);
    let value = '';
    let i = eq + 2;
    for (; i < text.length && text[i] !== '"'; i++) {
      if (text[i] === '\n') throw new Error(`label ${name}: raw line feed`);
      if (text[i] !== '\\') {
        value += text[i];
        continue;
      }
      const escaped = text[++i];
      if (escaped === '\\' || escaped === '"') value += escaped;
      else if (escaped === 'n') value += '\n';
      else throw new Error(`label ${name}: unknown escape \\${escaped ?? ''}`);
    }
    if (i >= text.length) throw new Error(`label ${name}: value not closed`);
    labels[name] = value;
    at = i + 1;
    if (at < text.length) {
      if (text[at] !== ',') throw new Error(`expected "," after label ${name}`);
      at++;
    }
  }
  return labels;
}

/** Every family of an exposition, by name; throws at the first line that breaks the format. */
export function parseExposition(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const series = new Set<string>();
  let current = '';
  if (text !== '' && !text.endsWith('\n')) throw new Error('the last line has no line feed');
  const lines = text.split('\n').slice(0, -1);
  lines.forEach((line, index) => {
    const fail = (problem: string) => { throw new Error(`line ${index + 1}: ${problem}: ${line.slice(0, 200)}`); };
    const family = (name: string): MetricFamily => {
      let f = families.get(name);
      if (f && current !== name) fail(`family ${name} continues after another family began`);
      if (!f) {
        f = { type: 'untyped', help: '', samples: [] };
        families.set(name, f);
      }
      current = name;
      return f;
    };
    if (line === '') return;
    const meta = new RegExp(`^# (HELP|TYPE) (${NAME})(?: (.*))?$`).exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (meta[1] === 'TYPE') {
        if (!KINDS.includes(meta[3] ?? '')) fail('unknown TYPE');
        if (f.samples.length > 0) fail('TYPE after samples');
        f.type = meta[3] as MetricKind;
      } else {
        if (f.help) fail('second HELP');
        if (/\\(?![\\n])/.test(meta[3] ?? '')) fail('unknown escape in HELP');
        f.help = (meta[3] ?? '').replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      }
      return;
    }
    if (line.startsWith('#')) return;
    const sample = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`).exec(line);
    if (!sample) return fail('not a sample line');
    let labels: Record<string, string>;
    let value: number;
    try {
      labels = parseLabels(sample[2] ?? '');
      value = parseValue(sample[3]!);
    } catch (err) {
      return fail((err as Error).message);
    }
    const key = `${sample[1]!}{${Object.entries(labels).sort().map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    if (series.has(key)) fail('a series given twice');
    series.add(key);
    family(sample[1]!).samples.push({ labels, value });
  });
  return families;
}
