// The reference engine: a pure-TypeScript Llama layer range whose results are bit-reproducible
// on any machine running V8 (rules in reference/kernels.ts). It is slow next to ORT, and it is
// the referee: verification replays a node's work here, with exactly the weights the node
// declared (quantized tensors are dequantized to f32 once, at load).

import { performance } from 'node:perf_hooks';
import { ModelFormatError, tensorNames as tn, type ModelConfig, type WeightSource } from '../model/types.js';
import { EngineError, type Stage, type StageInput, type StageOutput, type StageRange } from './types.js';
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
  /** capacity in positions of every layer's K and V buffers */
  capacity: number;
  /** per layer [capacity, nKvHeads*headDim] */
  k: Float32Array[];
  v: Float32Array[];
}

/** KV buffers grow in chunks of this many positions (then doubling), never per token */
const KV_CHUNK = 256;

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
  private layers: LayerWeights[] = [];
  private embed?: Float32Array;
  private outNorm?: Float32Array;
  private output?: Float32Array;
  private invFreq: Float32Array;
  private sessions = new Map<string, Session>();
  private kvDim: number;
  private arena: WasmArena | null = null;

  constructor(
    src: WeightSource,
    readonly range: StageRange,
    private opts: ReferenceStageOptions,
  ) {
    const c = (this.config = src.config);
    checkRange(c, range);
    this.range = { ...range };
    this.kvDim = c.nKvHeads * c.headDim;
    const qDim = c.nHeads * c.headDim;
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

  async dispose(): Promise<void> {
    this.sessions.clear();
    this.layers = [];
    this.embed = this.output = this.outNorm = undefined;
    this.arena = null;
  }

  async forward(input: StageInput): Promise<StageOutput> {
    const t0 = performance.now();
    const out = this.run(input);
    out.computeMs = performance.now() - t0;
    return out;
  }

  private session(id: string, pos: number, nTok: number): Session {
    const need = pos + nTok;
    if (need > this.config.contextLength) {
      throw new EngineError(`context overflow: ${need} positions > context length ${this.config.contextLength}`, 'capacity');
    }
    let s = this.sessions.get(id);
    if (!s) {
      if (pos !== 0) throw new EngineError(`unknown session ${id} (first step must start at position 0, got ${pos})`, 'unknown_session');
      if (this.opts.maxSessions !== undefined && this.sessions.size >= this.opts.maxSessions) {
        throw new EngineError(`too many sessions (limit ${this.opts.maxSessions})`, 'capacity');
      }
      s = { length: 0, capacity: 0, k: [], v: [] };
      this.sessions.set(id, s);
    }
    if (pos > s.length) throw new EngineError(`position ${pos} is beyond the session's cached length ${s.length}`, 'bad_input');
    s.length = pos; // pos < length truncates (replay / retry)
    if (need > s.capacity && this.layers.length > 0) {
      const cap = Math.min(this.config.contextLength, Math.max(need, s.capacity * 2, KV_CHUNK));
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

  private run(input: StageInput): StageOutput {
    const c = this.config;
    const { pos, nTokens: n } = input;
    if (!Number.isInteger(n) || n < 1) throw new EngineError(`nTokens must be a positive integer, got ${n}`, 'bad_input');
    if (!Number.isInteger(pos) || pos < 0) throw new EngineError(`pos must be a non-negative integer, got ${pos}`, 'bad_input');

    // validate the input before touching the session, so a bad call leaves it unchanged
    let x: Float32Array;
    if (this.range.embed) {
      const tokens = input.tokens;
      if (!tokens || tokens.length !== n) throw new EngineError(`expected ${n} token ids, got ${tokens?.length ?? 'none'}`, 'bad_input');
      x = new Float32Array(n * c.dim);
      for (let t = 0; t < n; t++) {
        const id = tokens[t];
        if (!(id >= 0 && id < c.vocabSize)) throw new EngineError(`token id ${id} out of range [0, ${c.vocabSize})`, 'bad_input');
        x.set(this.embed!.subarray(id * c.dim, (id + 1) * c.dim), t * c.dim);
      }
    } else {
      const h = input.hidden;
      if (!h || h.length !== n * c.dim) throw new EngineError(`expected hidden of ${n}×${c.dim} floats, got ${h?.length ?? 'none'}`, 'bad_input');
      x = Float32Array.from(h);
    }

    const s = this.session(input.sessionId, pos, n);
    if (this.layers.length > 0) this.layersForward(x, s, pos, n);
    s.length = pos + n;

    if (!this.range.head) return { hidden: x, computeMs: 0 };
    const rows = input.allLogits ? n : 1;
    const first = n - rows;
    const xn = new Float32Array(rows * c.dim);
    rmsnorm(xn, x.subarray(first * c.dim), this.outNorm!, rows, c.dim, c.normEps);
    const logits = new Float32Array(rows * c.vocabSize);
    this.mm(logits, xn, this.output!, rows, c.dim, c.vocabSize);
    return { logits, computeMs: 0 };
  }

  private layersForward(x: Float32Array, s: Session, pos: number, n: number): void {
    const c = this.config;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = this.kvDim;
    const xn = new Float32Array(n * c.dim);
    const q = new Float32Array(n * qDim);
    const att = new Float32Array(n * qDim);
    const o = new Float32Array(n * c.dim);
    const g = new Float32Array(n * c.ffnDim);
    const u = new Float32Array(n * c.ffnDim);
    const { cos, sin } = ropeTables(this.invFreq, pos, n);
    for (let li = 0; li < this.layers.length; li++) {
      const w = this.layers[li];
      // attention block
      rmsnorm(xn, x, w.attnNorm, n, c.dim, c.normEps);
      this.mm(q, xn, w.q, n, c.dim, qDim);
      const kNew = s.k[li].subarray(pos * kvDim, (pos + n) * kvDim);
      const vNew = s.v[li].subarray(pos * kvDim, (pos + n) * kvDim);
      this.mm(kNew, xn, w.k, n, c.dim, kvDim);
      this.mm(vNew, xn, w.v, n, c.dim, kvDim);
      rope(q, n, c.nHeads, hd, cos, sin);
      rope(kNew, n, c.nKvHeads, hd, cos, sin);
      attention(att, q, s.k[li], s.v[li], pos, n, c.nHeads, c.nKvHeads, hd);
      this.mm(o, att, w.o, n, qDim, c.dim);
      addInPlace(x, o);
      // feed-forward block
      rmsnorm(xn, x, w.ffnNorm, n, c.dim, c.normEps);
      this.mm(g, xn, w.gate, n, c.dim, c.ffnDim);
      this.mm(u, xn, w.up, n, c.dim, c.ffnDim);
      swiglu(g, u);
      this.mm(o, g, w.down, n, c.ffnDim, c.dim);
      addInPlace(x, o);
    }
  }
}
