// The reference engine: a pure-TypeScript Llama layer range whose results are bit-reproducible
// on any machine running V8 (rules in reference/kernels.ts). It is slow next to ORT, and it is
// the referee: verification replays a node's work here, with exactly the weights the node
// declared (quantized tensors are dequantized to f32 once, at load).

import { performance } from 'node:perf_hooks';
import { ModelFormatError, tensorNames as tn, type ModelConfig, type WeightSource } from '../model/types.js';
import {
  EngineError,
  type SessionState,
  type Stage,
  type StageCapacity,
  type StageInput,
  type StageOutput,
  type StageRange,
} from './types.js';
import { kvBytesPerPosition } from './kv-bytes.js';
import { checkStepInput } from './step-input.js';
import { addInPlace, attention, matmul, rmsnorm, rope, ropeTables, swiglu } from './reference/kernels.js';
import { ropeInvFreq } from '../model/rope.js';
import { WasmArena } from './reference/wasm.js';

interface LayerWeights {
  attnNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  ffnNorm: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

interface Session {
  length: number;
  /** a forward is in flight (it may yield between layers) */
  busy: boolean;
  /** capacity in positions of every layer's K and V buffers */
  capacity: number;
  /** per layer [capacity, nKvHeads*headDim] */
  k: Float32Array[];
  v: Float32Array[];
}

type RopeTables = { cos: Float64Array; sin: Float64Array };
interface Scratch {
  xn: Float32Array;
  q: Float32Array;
  att: Float32Array;
  o: Float32Array;
  g: Float32Array;
  u: Float32Array;
  /** new K and V rows of a batch of several sessions (a single session writes its cache directly) */
  k: Float32Array;
  v: Float32Array;
}

/** one session's rows in a batch: rows [off, off+n) are its positions pos..pos+n-1 */
interface Part {
  s: Session;
  pos: number;
  n: number;
  off: number;
}

/** a step whose per-layer work exceeds this many multiply-adds yields between layers (~ms) */
const YIELD_MACS = 4e6;

/** KV buffers grow in chunks of this many positions, never per token: a session holds its
 *  length rounded up to it, which the node counts as its reservation (capacity.chunkTokens) */
const KV_CHUNK = 64;

export interface ReferenceStageOptions {
  /** refuse new sessions beyond this many (default: unlimited) */
  maxSessions?: number;
  /** use the WebAssembly SIMD matmul when available (default true); same bits either way */
  simd?: boolean;
}

export function createReferenceStage(src: WeightSource, range: StageRange, opts: ReferenceStageOptions = {}): Stage {
  return new ReferenceStage(src, range, opts);
}

export function checkRange(config: ModelConfig, range: StageRange): void {
  const { start, end } = range;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > config.nLayers || start > end) {
    throw new EngineError(`bad layer range [${start}, ${end}) for a model with ${config.nLayers} layers`, 'bad_input');
  }
  if (start === end && !range.embed && !range.head) {
    throw new EngineError(`empty layer range [${start}, ${end}) with neither embedding nor head`, 'bad_input');
  }
}

export class ReferenceStage implements Stage {
  readonly config: ModelConfig;
  readonly profile = 'reference';
  /** no bound of its own but memory: caches are f32, allocated in chunks of KV_CHUNK positions */
  readonly capacity?: StageCapacity;
  private layers: LayerWeights[] = [];
  private embed?: Float32Array;
  private outNorm?: Float32Array;
  private output?: Float32Array;
  private invFreq: Float32Array;
  private sessions = new Map<string, Session>();
  private kvDim: number;
  private arena: WasmArena | null = null;
  /** multiply-adds of one layer for one token (matrices only) */
  private layerMacs: number;
  private disposed = false;

  constructor(
    src: WeightSource,
    readonly range: StageRange,
    private opts: ReferenceStageOptions,
  ) {
    const c = (this.config = src.config);
    checkRange(c, range);
    this.range = { ...range };
    this.kvDim = c.nKvHeads * c.headDim;
    if (range.end > range.start) this.capacity = { chunkTokens: KV_CHUNK, kvBytesPerToken: kvBytesPerPosition(c, range.end - range.start) };
    const qDim = c.nHeads * c.headDim;
    this.layerMacs = c.dim * (2 * qDim + 2 * this.kvDim + 3 * c.ffnDim);
    const check = (name: string, shape: number[]): void => {
      const info = src.info(name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new ModelFormatError(`tensor ${name} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`, src.path);
      }
    };
    const load = (name: string, shape: number[]): Float32Array => {
      check(name, shape);
      return src.readF32(name);
    };
    // matrices go into the WASM arena when there is one (sized before anything is read)
    const outName = src.has(tn.output) ? tn.output : tn.embed;
    const matrices: [string, number[]][] = [];
    for (let l = range.start; l < range.end; l++) {
      matrices.push([tn.q(l), [qDim, c.dim]], [tn.k(l), [this.kvDim, c.dim]], [tn.v(l), [this.kvDim, c.dim]], [tn.o(l), [c.dim, qDim]]);
      matrices.push([tn.gate(l), [c.ffnDim, c.dim]], [tn.up(l), [c.ffnDim, c.dim]], [tn.down(l), [c.dim, c.ffnDim]]);
    }
    if (range.head) matrices.push([outName, [c.vocabSize, c.dim]]);
    for (const [name, shape] of matrices) check(name, shape);
    if (opts.simd !== false && matrices.length > 0) {
      const floats = matrices.reduce((a, [, sh]) => a + sh[0] * sh[1], 0);
      const maxIn = Math.max(c.dim, qDim, c.ffnDim);
      const maxOut = Math.max(c.dim, qDim, c.ffnDim, range.head ? c.vocabSize : 0);
      this.arena = WasmArena.create(floats, maxIn, maxOut);
    }
    const mat = (name: string, shape: number[]): Float32Array => {
      const w = load(name, shape);
      return this.arena ? this.arena.place(w) : w;
    };
    for (let l = range.start; l < range.end; l++) {
      this.layers.push({
        attnNorm: load(tn.attnNorm(l), [c.dim]),
        q: mat(tn.q(l), [qDim, c.dim]),
        k: mat(tn.k(l), [this.kvDim, c.dim]),
        v: mat(tn.v(l), [this.kvDim, c.dim]),
        o: mat(tn.o(l), [c.dim, qDim]),
        ffnNorm: load(tn.ffnNorm(l), [c.dim]),
        gate: mat(tn.gate(l), [c.ffnDim, c.dim]),
        up: mat(tn.up(l), [c.ffnDim, c.dim]),
        down: mat(tn.down(l), [c.dim, c.ffnDim]),
      });
    }
    if (range.embed) this.embed = load(tn.embed, [c.vocabSize, c.dim]);
    if (range.head) {
      this.outNorm = load(tn.outputNorm, [c.dim]);
      this.output = mat(outName, [c.vocabSize, c.dim]);
    }
    this.invFreq = ropeInvFreq(c, src); // f32 values, shared with the ORT engine
  }

  /** WASM when the weight lives in the arena, else JS: identical results */
  private mm(y: Float32Array, x: Float32Array, w: Float32Array, nTok: number, nIn: number, nOut: number): void {
    if (this.arena?.owns(w)) this.arena.matmul(y, x, w, nTok, nIn, nOut);
    else matmul(y, x, w, nTok, nIn, nOut);
  }

  /** 'wasm-simd' or 'js': which matmul path this stage uses (numerically identical) */
  get kernel(): 'wasm-simd' | 'js' {
    return this.arena ? 'wasm-simd' : 'js';
  }

  sessionLength(sessionId: string): number {
    return this.sessions.get(sessionId)?.length ?? 0;
  }

  closeSession(sessionId: string): void {
    this.sessions.delete(sessionId);
  }

  // kv-transfer: copy out / in a session's KV cache (graceful leave)
  exportSession(sessionId: string): SessionState | undefined {
    const s = this.sessions.get(sessionId);
    if (!s) return undefined;
    const n = s.length * this.kvDim;
    return { length: s.length, layers: s.k.map((k, i) => ({ k: k.slice(0, n), v: s.v[i]!.slice(0, n) })) };
  }

  // kv-transfer
  importSession(sessionId: string, state: SessionState): void {
    const n = state.length * this.kvDim;
    if (state.layers.length !== this.range.end - this.range.start)
      throw new EngineError(`KV state has ${state.layers.length} layers, this stage has ${this.range.end - this.range.start}`, 'bad_input');
    if (state.length > this.config.contextLength)
      throw new EngineError(`KV state of ${state.length} tokens exceeds the context length`, 'capacity');
    for (const l of state.layers)
      if (l.k.length !== n || l.v.length !== n)
        throw new EngineError(`KV layer size ${l.k.length} ≠ ${state.length} × ${this.kvDim}`, 'bad_input');
    const cap = this.chunked(state.length);
    const grow = (x: Float32Array) => {
      const b = new Float32Array(cap * this.kvDim);
      b.set(x);
      return b;
    };
    this.sessions.set(sessionId, {
      length: state.length,
      busy: false,
      capacity: cap,
      k: state.layers.map((l) => grow(l.k)),
      v: state.layers.map((l) => grow(l.v)),
    });
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    this.sessions.clear();
    this.layers = [];
    this.embed = this.output = this.outNorm = undefined;
    this.arena = null;
  }

  async forward(input: StageInput): Promise<StageOutput> {
    return (await this.forwardBatch([input]))[0]!;
  }

  /**
   * One pass over several sessions' steps: their rows are stacked, so every matrix is read once
   * for the whole batch; RoPE and attention run per session against its own cache. Every row
   * goes through exactly the operations of an unbatched step, so results are bit-identical.
   * Inputs are all validated before any session changes.
   */
  async forwardBatch(inputs: StageInput[]): Promise<StageOutput[]> {
    if (this.disposed) throw new EngineError('stage is disposed', 'bad_input');
    if (inputs.length === 0) return [];
    if (new Set(inputs.map((i) => i.sessionId)).size !== inputs.length)
      throw new EngineError('a batch holds at most one step per session', 'bad_input');
    let t = performance.now();
    const c = this.config;
    const xs = inputs.map((i) => this.prepare(i));
    const ss = inputs.map((i) => this.session(i.sessionId, i.pos, i.nTokens));
    const parts: Part[] = [];
    let N = 0;
    for (let i = 0; i < inputs.length; i++) {
      const { pos, nTokens: n } = inputs[i]!;
      parts.push({ s: ss[i]!, pos, n, off: N });
      N += n;
    }
    let x: Float32Array;
    if (xs.length === 1) x = xs[0]!;
    else {
      x = new Float32Array(N * c.dim);
      for (let i = 0; i < xs.length; i++) x.set(xs[i]!, parts[i]!.off * c.dim);
    }
    for (const s of ss) s.busy = true;
    let computeMs = 0;
    try {
      if (this.layers.length > 0) {
        const tables = parts.map((p) => ropeTables(this.invFreq, p.pos, p.n));
        const scratch = this.scratch(N);
        // long steps yield to the event loop between layers so a node's networking stays
        // responsive; computeMs counts only our own synchronous work
        const yieldEvery = N * this.layerMacs > YIELD_MACS;
        for (let li = 0; li < this.layers.length; li++) {
          this.layerForward(li, x, parts, N, tables, scratch);
          if (yieldEvery && li + 1 < this.layers.length) {
            computeMs += performance.now() - t;
            await new Promise<void>((r) => setImmediate(r));
            if (this.disposed) throw new EngineError('stage disposed during a step', 'internal');
            t = performance.now();
          }
        }
      }
      for (const p of parts) p.s.length = p.pos + p.n;
      let outs: Omit<StageOutput, 'computeMs'>[];
      if (this.range.head) {
        const logits = this.head(
          x,
          parts,
          inputs.map((i) => i.allLogits ?? false),
        );
        outs = logits.map((l) => ({ logits: l }));
      } else {
        // each part's rows, or its last row alone when only that is wanted
        outs = parts.map((p, i) => {
          const from = inputs[i]!.lastRow ? p.off + p.n - 1 : p.off;
          return { hidden: parts.length === 1 && from === 0 ? x : x.subarray(from * c.dim, (p.off + p.n) * c.dim) };
        });
      }
      computeMs += performance.now() - t;
      return outs.map((o) => ({ ...o, computeMs }));
    } finally {
      for (const s of ss) s.busy = false;
    }
  }

  /** positions a cache holding `n` takes: whole chunks, within the context length */
  private chunked(n: number): number {
    return Math.min(this.config.contextLength, Math.max(1, Math.ceil(n / KV_CHUNK)) * KV_CHUNK);
  }

  /** the session a prepared step runs in (prepare checked its position and length), made ready for `nTok` more positions */
  private session(id: string, pos: number, nTok: number): Session {
    const need = pos + nTok;
    let s = this.sessions.get(id);
    if (!s) {
      if (this.opts.maxSessions !== undefined && this.sessions.size >= this.opts.maxSessions) {
        throw new EngineError(`too many sessions (limit ${this.opts.maxSessions})`, 'capacity');
      }
      s = { length: 0, busy: false, capacity: 0, k: [], v: [] };
      this.sessions.set(id, s);
    }
    if (s.busy) throw new EngineError(`session ${id} already has a step in flight`, 'bad_input');
    s.length = pos; // pos < length truncates (replay / retry)
    if (need > s.capacity && this.layers.length > 0) {
      const cap = this.chunked(need);
      const grow = (old: Float32Array | undefined): Float32Array => {
        const b = new Float32Array(cap * this.kvDim);
        if (old) b.set(old.subarray(0, s!.length * this.kvDim)); // only the live prefix
        return b;
      };
      s.k = this.layers.map((_, i) => grow(s!.k[i]));
      s.v = this.layers.map((_, i) => grow(s!.v[i]));
      s.capacity = cap;
    }
    return s;
  }

  /** validate the input (before touching the session, so a bad call leaves it unchanged), embed */
  private prepare(input: StageInput): Float32Array {
    const c = this.config;
    const n = input.nTokens;
    checkStepInput(input, {
      config: c,
      range: this.range,
      maxContext: c.contextLength,
      cachedLength: this.sessions.get(input.sessionId)?.length,
    });
    if (!this.range.embed) return Float32Array.from(input.hidden!);
    const x = new Float32Array(n * c.dim);
    for (let t = 0; t < n; t++) {
      const id = input.tokens![t]!;
      x.set(this.embed!.subarray(id * c.dim, (id + 1) * c.dim), t * c.dim);
    }
    return x;
  }

  /** logits of each part: its last row, or all its rows when asked; one matmul for the batch */
  private head(x: Float32Array, parts: Part[], allLogits: boolean[]): Float32Array[] {
    const c = this.config;
    const rows = parts.map((p, i) => (allLogits[i] ? p.n : 1));
    const R = rows.reduce((a, b) => a + b, 0);
    const xn = new Float32Array(R * c.dim);
    let r = 0;
    parts.forEach((p, i) => {
      const first = p.off + p.n - rows[i]!;
      rmsnorm(xn.subarray(r * c.dim), x.subarray(first * c.dim, (first + rows[i]!) * c.dim), this.outNorm!, rows[i]!, c.dim, c.normEps);
      r += rows[i]!;
    });
    const logits = new Float32Array(R * c.vocabSize);
    this.mm(logits, xn, this.output!, R, c.dim, c.vocabSize);
    if (parts.length === 1) return [logits];
    const out: Float32Array[] = [];
    r = 0;
    for (const n of rows) {
      out.push(logits.slice(r * c.vocabSize, (r + n) * c.vocabSize));
      r += n;
    }
    return out;
  }

  private scratch(n: number): Scratch {
    const c = this.config;
    const qDim = c.nHeads * c.headDim;
    return {
      xn: new Float32Array(n * c.dim),
      q: new Float32Array(n * qDim),
      att: new Float32Array(n * qDim),
      o: new Float32Array(n * c.dim),
      g: new Float32Array(n * c.ffnDim),
      u: new Float32Array(n * c.ffnDim),
      k: new Float32Array(n * this.kvDim),
      v: new Float32Array(n * this.kvDim),
    };
  }

  private layerForward(li: number, x: Float32Array, parts: Part[], n: number, rts: RopeTables[], b: Scratch): void {
    const c = this.config;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = this.kvDim;
    const w = this.layers[li];
    // attention block: matrices over all rows, RoPE and attention per session
    rmsnorm(b.xn, x, w.attnNorm, n, c.dim, c.normEps);
    this.mm(b.q, b.xn, w.q, n, c.dim, qDim);
    if (parts.length === 1) {
      const { s, pos } = parts[0]!;
      const kNew = s.k[li].subarray(pos * kvDim, (pos + n) * kvDim);
      const vNew = s.v[li].subarray(pos * kvDim, (pos + n) * kvDim);
      this.mm(kNew, b.xn, w.k, n, c.dim, kvDim);
      this.mm(vNew, b.xn, w.v, n, c.dim, kvDim);
    } else {
      this.mm(b.k, b.xn, w.k, n, c.dim, kvDim);
      this.mm(b.v, b.xn, w.v, n, c.dim, kvDim);
      for (const p of parts) {
        p.s.k[li].set(b.k.subarray(p.off * kvDim, (p.off + p.n) * kvDim), p.pos * kvDim);
        p.s.v[li].set(b.v.subarray(p.off * kvDim, (p.off + p.n) * kvDim), p.pos * kvDim);
      }
    }
    parts.forEach((p, i) => {
      const rt = rts[i]!;
      const q = b.q.subarray(p.off * qDim, (p.off + p.n) * qDim);
      rope(q, p.n, c.nHeads, hd, rt.cos, rt.sin);
      rope(p.s.k[li].subarray(p.pos * kvDim, (p.pos + p.n) * kvDim), p.n, c.nKvHeads, hd, rt.cos, rt.sin);
      attention(b.att.subarray(p.off * qDim, (p.off + p.n) * qDim), q, p.s.k[li], p.s.v[li], p.pos, p.n, c.nHeads, c.nKvHeads, hd);
    });
    this.mm(b.o, b.att, w.o, n, qDim, c.dim);
    addInPlace(x, b.o);
    // feed-forward block
    rmsnorm(b.xn, x, w.ffnNorm, n, c.dim, c.normEps);
    this.mm(b.g, b.xn, w.gate, n, c.dim, c.ffnDim);
    this.mm(b.u, b.xn, w.up, n, c.dim, c.ffnDim);
    swiglu(b.g, b.u);
    this.mm(b.o, b.g, w.down, n, c.ffnDim, c.dim);
    addInPlace(x, b.o);
  }
}
