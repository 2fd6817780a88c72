// Seeded random models with the exact shapes of real Llama-family checkpoints, for tests and
// benchmarks without downloading weights. Values are a pure function of (seed, tensor name,
// element index), so the GGUF and safetensors writers produce the same weights and any chunking
// gives the same stream.
//
// Scales mimic a trained model so activations stay finite over many layers: norm weights ~1,
// linear weights ~N(0, 1/in) (std 1/sqrt(in)), embeddings/LM head std 3/sqrt(dim) (logits ~N(0,9),
// peaked enough that greedy decoding is not decided by rounding noise).

import cliProgress from 'cli-progress';
import { VT } from './gguf.js';
import { spmTokenizerFiles, writeHfModel } from './hf-writer.js';
import { kv, writeGguf, type GgufKV, type GgufTensorSpec } from './gguf-writer.js';
import { byteSize } from './quant.js';
import { quantize, storedTypeFor, DTYPE_TYPES, type TargetDtype } from './quantize.js';
import { llama3RopeFactors, ROPE_FREQS } from './rope.js';
import { GgmlType, ModelFormatError, tensorNames as T, layerTensorNames, type ModelConfig, type TokenizerSpec } from './types.js';
import { Rng } from '../util/rng.js';

export const SHAPES: Record<string, ModelConfig> = {
  tiny: {
    arch: 'llama',
    name: 'odsi-tiny',
    nLayers: 4,
    dim: 128,
    ffnDim: 384,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 32,
    vocabSize: 1024,
    contextLength: 2048,
    normEps: 1e-5,
    ropeTheta: 10000,
    tiedEmbeddings: false,
  },
  'smollm2-135m': {
    arch: 'llama',
    name: 'synthetic-smollm2-135m',
    nLayers: 30,
    dim: 576,
    ffnDim: 1536,
    nHeads: 9,
    nKvHeads: 3,
    headDim: 64,
    vocabSize: 49152,
    contextLength: 8192,
    normEps: 1e-5,
    ropeTheta: 100000,
    tiedEmbeddings: true,
  },
  'llama-3.2-1b': {
    arch: 'llama',
    name: 'synthetic-llama-3.2-1b',
    nLayers: 16,
    dim: 2048,
    ffnDim: 8192,
    nHeads: 32,
    nKvHeads: 8,
    headDim: 64,
    vocabSize: 128256,
    contextLength: 131072,
    normEps: 1e-5,
    ropeTheta: 500000,
    tiedEmbeddings: true,
    ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 },
  },
  'tinyllama-1.1b': {
    arch: 'llama',
    name: 'synthetic-tinyllama-1.1b',
    nLayers: 22,
    dim: 2048,
    ffnDim: 5632,
    nHeads: 32,
    nKvHeads: 4,
    headDim: 64,
    vocabSize: 32000,
    contextLength: 2048,
    normEps: 1e-5,
    ropeTheta: 10000,
    tiedEmbeddings: false,
  },
};

export type SynthDtype = 'f32' | 'f16' | 'q8_0' | 'q4_0';

export interface SynthOptions {
  shape: string;
  dtype: SynthDtype;
  seed: number;
  out: string;
  /** fewer layers than the real shape (same per-layer sizes) */
  nLayers?: number;
  /** show a progress bar (default: when stderr is a TTY and the file is large) */
  progress?: boolean;
  /** change hyper-parameters of the shape (tests: e.g. llama3 rope scaling on 'tiny') */
  overrides?: Partial<ModelConfig>;
}

export function synthConfig(shape: string, nLayers?: number, overrides?: Partial<ModelConfig>): ModelConfig {
  const base = SHAPES[shape];
  if (!base) throw new ModelFormatError(`unknown synthetic shape '${shape}' (have: ${Object.keys(SHAPES).join(', ')})`);
  const c: ModelConfig = { ...base, ...overrides };
  if (nLayers !== undefined) {
    if (!Number.isInteger(nLayers) || nLayers < 1) throw new ModelFormatError(`bad layer count ${nLayers}`);
    c.nLayers = nLayers;
  }
  return c;
}

/** Every tensor of a synthetic model, in file order, with row-major shapes (GGUF names/layout). */
export function synthTensorList(c: ModelConfig): { name: string; shape: number[] }[] {
  const out: { name: string; shape: number[] }[] = [{ name: T.embed, shape: [c.vocabSize, c.dim] }];
  if (c.ropeScaling?.type === 'llama3') out.push({ name: ROPE_FREQS, shape: [c.headDim / 2] });
  const q = c.nHeads * c.headDim;
  const kvd = c.nKvHeads * c.headDim;
  for (let l = 0; l < c.nLayers; l++) {
    const [an, wq, wk, wv, wo, fn, g, u, d] = layerTensorNames(l) as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    out.push(
      { name: an, shape: [c.dim] },
      { name: wq, shape: [q, c.dim] },
      { name: wk, shape: [kvd, c.dim] },
      { name: wv, shape: [kvd, c.dim] },
      { name: wo, shape: [c.dim, q] },
      { name: fn, shape: [c.dim] },
      { name: g, shape: [c.ffnDim, c.dim] },
      { name: u, shape: [c.ffnDim, c.dim] },
      { name: d, shape: [c.dim, c.ffnDim] },
    );
  }
  out.push({ name: T.outputNorm, shape: [c.dim] });
  if (!c.tiedEmbeddings) out.push({ name: T.output, shape: [c.vocabSize, c.dim] });
  return out;
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Values of a synthetic tensor in chunks of whole rows (about `chunkValues` each).
 * Deterministic in (seed, name); independent of chunking.
 */
export function* synthTensorChunks(
  c: ModelConfig,
  name: string,
  shape: number[],
  seed: number,
  chunkValues = 1 << 22,
): Generator<Float32Array> {
  const n = shape.reduce((a, b) => a * b, 1);
  if (name === ROPE_FREQS) {
    if (c.ropeScaling?.type !== 'llama3') throw new ModelFormatError('rope_freqs only for llama3 scaling');
    yield llama3RopeFactors(c.headDim, c.ropeTheta, c.ropeScaling);
    return;
  }
  const isNorm = shape.length === 1;
  const inDim = shape[shape.length - 1]!;
  const std = isNorm ? 0.05 : name === T.embed || name === T.output ? 3 / Math.sqrt(c.dim) : 1 / Math.sqrt(inDim);
  const mean = isNorm ? 1 : 0;
  // Irwin-Hall of four uniform bytes from one 32-bit draw: mean 510, sd sqrt(4*(256^2-1)/12)
  const scale = std / Math.sqrt((4 * (256 * 256 - 1)) / 12);
  const rng = new Rng((Math.imul(fnv1a(name), 0x9e3779b1) ^ Math.imul(seed >>> 0, 0x85ebca6b) ^ 0x27d4eb2f) >>> 0);
  const rowsPerChunk = Math.max(1, Math.floor(chunkValues / inDim));
  const chunkLen = isNorm ? n : rowsPerChunk * inDim;
  for (let start = 0; start < n; start += chunkLen) {
    const len = Math.min(chunkLen, n - start);
    const out = new Float32Array(len);
    for (let i = 0; i < len; i++) {
      const t = rng.nextU32();
      const s = (t & 255) + ((t >>> 8) & 255) + ((t >>> 16) & 255) + (t >>> 24);
      out[i] = mean + (s - 510) * scale;
    }
    yield out;
  }
}

export function synthTensorF32(c: ModelConfig, name: string, shape: number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let o = 0;
  for (const ch of synthTensorChunks(c, name, shape, seed)) {
    out.set(ch, o);
    o += ch.length;
  }
  return out;
}

/**
 * A llama-SPM vocabulary of exactly `vocabSize` tokens that llama.cpp accepts: <unk>, <s>, </s>,
 * the 256 byte tokens <0x00>..<0xFF>, then unique pieces ('▁', characters, '▁'+characters, then
 * lowercase strings of growing length, bare and '▁'-prefixed). Every multi-character piece's
 * prefix is also a piece, so SPM merges can build it; scores fall with index.
 */
export function synthTokenizer(vocabSize: number): TokenizerSpec {
  if (vocabSize < 259 + 64) throw new ModelFormatError(`vocab ${vocabSize} too small for a synthetic SPM tokenizer`);
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const seen = new Set(tokens);
  const add = (p: string) => {
    if (tokens.length < vocabSize && !seen.has(p)) {
      seen.add(p);
      tokens.push(p);
    }
  };
  const lower = 'abcdefghijklmnopqrstuvwxyz';
  const chars = lower + 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?\'-:;"()';
  add('▁');
  for (const ch of chars) add(ch);
  for (const ch of chars) add('▁' + ch);
  let level = [...lower];
  while (tokens.length < vocabSize) {
    const next: string[] = [];
    for (const p of level) {
      for (const ch of lower) {
        const w = p + ch;
        next.push(w);
        add(w);
        add('▁' + w);
        if (tokens.length >= vocabSize) break;
      }
      if (tokens.length >= vocabSize) break;
    }
    level = next;
  }
  const scores = new Float32Array(vocabSize);
  const types = new Int32Array(vocabSize);
  for (let i = 0; i < vocabSize; i++) {
    if (i === 0) types[i] = 2;
    else if (i < 3) types[i] = 3;
    else if (i < 259) types[i] = 6;
    else {
      types[i] = 1;
      scores[i] = -(i - 259);
    }
  }
  return {
    model: 'llama',
    tokens,
    scores,
    tokenTypes: types,
    bosId: 1,
    eosId: 2,
    unkId: 0,
    addBos: true,
    addEos: false,
    addSpacePrefix: true,
    chatTemplate: SYNTH_CHAT_TEMPLATE,
  };
}

/** Zephyr-style template (as TinyLlama-chat uses), so chat endpoints have something to apply. */
export const SYNTH_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

const FILE_TYPE: Record<SynthDtype | 'bf16', number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** GGUF metadata for a Llama config (llama.cpp key names). */
export function llamaGgufMetadata(c: ModelConfig, fileType: number, tok?: TokenizerSpec): GgufKV[] {
  const p = 'llama.';
  const md: GgufKV[] = [
    kv.str('general.architecture', 'llama'),
    kv.str('general.name', c.name),
    kv.u32('general.file_type', fileType),
    kv.u32(p + 'vocab_size', c.vocabSize),
    kv.u32(p + 'context_length', c.contextLength),
    kv.u32(p + 'embedding_length', c.dim),
    kv.u32(p + 'block_count', c.nLayers),
    kv.u32(p + 'feed_forward_length', c.ffnDim),
    kv.u32(p + 'rope.dimension_count', c.headDim),
    kv.u32(p + 'attention.head_count', c.nHeads),
    kv.u32(p + 'attention.head_count_kv', c.nKvHeads),
    kv.u32(p + 'attention.key_length', c.headDim),
    kv.u32(p + 'attention.value_length', c.headDim),
    kv.f32(p + 'attention.layer_norm_rms_epsilon', c.normEps),
    kv.f32(p + 'rope.freq_base', c.ropeTheta),
  ];
  if (c.ropeScaling?.type === 'linear') {
    md.push(kv.str(p + 'rope.scaling.type', 'linear'), kv.f32(p + 'rope.scaling.factor', c.ropeScaling.factor));
  } else if (c.ropeScaling?.type === 'llama3') {
    // llama.cpp reads the rope_freqs tensor; these keys (ignored by it) keep the config exact
    const s = c.ropeScaling;
    md.push(
      kv.str('odsi.rope.scaling.type', 'llama3'),
      kv.f32('odsi.rope.scaling.factor', s.factor),
      kv.f32('odsi.rope.scaling.low_freq_factor', s.lowFreqFactor),
      kv.f32('odsi.rope.scaling.high_freq_factor', s.highFreqFactor),
      kv.u32('odsi.rope.scaling.original_context_length', s.originalContext),
    );
  }
  if (tok) md.push(...tokenizerGgufMetadata(tok));
  return md;
}

export function tokenizerGgufMetadata(t: TokenizerSpec): GgufKV[] {
  const md: GgufKV[] = [kv.str('tokenizer.ggml.model', t.model === 'gpt2' ? 'gpt2' : 'llama')];
  if (t.pre) md.push(kv.str('tokenizer.ggml.pre', t.pre));
  md.push(kv.arr('tokenizer.ggml.tokens', VT.STRING, t.tokens));
  if (t.scores) md.push(kv.arr('tokenizer.ggml.scores', VT.F32, t.scores));
  if (t.tokenTypes) md.push(kv.arr('tokenizer.ggml.token_type', VT.I32, t.tokenTypes));
  if (t.merges) md.push(kv.arr('tokenizer.ggml.merges', VT.STRING, t.merges));
  const id = (k: string, v?: number) => {
    if (v !== undefined) md.push(kv.u32(k, v));
  };
  id('tokenizer.ggml.bos_token_id', t.bosId);
  id('tokenizer.ggml.eos_token_id', t.eosId);
  id('tokenizer.ggml.unknown_token_id', t.unkId);
  id('tokenizer.ggml.padding_token_id', t.padId);
  if (t.eotIds?.length) id('tokenizer.ggml.eot_token_id', t.eotIds[0]);
  md.push(kv.bool('tokenizer.ggml.add_bos_token', t.addBos), kv.bool('tokenizer.ggml.add_eos_token', t.addEos));
  if (t.addSpacePrefix !== undefined) md.push(kv.bool('tokenizer.ggml.add_space_prefix', t.addSpacePrefix));
  if (t.chatTemplate) md.push(kv.str('tokenizer.chat_template', t.chatTemplate));
  return md;
}

/** Encode a stream of f32 chunks (whole rows, multiples of 32) as stored type `t`. */
export function* encodeChunks(t: GgmlType, chunks: Iterable<Float32Array>): Generator<Uint8Array> {
  for (const ch of chunks) yield quantize(t, ch);
}

/** A progress bar on a TTY for writes over 64 MiB; a no-op otherwise. */
export function progressFor(total: number, label: string, force?: boolean): ((done: number, total: number) => void) & { stop(): void } {
  const show = force ?? (process.stderr.isTTY === true && total > 64 << 20);
  if (!show) return Object.assign(() => {}, { stop() {} });
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(Math.ceil(total / 2 ** 20), 0);
  let last = 0;
  const fn = (done: number) => {
    const mib = Math.floor(done / 2 ** 20);
    if (mib !== last) bar.update((last = mib));
  };
  return Object.assign(fn, {
    stop: () => {
      bar.update(Math.ceil(total / 2 ** 20));
      bar.stop();
    },
  });
}

function totalBytes(specs: { shape: number[]; type: GgmlType }[]): number {
  return specs.reduce(
    (t, s) =>
      t +
      Math.ceil(
        byteSize(
          s.type,
          s.shape.reduce((a, b) => a * b, 1),
        ) / 32,
      ) *
        32,
    0,
  );
}

/** Write a synthetic model as GGUF (llama.cpp-loadable, with a synthetic SPM tokenizer). */
export async function writeSyntheticGguf(opts: SynthOptions): Promise<void> {
  const c = synthConfig(opts.shape, opts.nLayers, opts.overrides);
  const want = DTYPE_TYPES[opts.dtype as TargetDtype];
  if (want === undefined || opts.dtype === ('bf16' as SynthDtype))
    throw new ModelFormatError(`unsupported dtype '${opts.dtype}' (use f32, f16, q8_0 or q4_0)`);
  const tok = synthTokenizer(c.vocabSize);
  const specs: GgufTensorSpec[] = synthTensorList(c).map(({ name, shape }) => {
    const type = storedTypeFor(want, shape);
    return { name, shape, type, data: () => encodeChunks(type, synthTensorChunks(c, name, shape, opts.seed)) };
  });
  const progress = progressFor(totalBytes(specs), `synth ${opts.shape} ${opts.dtype}`, opts.progress);
  try {
    await writeGguf(opts.out, llamaGgufMetadata(c, FILE_TYPE[opts.dtype], tok), specs, { onProgress: progress });
  } finally {
    progress.stop();
  }
}

export interface SynthSafetensorsOptions extends Omit<SynthOptions, 'dtype'> {
  dtype: 'f32' | 'f16' | 'bf16';
  /** split into shards of about this many bytes */
  shardBytes?: number;
}

/**
 * The same synthetic weights as writeSyntheticGguf, as a HF directory at `out` (config.json,
 * safetensors, tokenizer.json, tokenizer_config.json). 1-D tensors stay F32 as in the GGUF, so
 * both load to identical readF32 values for f32/f16.
 */
export async function writeSyntheticSafetensors(opts: SynthSafetensorsOptions): Promise<void> {
  const c = synthConfig(opts.shape, opts.nLayers, opts.overrides);
  const want = DTYPE_TYPES[opts.dtype];
  if (want === undefined || !['f32', 'f16', 'bf16'].includes(opts.dtype))
    throw new ModelFormatError(`unsupported safetensors dtype '${opts.dtype}' (use f32, f16 or bf16)`);
  const tok = synthTokenizer(c.vocabSize);
  const specs = synthTensorList(c).map(({ name, shape }) => {
    const type = shape.length < 2 ? GgmlType.F32 : want;
    return { name, shape, type, data: () => encodeChunks(type, synthTensorChunks(c, name, shape, opts.seed)) };
  });
  const progress = progressFor(totalBytes(specs), `synth ${opts.shape} ${opts.dtype}`, opts.progress);
  try {
    await writeHfModel(opts.out, c, specs, tok, { shardBytes: opts.shardBytes, extraFiles: spmTokenizerFiles(tok), onProgress: progress });
  } finally {
    progress.stop();
  }
}
