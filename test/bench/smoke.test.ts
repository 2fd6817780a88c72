// Every benchmark that can run in seconds runs to the end on a small configuration and writes
// its result file. CI runs no benchmark otherwise, and one can stop working unseen when the
// product changes under it: bench/swarm did, for two days, when nodes began refusing STEPs over
// --max-step-tokens (its prefill transfer is one step). Speed is not asserted here (bench/README.md);
// only that each one still runs against the production code as its command line documents.
// Left out, each for its size: engine and concurrency (synthetic SmolLM2 weights, minutes),
// verify-calibration and hostile-soak (a minute each), wan (root and network namespaces).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, STORIES_GGUF } from '../helpers/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'odsi-bench-smoke-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** case → the bench it runs (dist/bench/<name>.js, the case's own name when absent) and its arguments (each writes its JSON to --out) */
const BENCHES: Record<string, string[] | { bench: string; args: string[] }> = {
  swarm: ['--shape', 'tiny', '--tokens', '4', '--rounds', '1', '--prefill', '256'],
  'hop-overhead': ['--rounds', '1', '--warmup', '1', '--tokens', '8'],
  // the gateway and the node on cores of their own (taskset): one hop fits two cores
  'hop-overhead --pin': { bench: 'hop-overhead', args: ['--hops', '1', '--pin', '--rounds', '1', '--warmup', '1', '--tokens', '8'] },
  'route-open': ['--opens', '2'],
  prompt: ['--model', STORIES_GGUF, '--engine', 'reference', '--lengths', '40', '--reps', '1'],
  recovery: ['--model', STORIES_GGUF, '--engine', 'reference', '--lengths', '16'],
  'control-plane': ['--rounds', '1', '--tokens', '4'],
  'verify-overhead': ['--rounds', '1', '--tokens', '8'],
  'step-header': ['--rounds', '1', '--iters', '200'],
  planner: ['--rounds', '1', '--calls', '20'],
  staller: ['--model', STORIES_GGUF, '--requests', '1', '--tokens', '8'],
  'receipt-check': ['--rounds', '1', '--checks', '20'],
  'wake-up': ['--gaps', '1', '--rounds', '1', '--pings', '2'],
  transport: ['--rounds', '1', '--scale', '0.1'],
  parity: ['--tokens', '4'],
  'ledger-sqlite': ['--writes', '10', '--credits', '20'],
  'ledger-gas': [],
};

describe('benchmarks run on a small configuration', () => {
  for (const [name, spec] of Object.entries(BENCHES)) {
    const { bench, args } = Array.isArray(spec) ? { bench: name, args: spec } : spec;
    test(name, { timeout: 180_000 }, () => {
      const out = join(dir, `${name.replace(/\W+/g, '-')}.json`);
      const r = spawnSync(process.execPath, ['--import', './dist/src/util/polyfill.js', `dist/bench/${bench}.js`, ...args, '--out', out], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        timeout: 170_000,
      });
      assert.equal(r.status, 0, `${name} exited ${r.status ?? r.signal}:\n${(r.stderr || r.stdout).slice(-2000)}`);
      const result = JSON.parse(readFileSync(out, 'utf8')) as { machine?: unknown };
      assert.ok(result.machine, `${name} wrote no machine description`);
    });
  }
});
