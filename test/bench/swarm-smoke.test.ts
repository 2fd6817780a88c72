// Smoke test of bench/swarm.ts on the 'tiny' synthetic shape with the reference engine: three
// real node processes, one round. Checks the bench runs end to end, writes its JSON, and that
// the pipeline and the single process agree on every greedy token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';

test('bench/swarm: tiny shape through 3 node processes vs one process', { timeout: 150_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-swarm-bench-'));
  try {
    const out = join(dir, 'swarm.json');
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        './dist/src/util/polyfill.js',
        'dist/bench/swarm.js',
        ...[
          '--shape',
          'tiny',
          '--engine',
          'reference',
          '--tokens',
          '4',
          '--rounds',
          '1',
          '--prefill',
          '32',
          '--threads',
          '1',
          '--quick',
          '--out',
          out,
        ],
      ],
      { cwd: REPO_ROOT, encoding: 'utf8', timeout: 140_000 },
    );
    assert.equal(r.status, 0, `bench failed (${r.signal ?? r.status}):\n${r.stdout}\n${r.stderr}`);
    const j = JSON.parse(readFileSync(out, 'utf8')) as {
      options: { nodes: number; ranges: number[][] };
      decode: { ratio: { n: number; median: number }; pipeline: { tokensPerS: { max: number } }; single: { tokensPerS: { max: number } } };
      perHopOverheadUs: { fromTimeline: { n: number; median: number }; transfersPerStep: number };
      prefillTransfer: { mbPerS: { n: number; max: number } };
      greedyTokensIdentical: boolean;
      machine: { loadAvg: number[]; cores: number };
    };
    assert.deepEqual(j.options.ranges, [
      [0, 2],
      [2, 3],
      [3, 4],
    ]);
    assert.equal(j.perHopOverheadUs.transfersPerStep, 4);
    assert.ok(j.decode.pipeline.tokensPerS.max > 0 && j.decode.single.tokensPerS.max > 0);
    assert.ok(j.decode.ratio.n === 1 && j.decode.ratio.median > 0 && Number.isFinite(j.decode.ratio.median));
    assert.equal(j.perHopOverheadUs.fromTimeline.n, 3, 'one timeline per decode step after the first token');
    assert.ok(Number.isFinite(j.perHopOverheadUs.fromTimeline.median));
    assert.ok(j.prefillTransfer.mbPerS.n >= 1);
    assert.equal(j.greedyTokensIdentical, true, 'pipeline and single process must produce the same greedy tokens');
    assert.equal(j.machine.loadAvg.length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
