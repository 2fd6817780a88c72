// The llama.cpp side of a llama stage, run inside its worker thread (worker.ts): one context
// over the range's GGUF slice, sessions as sequences, one llama_decode per batch of steps.
// Everything here is synchronous on the worker's thread.

import type { ModelConfig } from '../../model/types.js';
import { EngineError, type StageInput, type StageOutput, type StageRange } from '../types.js';
import type { LlamaLib, Ptr } from './ffi.js';
import { checkStepInput } from '../step-input.js';

export interface RunnerSpec {
  file: string;
  config: ModelConfig;
  range: StageRange;
  threads: number;
  maxSessions: number;
  kvCells: number;
  maxContext: number;
  maxBatch: number;
  kvType: number;
  flashAttn: number;
}

/** a step as it crosses to the worker: the Stage's own input */
export type StepIn = StageInput;

/** the Stage's output, plus the session's cached length after the step */
export type StepOut = StageOutput & { length: number };

interface Seq {
  id: number;
  len: number;
}

export class LlamaRunner {
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

  readonly config: ModelConfig;
  readonly range: StageRange;

  constructor(
    private readonly L: LlamaLib,
    o: RunnerSpec,
  ) {
    const { koffi } = L;
    const { config, range, file } = o;
    this.config = config;
    this.range = range;
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

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.sessions.clear();
    const L = this.L;
    L.batchFree(this.batch);
    L.free(this.ctx);
    L.modelFree(this.model);
    if (this.cb) L.koffi.unregister(this.cb);
  }

  /** cached lengths of these sessions (0: none held), e.g. after a failed step */
  lengths(ids: string[]): Record<string, number> {
    return Object.fromEntries(ids.map((id) => [id, this.sessions.get(id)?.len ?? 0]));
  }

  /** several sessions' steps (at most one each) as one llama_decode per maxBatch rows */
  stepBatch(inputs: StepIn[]): StepOut[] {
    if (this.disposed) throw new EngineError('stage is disposed', 'internal');
    if (inputs.length === 0) return [];
    if (new Set(inputs.map((i) => i.sessionId)).size !== inputs.length)
      throw new EngineError('a batch holds at most one step per session', 'bad_input');
    for (const i of inputs) this.validate(i);
    const newIds = inputs.filter((i) => !this.sessions.has(i.sessionId)).length;
    if (newIds > this.freeSeqs.length)
      throw new EngineError(`too many sessions: this stage holds at most ${this.sessions.size + this.freeSeqs.length} at once`, 'capacity');
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
    // rows whose output is wanted: the last of each step, and every row unless the step asks
    // for the last only (a head's logits; lastRow). llama.cpp computes the last layer past
    // attention for these rows only (its output ids), and its l_out holds them alone, in order
    const every = (i: StepIn) => (this.range.head ? i.allLogits === true : i.lastRow !== true);
    const outs: StepOut[] = inputs.map((i) => {
      const rows = every(i) ? i.nTokens : 1;
      return this.range.head
        ? { logits: new Float32Array(rows * V), computeMs: 0, length: 0 }
        : { hidden: new Float32Array(rows * dim), computeMs: 0, length: 0 };
    });
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
            this.bOut[n] = every(inp) || row === inp.nTokens - 1 ? 1 : 0;
            rows.push({ k, r: row });
          }
          r += take;
          if (r === inp.nTokens) {
            k++;
            r = 0;
          }
        }
        this.decode(n);
        // results, in row order: output q is the q-th row asked for
        let wanted = 0;
        for (let j = 0; j < n; j++) wanted += this.bOut[j]!;
        if (!this.range.head && this.got !== wanted * dim)
          throw new EngineError(`llama.cpp gave ${this.got} output values, expected ${wanted * dim}`, 'internal');
        for (let j = 0, q = 0; j < n; j++) {
          if (!this.bOut[j]) continue;
          const { k: kk, r: rr } = rows[j]!;
          const at = every(inputs[kk]!) ? rr : 0;
          if (this.range.head) {
            const p = this.L.logitsIth(this.ctx, j);
            if (!p) throw new EngineError('llama.cpp returned no logits', 'internal');
            outs[kk]!.logits!.set(new Float32Array(this.L.koffi.view(p, V * 4)), at * V);
          } else outs[kk]!.hidden!.set(this.out.subarray(q * dim, (q + 1) * dim), at * dim);
          q++;
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
    outs.forEach((o, j) => {
      o.computeMs = ms;
      o.length = seqs[j]!.len;
    });
    return outs;
  }

  private decode(n: number): void {
    this.batch.n_tokens = n;
    this.got = 0;
    const rc = this.L.decode(this.ctx, this.batch) as number;
    if (rc === 1) throw new EngineError(`no room in the KV cache for ${n} more positions (all sessions together)`, 'capacity');
    if (rc !== 0) throw new EngineError(`llama_decode failed (${rc})`, 'internal');
  }

  private validate(input: StepIn): void {
    checkStepInput(input, {
      config: this.config,
      range: this.range,
      maxContext: this.maxContext,
      cachedLength: this.sessions.get(input.sessionId)?.len,
    });
  }
}
