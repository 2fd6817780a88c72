// Types at the model boundary: every loader (GGUF, safetensors, synthetic) produces these,
// every engine consumes them. Tensor names are canonical GGUF names (see tensorNames below).

/** ggml tensor type ids, as stored in GGUF. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
}

export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number }
  | { type: 'linear'; factor: number };

/** Hyper-parameters of a Llama-family decoder. */
export interface ModelConfig {
  arch: 'llama';
  name: string;
  nLayers: number;
  dim: number;
  ffnDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  contextLength: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  /** true when the LM head reuses token_embd.weight */
  tiedEmbeddings: boolean;
}

/**
 * One stored tensor. `shape` is in row-major (PyTorch) order: a linear layer's weight is
 * [out, in], each of the `out` rows holding `in` contiguous values (GGUF's ne is the reverse).
 */
export interface TensorInfo {
  name: string;
  shape: number[];
  type: GgmlType;
  /** absolute byte offset in the file that holds it */
  offset: number;
  byteLength: number;
}

/** Tokenizer description carried by a model file (GGUF metadata or HF tokenizer files). */
export interface TokenizerSpec {
  /** 'llama' = SentencePiece-style, 'gpt2' = byte-level BPE */
  model: 'llama' | 'gpt2';
  tokens: string[];
  scores?: Float32Array;
  /** per-token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) */
  tokenTypes?: Int32Array;
  merges?: string[];
  /** GGUF tokenizer.ggml.pre, e.g. 'llama-bpe', 'smollm', 'default' */
  pre?: string;
  bosId?: number;
  eosId?: number;
  unkId?: number;
  padId?: number;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix?: boolean;
  chatTemplate?: string;
  /** the HF tokenizer.json text, when the model came from a HF directory */
  hfTokenizerJson?: string;
  eotIds?: number[];
}

/**
 * Lazy access to a model's weights. Implementations read tensor bytes on demand, so a node
 * serving layers [a,b) never reads or holds the others.
 */
export interface WeightSource {
  readonly path: string;
  readonly format: 'gguf' | 'safetensors' | 'memory';
  readonly config: ModelConfig;
  readonly tokenizer?: TokenizerSpec;
  /** raw metadata (GGUF key/values or HF config.json) for display */
  readonly metadata: Record<string, unknown>;
  tensorNames(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** raw stored bytes (quantized blocks stay as stored) */
  readRaw(name: string): Uint8Array;
  /** dequantized values, row-major */
  readF32(name: string): Float32Array;
  /** raw stored bytes in bounded chunks (hashing multi-GB tensors without holding them) */
  readRawChunks?(name: string, chunkBytes?: number): Iterable<Uint8Array>;
  close(): void;
}

/** Canonical tensor names (GGUF naming). */
export const tensorNames = {
  embed: 'token_embd.weight',
  outputNorm: 'output_norm.weight',
  output: 'output.weight',
  attnNorm: (l: number) => `blk.${l}.attn_norm.weight`,
  q: (l: number) => `blk.${l}.attn_q.weight`,
  k: (l: number) => `blk.${l}.attn_k.weight`,
  v: (l: number) => `blk.${l}.attn_v.weight`,
  o: (l: number) => `blk.${l}.attn_output.weight`,
  ffnNorm: (l: number) => `blk.${l}.ffn_norm.weight`,
  gate: (l: number) => `blk.${l}.ffn_gate.weight`,
  up: (l: number) => `blk.${l}.ffn_up.weight`,
  down: (l: number) => `blk.${l}.ffn_down.weight`,
} as const;

export function layerTensorNames(l: number): string[] {
  const t = tensorNames;
  return [t.attnNorm(l), t.q(l), t.k(l), t.v(l), t.o(l), t.ffnNorm(l), t.gate(l), t.up(l), t.down(l)];
}

/** Error for anything wrong with a model file: truncated, corrupt, unsupported, inconsistent. */
export class ModelFormatError extends Error {
  constructor(
    message: string,
    readonly path?: string,
  ) {
    super(path ? `${path}: ${message}` : message);
    this.name = 'ModelFormatError';
  }
}
