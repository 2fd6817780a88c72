// A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: every
// line must be a HELP, a TYPE or a sample of a declared family; names and labels must be
// well-formed; counters end in _total; histogram buckets are cumulative and end in +Inf equal
// to _count. Throws on the first violation, naming the line.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function parseExposition(text: string): Map<string, Family> {
  const fams = new Map<string, Family>();
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('exposition must end with a newline');
  const fail = (i: number, why: string): never => {
    throw new Error(`line ${i + 1}: ${why}: ${JSON.stringify(lines[i])}`);
  };
  const familyOf = (sample: string): Family | undefined => {
    for (const suffix of ['', '_bucket', '_sum', '_count', '_total', '_created']) {
      if (suffix && !sample.endsWith(suffix)) continue;
      const f = fams.get(sample.slice(0, sample.length - suffix.length));
      if (!f) continue;
      if (f.type === 'histogram' && !['_bucket', '_sum', '_count'].includes(suffix)) continue;
      if (f.type === 'summary' && !['', '_sum', '_count'].includes(suffix)) continue;
      if ((f.type === 'gauge' || f.type === 'untyped') && suffix) continue;
      if (f.type === 'counter' && suffix !== '') continue;
      return f;
    }
    return undefined;
  };
  for (let i = 0; i < lines.length - 1; i++) {
    const l = lines[i]!;
    if (l === '') continue;
    if (l.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(l);
      if (!m) {
        if (/^# (HELP|TYPE)/.test(l)) fail(i, 'malformed HELP/TYPE');
        continue; // a comment
      }
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME.test(name)) fail(i, 'bad metric name');
      const f = fams.get(name) ?? { name, type: 'untyped' as Family['type'], samples: [] };
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) fail(i, 'unknown type');
        if (f.samples.length) fail(i, 'TYPE after samples');
        f.type = rest as Family['type'];
        if (f.type === 'counter' && !name.endsWith('_total')) fail(i, 'a counter name must end in _total');
      } else f.help = rest;
      fams.set(name, f);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(l);
    if (!m) fail(i, 'malformed sample');
    const [, name, , body, raw] = m!;
    const labels: Record<string, string> = {};
    if (body) {
      let rest = body;
      while (rest.length) {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
        if (!lm || !LABEL.test(lm[1]!)) fail(i, 'malformed label');
        if (lm![1]! in labels) fail(i, 'duplicate label');
        labels[lm![1]!] = lm![2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        rest = rest.slice(lm![0].length);
      }
    }
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : raw === 'NaN' ? NaN : Number(raw);
    if (!/^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(raw!)) fail(i, 'bad value');
    const f = familyOf(name!);
    if (!f) fail(i, `sample of an undeclared family`);
    f!.samples.push({ name: name!, labels, value });
  }
  for (const f of fams.values()) if (f.type === 'histogram') checkHistogram(f);
  return fams;
}

function checkHistogram(f: Family): void {
  const series = new Map<string, Sample[]>();
  const key = (s: Sample) =>
    JSON.stringify(
      Object.entries(s.labels)
        .filter(([k]) => k !== 'le')
        .sort(),
    );
  for (const s of f.samples) if (s.name.endsWith('_bucket')) series.set(key(s), [...(series.get(key(s)) ?? []), s]);
  for (const [k, buckets] of series) {
    let prev = -1;
    let prevLe = -Infinity;
    for (const b of buckets) {
      const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
      if (!(le > prevLe)) throw new Error(`${f.name}${k}: bucket bounds not increasing`);
      if (b.value < prev) throw new Error(`${f.name}${k}: buckets not cumulative`);
      prev = b.value;
      prevLe = le;
    }
    if (prevLe !== Infinity) throw new Error(`${f.name}${k}: no +Inf bucket`);
    const count = f.samples.find((s) => s.name === `${f.name}_count` && key(s) === k);
    if (!count || count.value !== prev) throw new Error(`${f.name}${k}: _count ≠ +Inf bucket`);
  }
}

/** the sum of a family's samples named `sample` (default: the family's own name), optionally filtered by labels */
export function total(fams: Map<string, Family>, family: string, sample = family, where: Record<string, string> = {}): number {
  const f = fams.get(family);
  if (!f) throw new Error(`no metric family ${family}`);
  return f.samples
    .filter((s) => s.name === sample && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}
