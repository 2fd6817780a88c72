import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../helpers/paths.js';
import { compareOutputs, perTokenRelL2, precisionOf, toleranceFor, TOLERANCES, ToleranceError } from '../../../src/accountability/checks/tolerance.js';

function randn(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

test('perTokenRelL2 matches a direct computation and names bad shapes', () => {
  const a = new Float32Array([3, 4, 0, 0, 1, 1]);
  const b = new Float32Array([0, 0, 0, 0, 1, 1]);
  const d = perTokenRelL2(b, a, 2); // b vs reference a
  assert.deepEqual([...d], [1, 0, 0]);
  assert.ok(perTokenRelL2(a, b, 2)[0]! > 1e10); // reference zero: enormous, never passes
  assert.equal(perTokenRelL2(new Float32Array([NaN, 1]), new Float32Array([1, 1]), 2)[0], Infinity);
  assert.throws(() => perTokenRelL2(a, b.subarray(1), 2), /differ in size/);
  assert.throws(() => perTokenRelL2(a, b, 4), /multiple of dim/);
});

test('every calibrated entry has tau at or above its measured honest max', () => {
  for (const [k, e] of Object.entries(TOLERANCES)) {
    assert.ok(e.tau > 0 && e.tau >= e.honestMax, `${k}: tau ${e.tau} < honest max ${e.honestMax}`);
    assert.ok(e.samples >= 10_000, `${k}: only ${e.samples} samples`);
  }
});

test('the table is the one bench/verify-calibration.ts wrote (re-run the bench, then update it)', () => {
  const cal = JSON.parse(readFileSync(join(REPO_ROOT, 'bench/results/verify-calibration.json'), 'utf8')) as {
    tolerances: Record<string, { tau: number; honestMax: number; samples: number; falsePositives: number }>;
    dishonest: Record<string, { detectedPerStep: { atTauF32: number } }>;
  };
  assert.deepEqual(Object.keys(cal.tolerances).sort(), Object.keys(TOLERANCES).sort());
  for (const [k, c] of Object.entries(cal.tolerances)) {
    assert.equal(TOLERANCES[k]!.tau, c.tau, k);
    assert.equal(TOLERANCES[k]!.samples, c.samples, k);
    assert.equal(c.falsePositives, 0, k);
  }
  for (const [cheat, d] of Object.entries(cal.dishonest)) assert.equal(d.detectedPerStep.atTauF32, 1, cheat);
});

test('profiles map to precision pairs', () => {
  assert.equal(precisionOf('reference/f32'), 'f32');
  assert.equal(precisionOf('ort-f32'), 'f32');
  assert.equal(precisionOf('reference/f32+act-f16'), 'f16');
  assert.equal(precisionOf('ort-q4+act-bf16'), 'bf16');
  assert.throws(() => precisionOf('ort-q4-int8act'), /own calibration/);
  assert.equal(toleranceFor('ort-f32|reference/f32').key, 'f32|f32');
  assert.equal(toleranceFor(['reference/f32+act-f16', 'reference/f32']).key, 'f16|f32');
  assert.throws(() => toleranceFor('f32'), /worker\|auditor/);
  assert.throws(() => toleranceFor('bf16|bf16'), ToleranceError);
});

test('compareOutputs passes honest rounding and fails gross tampering', () => {
  const dim = 64;
  const ref = randn(32 * dim, 7);
  const jittered = new Float32Array(ref.length);
  for (let i = 0; i < ref.length; i++) jittered[i] = Math.fround(ref[i]! * (1 + 1e-7 * ((i % 7) - 3))); // fp32-level noise
  assert.equal(compareOutputs(jittered, ref, 'ort-f32|reference/f32', { dim }).pass, true);
  const noisy = ref.map((v, i) => v + 0.02 * randn(1, i)[0]!);
  const v = compareOutputs(noisy, ref, 'ort-f32|reference/f32', { dim });
  assert.equal(v.pass, false);
  assert.equal(v.failingTokens, 32);
  const oneBad = ref.slice();
  oneBad.fill(0, 5 * dim, 6 * dim);
  const v2 = compareOutputs(oneBad, ref, 'reference/f32|reference/f32', { dim });
  assert.deepEqual([v2.pass, v2.worstToken, v2.failingTokens, v2.maxRelL2], [false, 5, 1, 1]);
  // an explicit tau overrides (but never below the floor)
  assert.equal(compareOutputs(noisy, ref, 'f32|f32', { dim, tau: 1 }).pass, true);
});
