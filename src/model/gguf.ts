// GGUF v2/v3 reader. Parses the header (metadata + tensor infos) once; tensor bytes are read
// lazily with positioned reads, so a stage holds only the tensors it asks for.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { byteSize, dequantize, typeName } from './quant.js';
import { GgmlType, ModelFormatError, type ModelConfig, type TensorInfo, type TokenizerSpec, type WeightSource } from './types.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[] | Float32Array | Int32Array;

/** GGUF metadata value type ids. */
export enum VT {
  U8 = 0,
  I8,
  U16,
  I16,
  U32,
  I32,
  F32,
  BOOL,
  STRING,
  ARRAY,
  U64,
  I64,
  F64,
}

const MAX_STRING = 1 << 26;
const MAX_ARRAY = 1 << 28;

/** Sequential reader over a file descriptor with a growing window (headers can be MBs). */
class HeaderCursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;
  constructor(
    private fd: number,
    private size: number,
    private path: string,
  ) {}

  private need(n: number): void {
    if (this.pos + n > this.size)
      throw new ModelFormatError(`truncated header (wanted ${n} bytes at offset ${this.pos}, file has ${this.size})`, this.path);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
    this.buf = Buffer.allocUnsafe(len);
    const got = readSync(this.fd, this.buf, 0, len, this.pos);
    if (got < n) throw new ModelFormatError(`short read in header at offset ${this.pos}`, this.path);
    this.bufStart = this.pos;
  }
  /** offset of the next n bytes in this.buf, which need() may replace: call before reading this.buf */
  private at(n: number): number {
    this.need(n);
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }
  u8() {
    const o = this.at(1);
    return this.buf.readUInt8(o);
  }
  i8() {
    const o = this.at(1);
    return this.buf.readInt8(o);
  }
  u16() {
    const o = this.at(2);
    return this.buf.readUInt16LE(o);
  }
  i16() {
    const o = this.at(2);
    return this.buf.readInt16LE(o);
  }
  u32() {
    const o = this.at(4);
    return this.buf.readUInt32LE(o);
  }
  i32() {
    const o = this.at(4);
    return this.buf.readInt32LE(o);
  }
  f32() {
    const o = this.at(4);
    return this.buf.readFloatLE(o);
  }
  f64() {
    const o = this.at(8);
    return this.buf.readDoubleLE(o);
  }
  u64(): bigint {
    const o = this.at(8);
    return this.buf.readBigUInt64LE(o);
  }
  i64(): bigint {
    const o = this.at(8);
    return this.buf.readBigInt64LE(o);
  }
  /** u64 that must fit a JS number */
  count(limit: number, what: string): number {
    const v = this.u64();
    if (v > BigInt(limit)) throw new ModelFormatError(`implausible ${what}: ${v}`, this.path);
    return Number(v);
  }
  str(): string {
    const n = this.count(MAX_STRING, 'string length');
    const o = this.at(n);
    return this.buf.toString('utf8', o, o + n);
  }
}

function readValue(c: HeaderCursor, t: number, path: string): GgufValue {
  switch (t) {
    case VT.U8:
      return c.u8();
    case VT.I8:
      return c.i8();
    case VT.U16:
      return c.u16();
    case VT.I16:
      return c.i16();
    case VT.U32:
      return c.u32();
    case VT.I32:
      return c.i32();
    case VT.F32:
      return c.f32();
    case VT.F64:
      return c.f64();
    case VT.BOOL:
      return c.u8() !== 0;
    case VT.STRING:
      return c.str();
    case VT.U64: {
      const v = c.u64();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case VT.I64: {
      const v = c.i64();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case VT.ARRAY: {
      const et = c.u32();
      const n = c.count(MAX_ARRAY, 'array length');
      // Typed arrays for the big numeric arrays (vocab scores, token types).
      if (et === VT.F32) {
        const a = new Float32Array(n);
        for (let i = 0; i < n; i++) a[i] = c.f32();
        return a;
      }
      if (et === VT.I32) {
        const a = new Int32Array(n);
        for (let i = 0; i < n; i++) a[i] = c.i32();
        return a;
      }
      const a: GgufValue[] = new Array(n);
      for (let i = 0; i < n; i++) a[i] = readValue(c, et, path);
      return a;
    }
    default:
      throw new ModelFormatError(`unknown metadata value type ${t}`, path);
  }
}

export { VT as GgufValueType };

/** Stored type of a metadata value (element type too for arrays), so a rewrite keeps it. */
export interface GgufValueTypeInfo {
  type: VT;
  elemType?: VT;
}

export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufValue>;
  metadataTypes: Map<string, GgufValueTypeInfo>;
  tensors: Map<string, TensorInfo>;
  dataOffset: number;
  alignment: number;
  fileSize: number;
}

export function readGgufHeader(fd: number, path: string): GgufHeader {
  const size = fstatSync(fd).size;
  const c = new HeaderCursor(fd, size, path);
  if (size < 24) throw new ModelFormatError('file too small to be GGUF', path);
  const magic = c.u32();
  if (magic !== 0x46554747) throw new ModelFormatError('not a GGUF file (bad magic)', path);
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new ModelFormatError(`unsupported GGUF version ${version} (need 2 or 3)`, path);
  const nTensors = c.count(1 << 20, 'tensor count');
  const nKv = c.count(1 << 20, 'metadata count');
  const metadata = new Map<string, GgufValue>();
  const metadataTypes = new Map<string, GgufValueTypeInfo>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str();
    const t = c.u32();
    if (t === VT.ARRAY) {
      // peek the element type: it is the next u32
      const save = c.pos;
      const et = c.u32();
      c.pos = save;
      metadataTypes.set(key, { type: t, elemType: et });
    } else metadataTypes.set(key, { type: t });
    metadata.set(key, readValue(c, t, path));
  }
  const alignment = Number(metadata.get('general.alignment') ?? 32);
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment & (alignment - 1))
    throw new ModelFormatError(`bad alignment ${alignment}`, path);
  const raw: { name: string; shape: number[]; type: number; rel: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = c.str();
    const nd = c.u32();
    if (nd < 1 || nd > 4) throw new ModelFormatError(`tensor ${name}: ${nd} dimensions`, path);
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(c.count(2 ** 40, `dimension of ${name}`));
    const type = c.u32();
    const rel = c.count(Number.MAX_SAFE_INTEGER, `offset of ${name}`);
    raw.push({ name, shape: ne.reverse(), type, rel });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, TensorInfo>();
  for (const r of raw) {
    const n = r.shape.reduce((a, b) => a * b, 1);
    let byteLength: number;
    try {
      byteLength = byteSize(r.type as GgmlType, n);
    } catch (e) {
      throw new ModelFormatError(`tensor ${r.name}: ${(e as Error).message}`, path);
    }
    const offset = dataOffset + r.rel;
    if (offset + byteLength > size) throw new ModelFormatError(`tensor ${r.name} extends past end of file (truncated file?)`, path);
    if (tensors.has(r.name)) throw new ModelFormatError(`duplicate tensor ${r.name}`, path);
    tensors.set(r.name, { name: r.name, shape: r.shape, type: r.type as GgmlType, offset, byteLength });
  }
  return { version, metadata, metadataTypes, tensors, dataOffset, alignment, fileSize: size };
}

/** shortest decimal that rounds to the same float32 (GGUF stores f32; configs say 1e-5) */
export function tidyF32(v: number): number {
  const f = Math.fround(v);
  if (f !== v) return v;
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === f) return d;
  }
  return v;
}

function num(md: Map<string, GgufValue>, key: string, path: string, dflt?: number): number {
  const v = md.get(key);
  if (v === undefined) {
    if (dflt !== undefined) return dflt;
    throw new ModelFormatError(`missing metadata ${key}`, path);
  }
  if (typeof v !== 'number') throw new ModelFormatError(`metadata ${key} is not a number`, path);
  return v;
}

export function configFromGguf(h: GgufHeader, path: string): ModelConfig {
  const md = h.metadata;
  const arch = md.get('general.architecture');
  if (arch !== 'llama' && arch !== 'mistral')
    throw new ModelFormatError(`unsupported architecture '${String(arch)}' (odsi runs the Llama family)`, path);
  const p = 'llama.';
  const dim = num(md, p + 'embedding_length', path);
  const nHeads = num(md, p + 'attention.head_count', path);
  const emb = h.tensors.get('token_embd.weight');
  if (!emb) throw new ModelFormatError('missing tensor token_embd.weight', path);
  const vocabSize = num(md, p + 'vocab_size', path, emb.shape[0]);
  const headDim = num(md, p + 'attention.key_length', path, dim / nHeads);
  const cfg: ModelConfig = {
    arch: 'llama',
    name: String(md.get('general.name') ?? 'unnamed'),
    nLayers: num(md, p + 'block_count', path),
    dim,
    ffnDim: num(md, p + 'feed_forward_length', path),
    nHeads,
    nKvHeads: num(md, p + 'attention.head_count_kv', path, nHeads),
    headDim,
    vocabSize,
    contextLength: num(md, p + 'context_length', path, 2048),
    normEps: tidyF32(num(md, p + 'attention.layer_norm_rms_epsilon', path, 1e-5)),
    ropeTheta: tidyF32(num(md, p + 'rope.freq_base', path, 10000)),
    tiedEmbeddings: !h.tensors.has('output.weight'),
  };
  const st = md.get(p + 'rope.scaling.type');
  if (st === 'linear') cfg.ropeScaling = { type: 'linear', factor: tidyF32(num(md, p + 'rope.scaling.factor', path)) };
  // llama.cpp keeps Llama 3 scaling only as the rope_freqs tensor; odsi's writers also record
  // the parameters (keys llama.cpp ignores) so the config round-trips.
  if (md.get('odsi.rope.scaling.type') === 'llama3') {
    const o = 'odsi.rope.scaling.';
    cfg.ropeScaling = {
      type: 'llama3',
      factor: tidyF32(num(md, o + 'factor', path)),
      lowFreqFactor: tidyF32(num(md, o + 'low_freq_factor', path)),
      highFreqFactor: tidyF32(num(md, o + 'high_freq_factor', path)),
      originalContext: num(md, o + 'original_context_length', path),
    };
  }
  validateConfig(cfg, path);
  return cfg;
}

export function validateConfig(c: ModelConfig, path?: string): void {
  const bad = (m: string) => {
    throw new ModelFormatError(`inconsistent model shape: ${m}`, path);
  };
  for (const k of ['nLayers', 'dim', 'ffnDim', 'nHeads', 'nKvHeads', 'headDim', 'vocabSize'] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) bad(`${k}=${c[k]}`);
  }
  if (c.nHeads % c.nKvHeads !== 0) bad(`head count ${c.nHeads} not a multiple of KV head count ${c.nKvHeads}`);
  if (c.headDim % 2 !== 0) bad(`odd head size ${c.headDim}`);
}

function tokenizerFromGguf(md: Map<string, GgufValue>): TokenizerSpec | undefined {
  const model = md.get('tokenizer.ggml.model');
  const tokens = md.get('tokenizer.ggml.tokens');
  if (typeof model !== 'string' || !Array.isArray(tokens)) return undefined;
  const optNum = (k: string) => (typeof md.get(k) === 'number' ? (md.get(k) as number) : undefined);
  const optBool = (k: string) => (typeof md.get(k) === 'boolean' ? (md.get(k) as boolean) : undefined);
  const scores = md.get('tokenizer.ggml.scores');
  const types = md.get('tokenizer.ggml.token_type');
  const merges = md.get('tokenizer.ggml.merges');
  const spec: TokenizerSpec = {
    model: model === 'gpt2' ? 'gpt2' : 'llama',
    tokens: tokens as string[],
    scores: scores instanceof Float32Array ? scores : undefined,
    tokenTypes: types instanceof Int32Array ? types : undefined,
    merges: Array.isArray(merges) ? (merges as string[]) : undefined,
    pre: typeof md.get('tokenizer.ggml.pre') === 'string' ? (md.get('tokenizer.ggml.pre') as string) : undefined,
    bosId: optNum('tokenizer.ggml.bos_token_id'),
    eosId: optNum('tokenizer.ggml.eos_token_id'),
    unkId: optNum('tokenizer.ggml.unknown_token_id'),
    padId: optNum('tokenizer.ggml.padding_token_id'),
    addBos: optBool('tokenizer.ggml.add_bos_token') ?? model === 'llama',
    addEos: optBool('tokenizer.ggml.add_eos_token') ?? false,
    addSpacePrefix: optBool('tokenizer.ggml.add_space_prefix'),
    chatTemplate: typeof md.get('tokenizer.chat_template') === 'string' ? (md.get('tokenizer.chat_template') as string) : undefined,
  };
  const eot = optNum('tokenizer.ggml.eot_token_id');
  if (eot !== undefined) spec.eotIds = [eot];
  return spec;
}

/** A GGUF model file opened for lazy reads. */
export class GgufFile implements WeightSource {
  readonly format = 'gguf' as const;
  readonly header: GgufHeader;
  readonly config: ModelConfig;
  readonly tokenizer?: TokenizerSpec;
  readonly metadata: Record<string, unknown>;
  private fd: number;

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, 'r');
    } catch (e) {
      throw new ModelFormatError(`cannot open: ${(e as Error).message}`, path);
    }
    try {
      this.header = readGgufHeader(this.fd, path);
      this.config = configFromGguf(this.header, path);
      this.tokenizer = tokenizerFromGguf(this.header.metadata);
      this.metadata = Object.fromEntries(this.header.metadata);
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  tensorNames(): string[] {
    return [...this.header.tensors.keys()];
  }
  has(name: string): boolean {
    return this.header.tensors.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new ModelFormatError(`missing tensor ${name}`, this.path);
    return t;
  }
  readRaw(name: string): Uint8Array {
    const t = this.info(name);
    const out = new Uint8Array(t.byteLength);
    let done = 0;
    while (done < t.byteLength) {
      const chunk = Math.min(t.byteLength - done, 1 << 30);
      const got = readSync(this.fd, out, done, chunk, t.offset + done);
      if (got <= 0) throw new ModelFormatError(`tensor ${name}: short read (truncated file?)`, this.path);
      done += got;
    }
    return out;
  }
  *readRawChunks(name: string, chunkBytes = 16 << 20): Iterable<Uint8Array> {
    const t = this.info(name);
    for (let done = 0; done < t.byteLength;) {
      const n = Math.min(chunkBytes, t.byteLength - done);
      const buf = new Uint8Array(n);
      for (let got = 0; got < n;) {
        const r = readSync(this.fd, buf, got, n - got, t.offset + done + got);
        if (r <= 0) throw new ModelFormatError(`tensor ${name}: short read (truncated file?)`, this.path);
        got += r;
      }
      done += n;
      yield buf;
    }
  }
  readF32(name: string): Float32Array {
    const t = this.info(name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    try {
      return dequantize(t.type, this.readRaw(name), n);
    } catch (e) {
      if (e instanceof ModelFormatError) throw new ModelFormatError(`tensor ${name} (${typeName(t.type)}): ${e.message}`, this.path);
      throw e;
    }
  }
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
