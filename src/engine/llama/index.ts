// llama engine: a Stage on llama.cpp's own library (libllama through koffi, ffi.ts). The range's
// layers are written to a GGUF slice (slice.ts) that llama.cpp loads; sessions are llama.cpp
// sequences in one context, so forwardBatch is one llama_decode over every session's rows
// (continuous batching in llama.cpp itself). Hidden states go in through the batch's `embd`;
// a stage that does not apply the head reads the last layer's output `l_out-<last>` in the eval
// callback and stops the graph there (no output norm, no LM head).
//
// llama_decode runs on the calling thread: the event loop waits for each step, as with the
// reference engine (the ORT engine runs in a worker instead).

import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType, type ModelConfig, type WeightSource } from '../../model/types.js';
import { EngineError, type Stage, type StageInput, type StageOutput, type StageRange } from '../types.js';
import { FLASH_ATTN_AUTO, FLASH_ATTN_DISABLED, GGML_TYPE_F16, GGML_TYPE_F32, loadLlamaLib, type LlamaLib, type Ptr } from './ffi.js';
import { writeRangeSlice } from './slice.js';

export interface LlamaStageOptions {
  /** expected weight precision; the slice keeps the file's stored types, so this only checks them */
  weights?: 'f32' | 'q8' | 'q4';
  /** llama.cpp threads (default: all cores) */
  threads?: number;
  onProgress?: (bytes: number) => void;
  /** directory for the GGUF slice (default: a fresh one under os.tmpdir(), removed on dispose) */
  cacheDir?: string;
  /** most sessions held at once (llama.cpp sequences; default 64, at most 256) */
  maxSessions?: number;
  /** KV cells shared by all sessions (default min(8192, sessions × context)) */
  kvCells?: number;
  /** longest session in positions (default: the model's context length, capped by kvCells) */
  maxContext?: number;
  /** rows per llama_decode (default 512); longer steps are split */
  maxBatch?: number;
  /** directory of libllama*.so (default: @node-llama-cpp/linux-x64's) */
  libDir?: string;
}

export interface LlamaStage extends Stage {
  /** load figures: library, slice write, model + context creation (ms) */
  readonly loadInfo: { libMs: number; sliceMs: number; createMs: number; kvCells: number; kvType: 'f32' | 'f16' };
}

/** profile by the layers' stored weight type: F32 → llama-f32 (F32 KV), Q4_0 → llama-q4, ... */
function profileOf(types: Set<number>): { name: string; weights: 'f32' | 'q8' | 'q4' | 'f16' | 'mixed' } {
  if (types.size === 0) return { name: 'llama-f32', weights: 'f32' };
  const [t] = [...types];
  if (types.size > 1) return { name: 'llama-mixed', weights: 'mixed' };
  if (t === GgmlType.F32) return { name: 'llama-f32', weights: 'f32' };
  if (t === GgmlType.Q4_0) return { name: 'llama-q4', weights: 'q4' };
  if (t === GgmlType.Q8_0) return { name: 'llama-q8', weights: 'q8' };
  if (t === GgmlType.F16) return { name: 'llama-f16', weights: 'f16' };
  return { name: `llama-t${t}`, weights: 'mixed' };
}

export async function createLlamaStage(src: WeightSource, range: StageRange, opts: LlamaStageOptions = {}): Promise<LlamaStage> {
  const c = src.config;
  const { start, end } = range;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > c.nLayers || start > end) {
    throw new EngineError(`bad layer range [${start}, ${end}) for a model with ${c.nLayers} layers`, 'bad_input');
  }
  if (start === end) throw new EngineError(`the llama engine needs at least one layer per stage (got [${start}, ${end}))`, 'bad_input');
  const t0 = performance.now();
  const L = loadLlamaLib(opts.libDir);
  const libMs = performance.now() - t0;
  const ownDir = !opts.cacheDir;
  const dir = opts.cacheDir ?? mkdtempSync(join(tmpdir(), 'odsi-llama-'));
  const file = join(dir, `range-${start}-${end}${range.embed ? '-embed' : ''}${range.head ? '-head' : ''}-${process.pid}-${Date.now().toString(36)}.gguf`);
  const cleanup = () => rmSync(ownDir ? dir : file, { recursive: true, force: true });
  try {
    const t1 = performance.now();
    const types = await writeRangeSlice(src, range, file, opts.onProgress);
    const sliceMs = performance.now() - t1;
    const prof = profileOf(types);
    if (opts.weights && opts.weights !== prof.weights) {
      throw new EngineError(`the llama engine runs weights as stored (${prof.weights} here); it does not requantize to ${opts.weights}`, 'bad_input');
    }
    const f32 = prof.weights === 'f32';
    const maxSessions = Math.min(Math.max(1, Math.floor(opts.maxSessions ?? 64)), 256);
    const ctxLen = Math.min(opts.maxContext ?? c.contextLength, c.contextLength);
    const kvCells = Math.max(256, Math.floor(opts.kvCells ?? Math.min(8192, maxSessions * ctxLen)));
    const maxBatch = Math.max(1, Math.floor(opts.maxBatch ?? 512));
    const t2 = performance.now();
    const st = new LlamaStageImpl(L, c, { ...range }, prof.name, file, cleanup, {
      threads: opts.threads ?? availableParallelism(),
      maxSessions,
      kvCells,
      maxContext: Math.min(ctxLen, kvCells),
      maxBatch,
      // f32: F32 KV and plain attention, so the stage matches the reference engine within the
      // f32 tolerance; 4-bit and others keep llama.cpp's defaults (F16 KV, flash attention auto)
      kvType: f32 ? GGML_TYPE_F32 : GGML_TYPE_F16,
      flashAttn: f32 ? FLASH_ATTN_DISABLED : FLASH_ATTN_AUTO,
    });
    (st as { loadInfo: LlamaStage['loadInfo'] }).loadInfo = { libMs, sliceMs, createMs: performance.now() - t2, kvCells, kvType: f32 ? 'f32' : 'f16' };
    return st;
  } catch (e) {
    cleanup();
    throw e;
  }
}

interface Seq {
  id: number;
  len: number;
}

interface CtxOptions {
  threads: number;
  maxSessions: number;
  kvCells: number;
  maxContext: number;
  maxBatch: number;
  kvType: number;
  flashAttn: number;
}

class LlamaStageImpl implements LlamaStage {
  readonly loadInfo!: LlamaStage['loadInfo'];
  private sessions = new Map<string, Seq>();
  private freeSeqs: number[];
  private disposed = false;
  private readonly model: Ptr;
  private readonly ctx: Ptr;
  private readonly mem: Ptr;
  private readonly batch: Record<string, unknown>;
  private readonly cb: unknown;
  // views on the batch's native arrays (written in place, no copies through koffi)
  private readonly bToken?: Int32Array;
  private readonly bEmbd?: Float32Array;
  private readonly bPos: Int32Array;
  private readonly bNSeq: Int32Array;
  private readonly bSeq: Int32Array[];
  private readonly bOut: Int8Array;
  /** last layer's rows, filled by the eval callback */
  private out = new Float32Array(0);
  private got = 0;
  private readonly target: string;
  private readonly maxContext: number;
  private readonly maxBatch: number;

  constructor(
    private readonly L: LlamaLib,
    readonly config: ModelConfig,
    readonly range: StageRange,
    readonly profile: string,
    file: string,
    private readonly cleanup: () => void,
    o: CtxOptions,
  ) {
    const { koffi } = L;
    this.maxContext = o.maxContext;
    this.maxBatch = o.maxBatch;
    this.freeSeqs = Array.from({ length: o.maxSessions }, (_, i) => o.maxSessions - 1 - i);
    const mp = L.modelDefaultParams() as Record<string, unknown>;
    mp.n_gpu_layers = 0;
    this.model = L.modelLoad(file, mp);
    if (!this.model) throw new EngineError(`llama.cpp could not load the range slice ${file}`, 'internal');
    const nLayers = L.nLayer(this.model) as number;
    this.target = `l_out-${nLayers - 1}`;
    // a stage without the head stops the graph after the last layer's output
    this.cb = range.head
      ? null
      : koffi.register((t: Ptr, ask: boolean) => {
          const name = L.tensorName(t) as string;
          // ask true only for the target, or the scheduler splits the graph at every tensor
          if (name !== this.target) return !ask;
          if (ask) return true;
          const n = Number(L.tensorNelements(t));
          if (this.out.length < n) this.out = new Float32Array(n);
          L.tensorGet(t, this.out, 0, n * 4);
          this.got = n;
          return false;
        }, koffi.pointer(L.EvalCb));
    const cp = L.contextDefaultParams() as Record<string, unknown>;
    Object.assign(cp, {
      n_ctx: o.kvCells,
      n_batch: o.maxBatch,
      n_ubatch: o.maxBatch,
      n_seq_max: o.maxSessions,
      n_threads: o.threads,
      n_threads_batch: o.threads,
      cb_eval: this.cb,
      type_k: o.kvType,
      type_v: o.kvType,
      flash_attn_type: o.flashAttn,
      // one KV stream for all sequences: ubatches keep the batch's row order (split_simple)
      kv_unified: true,
      no_perf: true,
    });
    this.ctx = L.initFromModel(this.model, cp);
    if (!this.ctx) {
      L.modelFree(this.model);
      if (this.cb) koffi.unregister(this.cb);
      throw new EngineError('llama.cpp could not create a context for the range', 'internal');
    }
    this.mem = L.getMemory(this.ctx);
    const dim = config.dim;
    this.batch = L.batchInit(o.maxBatch, range.embed ? 0 : dim, 1) as Record<string, unknown>;
    const n = o.maxBatch;
    if (range.embed) this.bToken = new Int32Array(koffi.view(this.batch.token, n * 4));
    else this.bEmbd = new Float32Array(koffi.view(this.batch.embd, n * dim * 4));
    this.bPos = new Int32Array(koffi.view(this.batch.pos, n * 4));
    this.bNSeq = new Int32Array(koffi.view(this.batch.n_seq_id, n * 4));
    this.bNSeq.fill(1);
    const seqPtrs = koffi.decode(this.batch.seq_id, koffi.array('void *', n)) as Ptr[];
    this.bSeq = seqPtrs.map((p) => new Int32Array(koffi.view(p, 4)));
    this.bOut = new Int8Array(koffi.view(this.batch.logits, n));
  }

  sessionLength(sessionId: string): number {
    return this.sessions.get(sessionId)?.len ?? 0;
  }

  closeSession(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (!s || this.disposed) return;
    this.sessions.delete(sessionId);
    this.L.memorySeqRm(this.mem, s.id, -1, -1);
    this.freeSeqs.push(s.id);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.sessions.clear();
    const L = this.L;
    L.batchFree(this.batch);
    L.free(this.ctx);
    L.modelFree(this.model);
    if (this.cb) L.koffi.unregister(this.cb);
    this.cleanup();
  }

  async forward(input: StageInput): Promise<StageOutput> {
    return (await this.forwardBatch([input]))[0]!;
  }

  async forwardBatch(inputs: StageInput[]): Promise<StageOutput[]> {
    if (this.disposed) throw new EngineError('stage is disposed', 'internal');
    if (inputs.length === 0) return [];
    if (new Set(inputs.map((i) => i.sessionId)).size !== inputs.length) throw new EngineError('a batch holds at most one step per session', 'bad_input');
    for (const i of inputs) this.validate(i);
    const newIds = inputs.filter((i) => !this.sessions.has(i.sessionId)).length;
    if (newIds > this.freeSeqs.length) throw new EngineError(`too many sessions: this stage holds at most ${this.sessions.size + this.freeSeqs.length} at once`, 'capacity');
    const t0 = performance.now();
    // sessions: a sequence each; a step before the cached end truncates the cache first
    const seqs: Seq[] = [];
    const created: string[] = [];
    for (const i of inputs) {
      let s = this.sessions.get(i.sessionId);
      if (!s) {
        s = { id: this.freeSeqs.pop()!, len: 0 };
        this.sessions.set(i.sessionId, s);
        created.push(i.sessionId);
      }
      if (i.pos < s.len) {
        this.L.memorySeqRm(this.mem, s.id, i.pos, -1);
        s.len = i.pos;
      }
      seqs.push(s);
    }
    const before = seqs.map((s) => s.len);
    const dim = this.config.dim;
    const V = this.config.vocabSize;
    const outs: StageOutput[] = inputs.map((i) => (this.range.head ? { logits: new Float32Array(i.allLogits ? i.nTokens * V : V), computeMs: 0 } : { hidden: new Float32Array(i.nTokens * dim), computeMs: 0 }));
    try {
      // rows of all inputs in order, maxBatch rows per llama_decode
      let k = 0; // input index
      let r = 0; // row within input k
      while (k < inputs.length) {
        const rows: { k: number; r: number }[] = [];
        let n = 0;
        while (n < this.maxBatch && k < inputs.length) {
          const inp = inputs[k]!;
          const take = Math.min(inp.nTokens - r, this.maxBatch - n);
          for (let j = 0; j < take; j++, n++) {
            const row = r + j;
            if (this.bToken) this.bToken[n] = inp.tokens![row]!;
            else this.bEmbd!.set(inp.hidden!.subarray(row * dim, (row + 1) * dim), n * dim);
            this.bPos[n] = inp.pos + row;
            this.bSeq[n]![0] = seqs[k]!.id;
            this.bOut[n] = !this.range.head || inp.allLogits || row === inp.nTokens - 1 ? 1 : 0;
            rows.push({ k, r: row });
          }
          r += take;
          if (r === inp.nTokens) {
            k++;
            r = 0;
          }
        }
        this.decode(n);
        // results, in row order
        if (this.range.head) {
          for (let j = 0; j < n; j++) {
            if (!this.bOut[j]) continue;
            const { k: kk, r: rr } = rows[j]!;
            const p = this.L.logitsIth(this.ctx, j);
            if (!p) throw new EngineError('llama.cpp returned no logits', 'internal');
            const lg = new Float32Array(this.L.koffi.view(p, V * 4));
            const o = inputs[kk]!.allLogits ? rr * V : 0;
            outs[kk]!.logits!.set(lg, o);
          }
        } else {
          if (this.got !== n * dim) throw new EngineError(`llama.cpp gave ${this.got} output values, expected ${n * dim}`, 'internal');
          for (let j = 0; j < n; j++) {
            const { k: kk, r: rr } = rows[j]!;
            outs[kk]!.hidden!.set(this.out.subarray(j * dim, (j + 1) * dim), rr * dim);
          }
        }
        for (let j = 0; j < n; j++) seqs[rows[j]!.k]!.len = Math.max(seqs[rows[j]!.k]!.len, rows[j]!.r + inputs[rows[j]!.k]!.pos + 1);
      }
    } catch (e) {
      // nothing of a failed step stays: caches back to where the step began
      for (let j = 0; j < seqs.length; j++) {
        this.L.memorySeqRm(this.mem, seqs[j]!.id, before[j]!, -1);
        seqs[j]!.len = before[j]!;
      }
      for (const id of created) this.closeSession(id);
      throw e;
    }
    const ms = performance.now() - t0;
    for (const o of outs) o.computeMs = ms;
    return outs;
  }

  private decode(n: number): void {
    this.batch.n_tokens = n;
    this.got = 0;
    const rc = this.L.decode(this.ctx, this.batch) as number;
    if (rc === 1) throw new EngineError(`no room in the KV cache for ${n} more positions (all sessions together)`, 'capacity');
    if (rc !== 0) throw new EngineError(`llama_decode failed (${rc})`, 'internal');
  }

  private validate(input: StageInput): void {
    const c = this.config;
    const { pos, nTokens: n, sessionId } = input;
    if (!Number.isInteger(n) || n < 1) throw new EngineError(`nTokens must be a positive integer, got ${n}`, 'bad_input');
    if (!Number.isInteger(pos) || pos < 0) throw new EngineError(`pos must be a non-negative integer, got ${pos}`, 'bad_input');
    if (pos + n > this.maxContext) throw new EngineError(`context overflow: ${pos + n} positions > maximum context ${this.maxContext}`, 'capacity');
    const len = this.sessions.get(sessionId)?.len;
    if (len === undefined && pos !== 0) throw new EngineError(`unknown session ${sessionId} (first step must start at position 0, got ${pos})`, 'unknown_session');
    if (len !== undefined && pos > len) throw new EngineError(`position ${pos} is beyond the session's cached length ${len}`, 'bad_input');
    if (this.range.embed) {
      if (!input.tokens || input.tokens.length !== n) throw new EngineError(`expected ${n} token ids, got ${input.tokens?.length ?? 'none'}`, 'bad_input');
      for (const id of input.tokens) if (!(id >= 0 && id < c.vocabSize)) throw new EngineError(`token id ${id} out of range [0, ${c.vocabSize})`, 'bad_input');
    } else {
      const h = input.hidden;
      if (!h || h.length !== n * c.dim) throw new EngineError(`expected hidden of ${n}×${c.dim} floats, got ${h?.length ?? 'none'}`, 'bad_input');
      for (let i = 0; i < h.length; i++) if (!Number.isFinite(h[i]!)) throw new EngineError('hidden states must be finite', 'bad_input');
    }
  }
}
