// Lazy loading (a stage's memory grows by its own layers only) and RoPE frequencies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { openModel } from '../../src/model/load.js';
import { llama3RopeFactors, ropeInvFreq } from '../../src/model/rope.js';
import { SHAPES, synthConfig, writeSyntheticGguf, writeSyntheticSafetensors } from '../../src/model/synth.js';
import { layerTensorNames, type ModelConfig } from '../../src/model/types.js';

// a real gc() so earlier garbage (the model we just wrote) does not blur the measurement
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** full GCs with pauses: V8 frees array buffer memory on a background sweeper */
async function settledArrayBuffers(): Promise<number> {
  let last = -1;
  for (let i = 0; i < 20; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
    const now = process.memoryUsage().arrayBuffers;
    if (now === last) return now;
    last = now;
  }
  return last;
}

const tmp = mkdtempSync(join(tmpdir(), 'odsi-lazy-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

for (const format of ['gguf', 'safetensors'] as const) {
  test(`reading layers [3,5) of a 12-layer model grows memory by about those layers only (${format})`, async () => {
    const out = join(tmp, format === 'gguf' ? 'm.gguf' : 'm-hf');
    const opts = { shape: 'tiny', dtype: 'f32' as const, seed: 1, out, nLayers: 12 };
    if (format === 'gguf') await writeSyntheticGguf(opts);
    else await writeSyntheticSafetensors(opts);
    const src = openModel(out);
    try {
      let layerBytes = 0;
      let totalBytes = 0;
      for (const n of src.tensorNames()) totalBytes += src.info(n).byteLength;
      const names = [3, 4].flatMap((l) => layerTensorNames(l));
      for (const n of names) layerBytes += src.info(n).byteLength;
      const before = await settledArrayBuffers();
      const held = names.map((n) => src.readF32(n));
      const delta = (await settledArrayBuffers()) - before;
      assert.equal(held.length, 18);
      // F32 in -> f32 out: each tensor is held once (raw bytes are garbage); allow generous slack
      assert.ok(delta >= layerBytes * 0.9, `delta ${delta} < layer bytes ${layerBytes}`);
      assert.ok(delta <= layerBytes * 2 + (1 << 20), `delta ${delta} too large for ${layerBytes} layer bytes`);
      assert.ok(delta < totalBytes / 2, `delta ${delta} vs model ${totalBytes}`);
    } finally {
      src.close();
    }
  });
}

test('RoPE inverse frequencies: plain, linear, llama3 and the stored rope_freqs tensor', async () => {
  const c: ModelConfig = { ...SHAPES.tiny! };
  const base = ropeInvFreq(c);
  assert.equal(base.length, c.headDim / 2);
  for (let i = 0; i < base.length; i++) assert.ok(Math.abs(base[i]! - Math.pow(10000, (-2 * i) / 32)) < 1e-7 * Math.max(1, base[i]!));
  const lin = ropeInvFreq({ ...c, ropeScaling: { type: 'linear', factor: 4 } });
  for (let i = 0; i < base.length; i++) assert.ok(Math.abs(lin[i]! - base[i]! / 4) < 1e-9);

  // Llama 3.2 1B: wavelengths below 8192/4 untouched, above 8192/1 divided by 32, smooth between
  const l3 = synthConfig('llama-3.2-1b');
  const s = l3.ropeScaling as Extract<ModelConfig['ropeScaling'], { type: 'llama3' }>;
  const f = llama3RopeFactors(l3.headDim, l3.ropeTheta, s);
  assert.equal(f[0], 1);
  assert.equal(f[31], 32);
  for (let i = 1; i < 32; i++) assert.ok(f[i]! >= f[i - 1]!, 'monotone');
  for (let i = 0; i < 32; i++) {
    const wl = (2 * Math.PI) / Math.pow(500000, (-2 * i) / 64);
    if (wl > 2048 && wl < 8192) {
      const smooth = (8192 / wl - 1) / 3;
      assert.ok(Math.abs(1 / f[i]! - ((1 - smooth) / 32 + smooth)) < 1e-6, `medium ${i}`);
    }
  }
  const inv = ropeInvFreq(l3);
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(inv[i]! - Math.pow(500000, (-2 * i) / 64) / f[i]!) < 1e-9 + 1e-6 * inv[i]!);

  // a GGUF carries the factors as rope_freqs.weight; it applies even if the config lost them
  const out = join(tmp, 'l3.gguf');
  await writeSyntheticGguf({
    shape: 'tiny',
    dtype: 'f32',
    seed: 1,
    out,
    nLayers: 1,
    overrides: { ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 64 } },
  });
  const src = openModel(out);
  const want = ropeInvFreq(src.config);
  const { ropeScaling: _drop, ...noScaling } = src.config;
  assert.deepEqual(ropeInvFreq(noScaling as ModelConfig, src), want);
  assert.notDeepEqual(ropeInvFreq(noScaling as ModelConfig), want);
  src.close();
});
