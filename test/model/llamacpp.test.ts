// Files we write load in llama.cpp (node-llama-cpp, CPU prebuilt, offline): converted Q8_0 /
// Q4_0 stories260K, a synthetic model, and a HF directory converted to GGUF.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertModel } from '../../src/model/convert.js';
import { openModel } from '../../src/model/load.js';
import { writeSyntheticGguf, writeSyntheticSafetensors } from '../../src/model/synth.js';
import { GgmlType } from '../../src/model/types.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const tmp = mkdtempSync(join(tmpdir(), 'odsi-llamacpp-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

test('converted and synthetic GGUF files load and evaluate in llama.cpp', { timeout: 120_000 }, async () => {
  const files: string[] = [];
  for (const dtype of ['q8_0', 'q4_0'] as const) {
    const out = join(tmp, `stories-${dtype}.gguf`);
    await convertModel(STORIES_GGUF, { dtype, out });
    const m = openModel(out);
    const want = dtype === 'q8_0' ? GgmlType.Q8_0 : GgmlType.Q4_0;
    // 2-D tensors with rows of 64 are quantized; rows of 172 (ffn_down) stay F16; norms F32
    assert.equal(m.info('blk.0.attn_q.weight').type, want);
    assert.equal(m.info('blk.0.ffn_down.weight').type, GgmlType.F16);
    assert.equal(m.info('blk.0.attn_norm.weight').type, GgmlType.F32);
    const orig = openModel(STORIES_GGUF);
    assert.deepEqual(m.tokenizer, orig.tokenizer);
    // every metadata key survives; only the file type changes
    for (const [k, v] of Object.entries(orig.metadata)) if (k !== 'general.file_type') assert.deepEqual(m.metadata[k], v, k);
    assert.equal(m.metadata['general.file_type'], dtype === 'q8_0' ? 7 : 2);
    orig.close();
    m.close();
    files.push(out);
  }
  const synth = join(tmp, 'tiny-q4.gguf');
  await writeSyntheticGguf({ shape: 'tiny', dtype: 'q4_0', seed: 2, out: synth, nLayers: 2 });
  files.push(synth);
  const hf = join(tmp, 'tiny-hf');
  await writeSyntheticSafetensors({ shape: 'tiny', dtype: 'f16', seed: 2, out: hf, nLayers: 2, overrides: { tiedEmbeddings: true } });
  const hfGguf = join(tmp, 'tiny-from-hf.gguf');
  await convertModel(hf, { dtype: 'q8_0', out: hfGguf });
  files.push(hfGguf);

  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  for (const f of files) {
    const model = await llama.loadModel({ modelPath: f });
    try {
      const toks = model.tokenize('Once upon a time');
      assert.ok(toks.length > 0, `${f}: tokenized`);
      const ctx = await model.createContext({ contextSize: 64 });
      try {
        const seq = ctx.getSequence();
        const it = seq.evaluate([1, ...toks] as never);
        const r = await it.next();
        assert.equal(typeof r.value, 'number', `${f}: evaluated a token`);
        await it.return?.(undefined as never);
      } finally {
        await ctx.dispose();
      }
    } finally {
      await model.dispose();
    }
  }
});
