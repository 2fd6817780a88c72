// Writes a Hugging Face model directory (config.json, safetensors with HF names, optional
// shards + index, tokenizer files) from tensors in GGUF naming/layout: Q/K rows get the inverse
// of llama.cpp's permutation, so loading the directory back (hf.ts) gives the same bytes.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TensorData } from './gguf-writer.js';
import { ggufToHfName, permuteHeads, permuteRows } from './hf.js';
import { ROPE_FREQS } from './rope.js';
import { stDtypeOf, writeSafetensors, type StTensorSpec } from './safetensors.js';
import { ModelFormatError, type GgmlType, type ModelConfig, type TokenizerSpec } from './types.js';

export interface HfTensorSpec {
  /** GGUF name */
  name: string;
  shape: number[];
  type: GgmlType;
  /** bytes in GGUF layout */
  data: () => TensorData | Promise<TensorData>;
}

export interface HfWriteOptions {
  /** split into shards of about this many bytes (with model.safetensors.index.json) */
  shardBytes?: number;
  /** files to write beside the weights (tokenizer.json, tokenizer_config.json, ...) */
  extraFiles?: Record<string, string>;
  onProgress?: (done: number, total: number) => void;
}

export function hfConfigJson(c: ModelConfig, dtype: string, tok?: TokenizerSpec): Record<string, unknown> {
  const rs = c.ropeScaling;
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    _name_or_path: c.name,
    hidden_size: c.dim,
    intermediate_size: c.ffnDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.contextLength,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    rope_scaling:
      rs?.type === 'llama3'
        ? {
            rope_type: 'llama3',
            factor: rs.factor,
            low_freq_factor: rs.lowFreqFactor,
            high_freq_factor: rs.highFreqFactor,
            original_max_position_embeddings: rs.originalContext,
          }
        : rs?.type === 'linear'
          ? { rope_type: 'linear', factor: rs.factor }
          : null,
    tie_word_embeddings: c.tiedEmbeddings,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16',
    bos_token_id: tok?.bosId,
    eos_token_id: tok?.eosId,
  };
}

async function collect(d: TensorData): Promise<Uint8Array> {
  if (d instanceof Uint8Array) return d;
  const parts = [...d];
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/** Write `dir` as a HF Llama model directory. rope_freqs is dropped (config.json carries it). */
export async function writeHfModel(
  dir: string,
  c: ModelConfig,
  tensors: HfTensorSpec[],
  tok: TokenizerSpec | undefined,
  opts: HfWriteOptions = {},
): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const specs: (StTensorSpec & { bytes: number })[] = [];
  let dtype = 'F32';
  for (const t of tensors) {
    if (t.name === ROPE_FREQS) continue;
    const hfName = ggufToHfName(t.name);
    if (!hfName) throw new ModelFormatError(`no Hugging Face name for tensor ${t.name}`);
    const st = stDtypeOf(t.type);
    if (t.shape.length === 2) dtype = st;
    const heads = t.shape.length === 2 ? permuteHeads(t.name, c) : undefined;
    const data = heads ? async () => permuteRows(await collect(await t.data()), t.shape[0]!, heads, false) : t.data;
    specs.push({ name: hfName, dtype: st, shape: t.shape, data, bytes: t.shape.reduce((a, b) => a * b, 1) * (st === 'F32' ? 4 : 2) });
  }
  const shards: (typeof specs)[] = [];
  const limit = opts.shardBytes ?? Infinity;
  let cur: typeof specs = [];
  let size = 0;
  for (const s of specs) {
    if (cur.length && size + s.bytes > limit) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(s);
    size += s.bytes;
  }
  if (cur.length) shards.push(cur);
  const total = specs.reduce((a, s) => a + s.bytes, 0);
  let before = 0;
  const meta = { format: 'pt' };
  if (shards.length === 1) {
    await writeSafetensors(join(dir, 'model.safetensors'), shards[0]!, meta, (d) => opts.onProgress?.(d, total));
  } else {
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < shards.length; i++) {
      const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
      for (const s of shards[i]!) weightMap[s.name] = file;
      const base = before;
      await writeSafetensors(join(dir, file), shards[i]!, meta, (d) => opts.onProgress?.(base + d, total));
      before += shards[i]!.reduce((a, s) => a + s.bytes, 0);
    }
    writeFileSync(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
    );
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(hfConfigJson(c, dtype, tok), null, 2));
  for (const [name, text] of Object.entries(opts.extraFiles ?? {})) writeFileSync(join(dir, name), text);
}

/**
 * tokenizer.json + tokenizer_config.json for a llama-SPM vocabulary (as synth.ts makes): a BPE
 * model with byte fallback whose merges build every multi-character piece from its prefix and
 * last character, in vocabulary order.
 */
export function spmTokenizerFiles(t: TokenizerSpec): Record<string, string> {
  const vocab: Record<string, number> = {};
  t.tokens.forEach((tok, i) => (vocab[tok] ??= i));
  const merges: [string, string][] = [];
  t.tokens.forEach((tok, i) => {
    const ch = [...tok];
    if (t.tokenTypes && t.tokenTypes[i] !== 1) return;
    if (ch.length < 2) return;
    const a = ch.slice(0, -1).join('');
    const b = ch[ch.length - 1]!;
    if (a in vocab && b in vocab) merges.push([a, b]);
  });
  const special = t.tokens
    .map((content, id) => ({ id, content }))
    .filter(({ id }) => t.tokenTypes?.[id] === 3 || t.tokenTypes?.[id] === 2)
    .map(({ id, content }) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const bos = t.bosId !== undefined ? t.tokens[t.bosId]! : undefined;
  const eos = t.eosId !== undefined ? t.tokens[t.eosId]! : undefined;
  const unk = t.unkId !== undefined ? t.tokens[t.unkId]! : undefined;
  const tj = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor:
      bos && t.addBos
        ? {
            type: 'TemplateProcessing',
            single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
            pair: [
              { SpecialToken: { id: bos, type_id: 0 } },
              { Sequence: { id: 'A', type_id: 0 } },
              { SpecialToken: { id: bos, type_id: 1 } },
              { Sequence: { id: 'B', type_id: 1 } },
            ],
            special_tokens: { [bos]: { id: bos, ids: [t.bosId], tokens: [bos] } },
          }
        : null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk ?? null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const tc = {
    add_bos_token: t.addBos,
    add_eos_token: t.addEos,
    bos_token: bos,
    eos_token: eos,
    unk_token: unk,
    chat_template: t.chatTemplate,
    legacy: false,
    model_max_length: 1000000,
    tokenizer_class: 'LlamaTokenizerFast',
    clean_up_tokenization_spaces: false,
  };
  return { 'tokenizer.json': JSON.stringify(tj), 'tokenizer_config.json': JSON.stringify(tc, null, 2) };
}
