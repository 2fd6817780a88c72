// Hugging Face directories: the same synthetic weights written as GGUF and as safetensors load
// to the same config, tensors, model id and (through the reference engine) logits; Q/K rows are
// permuted so adjacent-pair RoPE on GGUF layout equals HF's rotate-half; clear errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  truncateSync,
  writeFileSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import { ropeInvFreq, ROPE_FREQS } from '../../src/model/rope.js';
import { readSafetensorsHeader } from '../../src/model/safetensors.js';
import { writeSyntheticGguf, writeSyntheticSafetensors } from '../../src/model/synth.js';
import { dequantize } from '../../src/model/quant.js';
import { ModelFormatError, type ModelConfig, type RopeScaling } from '../../src/model/types.js';

const tmp = mkdtempSync(join(tmpdir(), 'odsi-hf-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

const llama3: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 64 };
const variants: { label: string; dtype: 'f32' | 'f16'; overrides: Partial<ModelConfig>; shardBytes?: number }[] = [
  { label: 'f32 untied, one file', dtype: 'f32', overrides: {} },
  {
    label: 'f16 tied + llama3 rope, sharded',
    dtype: 'f16',
    overrides: { tiedEmbeddings: true, ropeScaling: llama3, ropeTheta: 500000 },
    shardBytes: 200_000,
  },
];

for (const v of variants) {
  test(`GGUF and safetensors of the same synthetic weights agree (${v.label})`, async () => {
    const g = join(tmp, `${v.dtype}.gguf`);
    const d = join(tmp, `${v.dtype}-hf`);
    await writeSyntheticGguf({ shape: 'tiny', dtype: v.dtype, seed: 11, out: g, nLayers: 2, overrides: v.overrides });
    await writeSyntheticSafetensors({
      shape: 'tiny',
      dtype: v.dtype,
      seed: 11,
      out: d,
      nLayers: 2,
      overrides: v.overrides,
      shardBytes: v.shardBytes,
    });
    if (v.shardBytes) assert.ok(readdirSync(d).filter((f) => f.endsWith('.safetensors')).length > 2, 'sharded');
    const a = openModel(g);
    const b = openModel(d);
    try {
      assert.equal(b.format, 'safetensors');
      assert.deepEqual(b.config, a.config);
      assert.deepEqual(b.tensorNames().sort(), a.tensorNames().sort());
      if (v.overrides.ropeScaling) assert.ok(b.has(ROPE_FREQS) && a.has(ROPE_FREQS));
      for (const n of a.tensorNames()) {
        assert.deepEqual(b.info(n).shape, a.info(n).shape, n);
        assert.equal(b.info(n).type, a.info(n).type, n);
        assert.deepEqual(b.readF32(n), a.readF32(n), n);
      }
      assert.deepEqual(ropeInvFreq(b.config, b), ropeInvFreq(a.config, a));
      assert.equal(modelIdentity(b, { cache: false }).modelId, modelIdentity(a, { cache: false }).modelId);
      // tokenizer from tokenizer.json / tokenizer_config.json
      const ta = a.tokenizer!;
      const tb = b.tokenizer!;
      assert.deepEqual(tb.tokens, ta.tokens);
      assert.equal(tb.model, 'llama');
      assert.deepEqual([tb.bosId, tb.eosId, tb.unkId, tb.addBos], [1, 2, 0, true]);
      assert.equal(tb.chatTemplate, ta.chatTemplate);
      assert.ok(tb.hfTokenizerJson && JSON.parse(tb.hfTokenizerJson).model.type === 'BPE');
      assert.deepEqual([...tb.tokenTypes!], [...ta.tokenTypes!]);

      // identical logits through the reference engine, split over two stages
      const { buildLocalPipeline, disposePipeline } = await import('../../src/engine/create.js');
      const { forwardPipeline } = await import('../../src/engine/pipeline.js');
      const run = async (src: typeof a) => {
        const stages = await buildLocalPipeline('reference', src, 2);
        try {
          return (await forwardPipeline(stages, { sessionId: 's', pos: 0, tokens: Int32Array.from([1, 300, 301, 302]) })).logits;
        } finally {
          await disposePipeline(stages);
        }
      };
      const la = await run(a);
      const lb = await run(b);
      assert.equal(la.length, a.config.vocabSize);
      assert.ok(la.every(Number.isFinite));
      assert.deepEqual(lb, la);
    } finally {
      a.close();
      b.close();
    }
  });
}

test('Q/K permutation: adjacent-pair RoPE on GGUF rows equals HF rotate-half on HF rows', async () => {
  const d = join(tmp, 'perm-hf');
  await writeSyntheticSafetensors({ shape: 'tiny', dtype: 'f32', seed: 3, out: d, nLayers: 1 });
  const src = openModel(d);
  const c = src.config;
  const fd = openSync(join(d, 'model.safetensors'), 'r');
  try {
    const e = readSafetensorsHeader(fd, d).entries.get('model.layers.0.self_attn.k_proj.weight')!;
    const raw = Buffer.alloc(e.byteLength);
    readSync(fd, raw, 0, raw.length, e.offset);
    const hfW = dequantize(0, new Uint8Array(raw), e.byteLength / 4);
    const ggW = src.readF32('blk.0.attn_k.weight');
    assert.notDeepEqual(ggW, hfW);
    const rows = c.nKvHeads * c.headDim;
    const x = Float32Array.from({ length: c.dim }, (_, i) => Math.sin(i * 0.37));
    const matvec = (w: Float32Array) =>
      Float32Array.from({ length: rows }, (_, r) => {
        let s = 0;
        for (let k = 0; k < c.dim; k++) s += w[r * c.dim + k]! * x[k]!;
        return s;
      });
    const kh = matvec(hfW);
    const kg = matvec(ggW);
    const inv = ropeInvFreq(c);
    const pos = 5;
    const hd = c.headDim;
    for (let h = 0; h < c.nKvHeads; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const th = pos * inv[i]!;
        const [cs, sn] = [Math.cos(th), Math.sin(th)];
        // HF: rotate_half pairs (i, i + hd/2)
        const a0 = kh[h * hd + i]!,
          a1 = kh[h * hd + i + hd / 2]!;
        const hf0 = a0 * cs - a1 * sn,
          hf1 = a0 * sn + a1 * cs;
        // GGUF: adjacent pairs (2i, 2i+1)
        const b0 = kg[h * hd + 2 * i]!,
          b1 = kg[h * hd + 2 * i + 1]!;
        const g0 = b0 * cs - b1 * sn,
          g1 = b0 * sn + b1 * cs;
        assert.ok(Math.abs(hf0 - g0) < 1e-4 && Math.abs(hf1 - g1) < 1e-4, `head ${h} pair ${i}`);
      }
    }
  } finally {
    closeSync(fd);
    src.close();
  }
});

function expectModelError(path: string, re: RegExp) {
  assert.throws(
    () => openModel(path),
    (e: unknown) => {
      assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${String(e)}`);
      assert.match((e as Error).message, re);
      return true;
    },
  );
}

test('HF directories: clear errors', async () => {
  const base = join(tmp, 'err-base');
  await writeSyntheticSafetensors({ shape: 'tiny', dtype: 'f32', seed: 5, out: base, nLayers: 1 });
  const cfg = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Record<string, unknown>;
  const withCfg = (name: string, edit: (c: Record<string, unknown>) => void) => {
    const dir = join(tmp, name);
    rmSync(dir, { recursive: true, force: true });
    cpSync(base, dir, { recursive: true });
    const c = structuredClone(cfg);
    edit(c);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
    return dir;
  };
  expectModelError(
    withCfg('arch', (c) => (c.architectures = ['Qwen2ForCausalLM'])),
    /unsupported architecture 'Qwen2ForCausalLM'/,
  );
  expectModelError(
    withCfg('rope', (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 })),
    /unsupported rope_scaling type 'yarn'/,
  );
  expectModelError(
    withCfg('hidden', (c) => (c.hidden_size = 96)),
    /inconsistent shapes: tensor token_embd\.weight/,
  );
  expectModelError(
    withCfg('nolayers', (c) => delete c.num_hidden_layers),
    /missing or non-numeric num_hidden_layers/,
  );
  expectModelError(
    withCfg('more', (c) => (c.num_hidden_layers = 3)),
    /missing tensors blk\.1\./,
  );
  const untied = withCfg('tied', (c) => (c.tie_word_embeddings = true));
  // tied: lm_head.weight in the file is ignored and the head reuses token_embd
  const m = openModel(untied);
  assert.equal(m.has('output.weight'), false);
  m.close();

  const noCfg = join(tmp, 'nocfg');
  mkdirSync(noCfg, { recursive: true });
  expectModelError(noCfg, /no config\.json/);
  const noWeights = withCfg('noweights', () => {});
  rmSync(join(noWeights, 'model.safetensors'));
  expectModelError(noWeights, /no model\.safetensors/);
  const trunc = withCfg('trunc', () => {});
  truncateSync(join(trunc, 'model.safetensors'), statSync(join(trunc, 'model.safetensors')).size - 1000);
  expectModelError(trunc, /truncated/);
  const garbage = withCfg('garbage', () => {});
  writeFileSync(join(garbage, 'model.safetensors'), Buffer.from('not a safetensors file at all, just text'));
  expectModelError(garbage, /safetensors header|truncated or not safetensors/);
});

test('byte-level BPE tokenizer.json (Llama 3 style) -> gpt2 TokenizerSpec', async () => {
  const d = join(tmp, 'bpe-hf');
  await writeSyntheticSafetensors({ shape: 'tiny', dtype: 'f32', seed: 5, out: d, nLayers: 1 });
  const vocab: Record<string, number> = { a: 0, b: 1, ab: 2, Ġ: 3, Ġab: 4 };
  const tj = {
    version: '1.0',
    added_tokens: [
      { id: 1000, content: '<|begin_of_text|>', special: true },
      { id: 1001, content: '<|end_of_text|>', special: true },
      { id: 1002, content: '<|eot_id|>', special: true },
      { id: 1003, content: 'odsi', special: false },
    ],
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [1000], tokens: ['<|begin_of_text|>'] } },
    },
    decoder: { type: 'ByteLevel' },
    model: { type: 'BPE', vocab, merges: [['a', 'b'], 'Ġ ab'], byte_fallback: false },
  };
  writeFileSync(join(d, 'tokenizer.json'), JSON.stringify(tj));
  writeFileSync(
    join(d, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>', chat_template: '{{ messages }}' }),
  );
  const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
  cfg.eos_token_id = [1001, 1002];
  writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
  const m = openModel(d);
  const t = m.tokenizer!;
  m.close();
  assert.equal(t.model, 'gpt2');
  assert.equal(t.pre, 'llama-bpe');
  assert.equal(t.tokens.length, 1024); // padded to the embedding rows
  assert.equal(t.tokens[2], 'ab');
  assert.equal(t.tokens[500], '[PAD500]');
  assert.equal(t.tokenTypes![500], 5);
  assert.equal(t.tokenTypes![1000], 3);
  assert.equal(t.tokenTypes![1003], 4);
  assert.deepEqual(t.merges, ['a b', 'Ġ ab']);
  assert.equal(t.bosId, 1000);
  assert.equal(t.eosId, 1002);
  assert.deepEqual(t.eotIds, [1001]);
  assert.equal(t.addBos, true);
  assert.equal(t.chatTemplate, '{{ messages }}');
  assert.equal(t.scores, undefined);
});
