// Hugging Face model directories (config.json + model.safetensors or sharded safetensors with
// model.safetensors.index.json + tokenizer.json / tokenizer_config.json) as a WeightSource.
//
// Engines see one layout whatever the source: tensors are exposed under GGUF names, and the
// Q/K projection rows are permuted the way llama.cpp's converter does (HF keeps each head's
// rotary halves [x0..x(d/2-1) | x(d/2)..x(d-1)]; GGUF interleaves them as adjacent pairs), so
// "normal" (adjacent-pair) RoPE applies to both. Llama 3 rope scaling is also exposed as the
// virtual F32 tensor rope_freqs.weight, as llama.cpp's converter writes it.

import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { dequantize, typeName } from './quant.js';
import { llama3RopeFactors, ROPE_FREQS } from './rope.js';
import { ggmlTypeOf, preadExact, readSafetensorsHeader, type StEntry } from './safetensors.js';
import {
  GgmlType,
  ModelFormatError,
  type ModelConfig,
  type RopeScaling,
  type TensorInfo,
  type TokenizerSpec,
  type WeightSource,
} from './types.js';
import { validateConfig } from './gguf.js';

const SUPPORTED_ARCHS = ['LlamaForCausalLM', 'MistralForCausalLM'];

/** HF parameter name -> GGUF name (null: not a weight we use) */
export function hfToGgufName(n: string): string | null {
  if (n === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (n === 'model.norm.weight') return 'output_norm.weight';
  if (n === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(n);
  if (!m) return null;
  const part: Record<string, string> = {
    input_layernorm: 'attn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    post_attention_layernorm: 'ffn_norm',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  const p = part[m[2]!];
  return p ? `blk.${m[1]}.${p}.${m[3]}` : null;
}

export function ggufToHfName(n: string): string | null {
  if (n === 'token_embd.weight') return 'model.embed_tokens.weight';
  if (n === 'output_norm.weight') return 'model.norm.weight';
  if (n === 'output.weight') return 'lm_head.weight';
  const m = /^blk\.(\d+)\.(.+)\.(weight|bias)$/.exec(n);
  if (!m) return null;
  const part: Record<string, string> = {
    attn_norm: 'input_layernorm',
    attn_q: 'self_attn.q_proj',
    attn_k: 'self_attn.k_proj',
    attn_v: 'self_attn.v_proj',
    attn_output: 'self_attn.o_proj',
    ffn_norm: 'post_attention_layernorm',
    ffn_gate: 'mlp.gate_proj',
    ffn_up: 'mlp.up_proj',
    ffn_down: 'mlp.down_proj',
  };
  const p = part[m[2]!];
  return p ? `model.layers.${m[1]}.${p}.${m[3]}` : null;
}

/** number of heads whose rows a GGUF tensor's permutation works on (q: heads, k: kv heads) */
export function permuteHeads(ggufName: string, c: ModelConfig): number | undefined {
  if (/^blk\.\d+\.attn_q\./.test(ggufName)) return c.nHeads;
  if (/^blk\.\d+\.attn_k\./.test(ggufName)) return c.nKvHeads;
  return undefined;
}

/**
 * Reorder the rows of a [rows, rowBytes] byte matrix between HF and GGUF Q/K layouts.
 * Within each head of d rows: GGUF row 2i+j = HF row j*(d/2)+i (toGguf); the inverse otherwise.
 */
export function permuteRows(src: Uint8Array, rows: number, nHeads: number, toGguf: boolean): Uint8Array {
  if (rows % nHeads !== 0 || (rows / nHeads) % 2 !== 0) throw new ModelFormatError(`cannot permute ${rows} rows into ${nHeads} heads`);
  const rowBytes = src.byteLength / rows;
  const d = rows / nHeads;
  const out = new Uint8Array(src.byteLength);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < d / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const g = h * d + 2 * i + j;
        const hf = h * d + j * (d / 2) + i;
        const [from, to] = toGguf ? [hf, g] : [g, hf];
        out.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

type Json = Record<string, unknown>;
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function configFromHf(j: Json, path: string, fallbackName: string): ModelConfig {
  const archs = (j.architectures as string[] | undefined) ?? [];
  const arch = archs[0] ?? String(j.model_type ?? 'unknown');
  if (!SUPPORTED_ARCHS.includes(arch) && !(archs.length === 0 && (j.model_type === 'llama' || j.model_type === 'mistral'))) {
    throw new ModelFormatError(`unsupported architecture '${arch}' (odsi runs ${SUPPORTED_ARCHS.join(', ')})`, path);
  }
  const need = (k: string): number => {
    const v = j[k];
    if (!isNum(v)) throw new ModelFormatError(`config.json: missing or non-numeric ${k}`, path);
    return v;
  };
  const dim = need('hidden_size');
  const nHeads = need('num_attention_heads');
  const c: ModelConfig = {
    arch: 'llama',
    name: typeof j._name_or_path === 'string' && j._name_or_path ? basename(j._name_or_path) : fallbackName,
    nLayers: need('num_hidden_layers'),
    dim,
    ffnDim: need('intermediate_size'),
    nHeads,
    nKvHeads: isNum(j.num_key_value_heads) ? j.num_key_value_heads : nHeads,
    headDim: isNum(j.head_dim) ? j.head_dim : dim / nHeads,
    vocabSize: need('vocab_size'),
    contextLength: isNum(j.max_position_embeddings) ? j.max_position_embeddings : 2048,
    normEps: isNum(j.rms_norm_eps) ? j.rms_norm_eps : 1e-6,
    ropeTheta: isNum(j.rope_theta) ? j.rope_theta : 10000,
    tiedEmbeddings: j.tie_word_embeddings === true,
  };
  const rs = j.rope_scaling as Json | null | undefined;
  if (rs) {
    const type = String(rs.rope_type ?? rs.type);
    const f = (k: string) => {
      if (!isNum(rs[k])) throw new ModelFormatError(`config.json: rope_scaling.${k} missing`, path);
      return rs[k] as number;
    };
    let s: RopeScaling | undefined;
    if (type === 'llama3') {
      s = {
        type: 'llama3',
        factor: f('factor'),
        lowFreqFactor: f('low_freq_factor'),
        highFreqFactor: f('high_freq_factor'),
        originalContext: f('original_max_position_embeddings'),
      };
    } else if (type === 'linear') s = { type: 'linear', factor: f('factor') };
    else if (type !== 'default')
      throw new ModelFormatError(`unsupported rope_scaling type '${type}' (odsi supports llama3 and linear)`, path);
    if (s) c.ropeScaling = s;
  }
  validateConfig(c, path);
  return c;
}

interface HfTensor {
  info: TensorInfo;
  fd: number;
  file: string;
  permute?: number;
  virtual?: Uint8Array;
}

/** A HF model directory opened for lazy reads. */
export class HfModel implements WeightSource {
  readonly format = 'safetensors' as const;
  readonly config: ModelConfig;
  readonly tokenizer?: TokenizerSpec;
  readonly metadata: Record<string, unknown>;
  private tensors = new Map<string, HfTensor>();
  private fds: number[] = [];

  constructor(readonly path: string) {
    const cfgPath = join(path, 'config.json');
    let cj: Json;
    try {
      cj = JSON.parse(readFileSync(cfgPath, 'utf8')) as Json;
    } catch (e) {
      throw new ModelFormatError(`cannot read config.json: ${(e as Error).message}`, path);
    }
    this.config = configFromHf(cj, path, basename(path));
    this.metadata = cj;
    try {
      this.openShards();
      if (this.config.ropeScaling?.type === 'llama3') {
        const f = llama3RopeFactors(this.config.headDim, this.config.ropeTheta, this.config.ropeScaling);
        const bytes = new Uint8Array(f.buffer.slice(0));
        this.tensors.set(ROPE_FREQS, {
          info: { name: ROPE_FREQS, shape: [f.length], type: GgmlType.F32, offset: -1, byteLength: bytes.byteLength },
          fd: -1,
          file: '(computed from config.json rope_scaling)',
          virtual: bytes,
        });
      }
      this.tokenizer = tokenizerFromHf(path, this.config, cj);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private openShards(): void {
    const single = join(this.path, 'model.safetensors');
    const index = join(this.path, 'model.safetensors.index.json');
    let files: string[];
    if (existsSync(index)) {
      let wm: Record<string, string>;
      try {
        wm = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
      } catch (e) {
        throw new ModelFormatError(`bad model.safetensors.index.json: ${(e as Error).message}`, this.path);
      }
      if (!wm || typeof wm !== 'object') throw new ModelFormatError('model.safetensors.index.json has no weight_map', this.path);
      files = [...new Set(Object.values(wm))].sort();
    } else if (existsSync(single)) files = ['model.safetensors'];
    else throw new ModelFormatError('no model.safetensors or model.safetensors.index.json', this.path);
    for (const f of files) {
      const p = join(this.path, f);
      let fd: number;
      try {
        fd = openSync(p, 'r');
      } catch (e) {
        throw new ModelFormatError(`cannot open shard ${f}: ${(e as Error).message}`, this.path);
      }
      this.fds.push(fd);
      const h = readSafetensorsHeader(fd, p);
      for (const e of h.entries.values()) this.add(e, fd, p);
    }
  }

  private add(e: StEntry, fd: number, file: string): void {
    const name = hfToGgufName(e.name);
    if (!name) return; // e.g. rotary_emb.inv_freq buffers
    if (name === 'output.weight' && this.config.tiedEmbeddings) return; // tied: the head reuses token_embd
    const type = ggmlTypeOf(e.dtype);
    if (type === undefined)
      throw new ModelFormatError(`tensor ${e.name} has unsupported dtype ${e.dtype} (odsi reads F32, F16, BF16)`, file);
    if (this.tensors.has(name)) throw new ModelFormatError(`duplicate tensor ${e.name}`, file);
    this.tensors.set(name, {
      info: { name, shape: e.shape, type, offset: e.offset, byteLength: e.byteLength },
      fd,
      file,
      permute: e.shape.length === 2 ? permuteHeads(name, this.config) : undefined,
    });
  }

  tensorNames(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  private get(name: string): HfTensor {
    const t = this.tensors.get(name);
    if (!t) throw new ModelFormatError(`missing tensor ${name}`, this.path);
    return t;
  }
  info(name: string): TensorInfo {
    return this.get(name).info;
  }
  readRaw(name: string): Uint8Array {
    const t = this.get(name);
    if (t.virtual) return t.virtual.slice();
    const raw = preadExact(t.fd, t.info.offset, t.info.byteLength, t.file, `tensor ${name}`);
    return t.permute ? permuteRows(raw, t.info.shape[0]!, t.permute, true) : raw;
  }
  *readRawChunks(name: string, chunkBytes = 16 << 20): Iterable<Uint8Array> {
    const t = this.get(name);
    if (t.virtual || t.permute) {
      yield this.readRaw(name);
      return;
    }
    for (let done = 0; done < t.info.byteLength;) {
      const n = Math.min(chunkBytes, t.info.byteLength - done);
      yield preadExact(t.fd, t.info.offset + done, n, t.file, `tensor ${name}`);
      done += n;
    }
  }
  readF32(name: string): Float32Array {
    const t = this.get(name);
    const n = t.info.shape.reduce((a, b) => a * b, 1);
    try {
      return dequantize(t.info.type, this.readRaw(name), n);
    } catch (e) {
      if (e instanceof ModelFormatError) throw new ModelFormatError(`tensor ${name} (${typeName(t.info.type)}): ${e.message}`, this.path);
      throw e;
    }
  }
  close(): void {
    for (const fd of this.fds) closeSync(fd);
    this.fds = [];
  }
}

export function openHfModel(path: string): WeightSource {
  return new HfModel(path);
}

// ---- tokenizer.json / tokenizer_config.json -> TokenizerSpec ----

function readJson(p: string): Json | undefined {
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as Json;
  } catch (e) {
    throw new ModelFormatError(`bad JSON: ${(e as Error).message}`, p);
  }
}

const tokContent = (v: unknown): string | undefined =>
  typeof v === 'string'
    ? v
    : v && typeof v === 'object' && typeof (v as Json).content === 'string'
      ? ((v as Json).content as string)
      : undefined;

function tokenizerFromHf(dir: string, c: ModelConfig, cfg: Json): TokenizerSpec | undefined {
  const tjPath = join(dir, 'tokenizer.json');
  if (!existsSync(tjPath)) return undefined;
  const text = readFileSync(tjPath, 'utf8');
  let tj: Json;
  try {
    tj = JSON.parse(text) as Json;
  } catch (e) {
    throw new ModelFormatError(`bad JSON: ${(e as Error).message}`, tjPath);
  }
  const tc = readJson(join(dir, 'tokenizer_config.json')) ?? {};
  const model = (tj.model ?? {}) as Json;
  const vocab = (model.vocab ?? {}) as Record<string, number>;
  const added = ((tj.added_tokens ?? []) as { id: number; content: string; special?: boolean }[]).filter((a) => typeof a.id === 'number');
  let n = c.vocabSize;
  for (const id of Object.values(vocab)) n = Math.max(n, id + 1);
  for (const a of added) n = Math.max(n, a.id + 1);
  const tokens: string[] = new Array(n);
  const types = new Int32Array(n);
  for (const [tok, id] of Object.entries(vocab)) {
    tokens[id] = tok;
    types[id] = 1;
  }
  for (const a of added) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4;
  }
  for (let i = 0; i < n; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`; // llama.cpp pads the vocab to the embedding size the same way
      types[i] = 5;
    }
  }
  const json = JSON.stringify(tj.pre_tokenizer ?? null) + JSON.stringify(tj.normalizer ?? null);
  const spm = model.byte_fallback === true || json.includes('Metaspace') || json.includes('▁');
  const kind: 'llama' | 'gpt2' = spm ? 'llama' : 'gpt2';
  const idOf = new Map<string, number>();
  tokens.forEach((t, i) => idOf.has(t) || idOf.set(t, i));
  const unkTok = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  if (kind === 'llama') {
    for (let i = 0; i < n; i++) if (/^<0x[0-9A-F]{2}>$/.test(tokens[i]!)) types[i] = 6;
    if (unkTok && idOf.has(unkTok)) types[idOf.get(unkTok)!] = 2;
  }
  const cfgId = (k: string) => {
    const v = cfg[k];
    return isNum(v) ? v : Array.isArray(v) && isNum(v[0]) ? (v[0] as number) : undefined;
  };
  const fromTc = (k: string) => {
    const s = tokContent(tc[k]);
    return s !== undefined ? idOf.get(s) : undefined;
  };
  const bosId = fromTc('bos_token') ?? cfgId('bos_token_id');
  const eosId = fromTc('eos_token') ?? cfgId('eos_token_id');
  const eot = new Set<number>();
  if (Array.isArray(cfg.eos_token_id)) for (const v of cfg.eos_token_id) if (isNum(v)) eot.add(v);
  for (const s of ['<|eot_id|>', '<|im_end|>', '<|end|>', '<|endoftext|>', '<end_of_turn>']) {
    const id = idOf.get(s);
    if (id !== undefined && types[id] === 3) eot.add(id);
  }
  if (eosId !== undefined) eot.delete(eosId);
  let addBos: boolean;
  if (typeof tc.add_bos_token === 'boolean') addBos = tc.add_bos_token;
  else if (bosId !== undefined && JSON.stringify(tj.post_processor ?? null).includes(JSON.stringify(tokens[bosId]))) addBos = true;
  else addBos = kind === 'llama';
  let chatTemplate: string | undefined;
  if (typeof tc.chat_template === 'string') chatTemplate = tc.chat_template;
  else if (Array.isArray(tc.chat_template)) {
    const list = tc.chat_template as { name: string; template: string }[];
    chatTemplate = (list.find((t) => t.name === 'default') ?? list[0])?.template;
  }
  const mergesRaw = (model.merges ?? []) as (string | [string, string])[];
  const merges = mergesRaw.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
  const scores = new Float32Array(n);
  if (kind === 'llama') for (let i = 0; i < n; i++) scores[i] = types[i] === 1 ? -i : 0;
  let pre: string | undefined;
  if (kind === 'gpt2') {
    const pj = JSON.stringify(tj.pre_tokenizer ?? null);
    if (pj.includes("(?i:'s|'t|'re|'ve|'m|'ll|'d)")) pre = 'llama-bpe';
    else if (pj.includes('"Digits"') && pj.includes('"individual_digits":true')) pre = 'smollm';
    else pre = 'default';
  }
  return {
    model: kind,
    tokens,
    scores: kind === 'llama' ? scores : undefined,
    tokenTypes: types,
    merges: merges.length ? merges : undefined,
    pre,
    bosId,
    eosId,
    unkId: unkTok !== undefined ? idOf.get(unkTok) : undefined,
    padId: fromTc('pad_token'),
    addBos,
    addEos: tc.add_eos_token === true,
    addSpacePrefix:
      kind === 'llama'
        ? json.includes('Prepend') || json.includes('"add_prefix_space":true') || json.includes('prepend_scheme')
        : undefined,
    chatTemplate,
    hfTokenizerJson: text,
    eotIds: eot.size ? [...eot] : undefined,
  };
}
