// The ORT side of a stage: builds the graph from raw tensors, owns the InferenceSession and
// the per-session KV caches, runs forward steps. Runs inside the stage's worker thread
// (worker.ts); everything here is synchronous with respect to one step.

import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import ort from 'onnxruntime-node';
import { openModel } from '../../model/load.js';
import { dequantize } from '../../model/quant.js';
import { tensorNames as tn, type ModelConfig } from '../../model/types.js';
import { EngineError, type StageInput, type StageOutput, type StageRange, type SessionState } from '../types.js'; // kv-transfer: + EngineError, SessionState
import { buildStageGraph, type AttentionPath, type LayerWeightsIn } from './graph.js';
import { fitLanes, laneBudget, laneBytes, laneFeeds, longOutliers, oneLane, type LaneLayout, type LaneStep } from './batch-layout.js';
import { LANE_SHARE, LaneBuffers, laneWidth } from './lane-buffers.js';
import { concatRows, prepareLinear, type LinearWeight, type RawTensor, type WeightMode } from './weights.js';
import { concatF32 } from '../../util/concat-f32.js';

export interface LoadSpec {
  config: ModelConfig;
  range: StageRange;
  mode: WeightMode;
  path: AttentionPath;
  threads: number;
  maxContext: number;
  accuracyLevel: number;
  allowSpinning: boolean;
  f32Linear?: 'fused' | 'matmul';
  invFreq: Float32Array;
  /** bytes for the sessions' caches and batched attention's lanes together: the lanes (with a
   *  batch's mask and scores) take what the caches leave, at least LANE_SHARE of it; absent: no bound */
  kvBudget?: number;
  /** raw tensors of exactly this range, by canonical name (sources without a file) */
  tensors: Record<string, RawTensor>;
  /** or: the model file/directory, read here tensor by tensor (only `names`), which keeps the
   *  peak at one tensor's raw bytes instead of the whole range's */
  modelPath?: string;
  names?: string[];
}

/** a step as it crosses to the worker: the Stage's own input */
export type StepIn = StageInput;

/** the Stage's output, plus the session's cached length after the step */
export type StepOut = StageOutput & { length: number };

export interface LoadInfo {
  buildMs: number;
  createMs: number;
  graphBytes: number;
  initBytes: number;
}

/** a session's std-path cache grows in chunks of this many positions (masked slots cost a little compute) */
export const STD_CHUNK = 64;

/** longest chunk one session.run processes */
const MAX_CHUNK = 256;

interface GqaKv {
  kind: 'gqa';
  length: number;
  k: ort.Tensor[];
  v: ort.Tensor[];
}
interface StdKv {
  kind: 'std';
  length: number;
  cap: number;
  k: Float32Array[]; // [KVH, D, cap]
  v: Float32Array[]; // [KVH, cap, D]
}
type Kv = GqaKv | StdKv;

export class OrtRunner {
  private session?: ort.InferenceSession;
  private embedRaw?: RawTensor;
  private sessions = new Map<string, Kv>();
  /** the lanes batches lay the sessions' caches into (std path) */
  private readonly lanes: LaneBuffers;
  /** bytes L lanes of C slots and R rows take (./batch-layout.ts); (1, 1, 0) is a cache position's */
  private readonly laneBytes: (L: number, C: number, R: number) => number;
  private nLayers: number;
  readonly info: LoadInfo;

  private constructor(
    private spec: Omit<LoadSpec, 'tensors'>,
    info: LoadInfo,
  ) {
    this.nLayers = spec.range.end - spec.range.start;
    const c = spec.config;
    const dims = { layers: this.nLayers, kvHeads: c.nKvHeads, headDim: c.headDim };
    this.lanes = new LaneBuffers(dims);
    this.laneBytes = laneBytes({ ...dims, heads: c.nHeads });
    this.info = info;
  }

  static async create(spec: LoadSpec, onRead?: (bytes: number) => void): Promise<OrtRunner> {
    const { tensors } = spec;
    const file = spec.modelPath ? openModel(spec.modelPath, { skipCheck: true }) : undefined;
    const has = (name: string) => name in tensors || (!!file && !!spec.names?.includes(name));
    const get = (name: string): RawTensor => {
      const t = tensors[name];
      if (t) return t;
      if (!file || !spec.names?.includes(name)) throw new Error(`tensor ${name} was not loaded`);
      const info = file.info(name);
      const data = file.readRaw(name);
      onRead?.(data.byteLength);
      return { type: info.type, shape: info.shape, data };
    };
    const take = (name: string): RawTensor => {
      const t = get(name);
      delete tensors[name]; // let buffers go as soon as they are converted
      return t;
    };
    try {
      return await OrtRunner.build(spec, take, get, has);
    } finally {
      file?.close();
    }
  }

  private static async build(
    spec: LoadSpec,
    take: (name: string) => RawTensor,
    get: (name: string) => RawTensor,
    has: (name: string) => boolean,
  ): Promise<OrtRunner> {
    const { config: c, range, mode, tensors } = spec;
    const f32 = (t: RawTensor) =>
      dequantize(
        t.type,
        t.data,
        t.shape.reduce((a, b) => a * b, 1),
      );
    const t0 = performance.now();
    const layers: LayerWeightsIn[] = [];
    for (let l = range.start; l < range.end; l++) {
      const lin = (name: string) => prepareLinear(take(name), mode, name);
      layers.push({
        attnNorm: f32(take(tn.attnNorm(l))),
        qkv: concatRows([lin(tn.q(l)), lin(tn.k(l)), lin(tn.v(l))]),
        o: lin(tn.o(l)),
        ffnNorm: f32(take(tn.ffnNorm(l))),
        gateUp: concatRows([lin(tn.gate(l)), lin(tn.up(l))]),
        down: lin(tn.down(l)),
      });
    }
    const embedRaw = range.embed ? get(tn.embed) : undefined;
    let head: { norm: Float32Array; output: LinearWeight } | undefined;
    if (range.head) {
      const outName = has(tn.output) ? tn.output : tn.embed;
      head = {
        norm: f32(take(tn.outputNorm)),
        output: prepareLinear(outName === tn.embed && embedRaw ? embedRaw : get(outName), mode, outName),
      };
      delete tensors[tn.output];
    }
    delete tensors[tn.embed];
    const info: LoadInfo = { buildMs: 0, createMs: 0, graphBytes: 0, initBytes: 0 };
    const runner = new OrtRunner(spec, info);
    runner.embedRaw = embedRaw;
    if (layers.length > 0 || head) {
      const enc = buildStageGraph({
        config: c,
        path: spec.path,
        layers,
        head,
        invFreq: spec.invFreq,
        maxContext: spec.maxContext,
        accuracyLevel: spec.accuracyLevel,
        f32Linear: spec.f32Linear,
        // protobuf refuses models above 2 GB: big graphs pass their large initializers as
        // in-memory external data instead
        externalThreshold: weightBytes(layers, head) > 1.5e9 ? 1 << 16 : Infinity,
      });
      layers.length = 0;
      head = undefined;
      const total = enc.model.byteLength + enc.externalData.reduce((s, e) => s + e.data.byteLength, 0);
      info.buildMs = performance.now() - t0;
      info.graphBytes = enc.model.byteLength;
      info.initBytes = total;
      const t1 = performance.now();
      const opts: ort.InferenceSession.SessionOptions = {
        executionProviders: ['cpu'],
        intraOpNumThreads: spec.threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
        extra: { 'session.intra_op.allow_spinning': spec.allowSpinning ? '1' : '0' },
      };
      if (enc.externalData.length) (opts as { externalData?: unknown }).externalData = enc.externalData;
      runner.session = await ort.InferenceSession.create(enc.model, opts);
      info.createMs = performance.now() - t1;
      // ORT now holds its own (prepacked) copy: drop ours at once rather than at some later GC
      enc.model = new Uint8Array(0);
      enc.externalData.length = 0;
      collectGarbage();
    }
    return runner;
  }

  sessionLength(id: string): number {
    return this.sessions.get(id)?.length ?? 0;
  }

  closeSession(id: string): void {
    const kv = this.sessions.get(id);
    this.sessions.delete(id);
    if (this.sessions.size === 0) this.lanes.clear();
    else if (kv?.kind === 'std') this.lanes.drop(kv);
  }

  async dispose(): Promise<void> {
    this.sessions.clear();
    await this.session?.release();
    this.session = undefined;
  }

  /** long inputs run as consecutive chunks: attention scratch grows with chunk × context */
  async step(inp: StepIn): Promise<StepOut> {
    const S = inp.nTokens;
    if (S <= MAX_CHUNK) return this.stepOnce(inp);
    const dim = this.spec.config.dim;
    const t0 = performance.now();
    const parts: Float32Array[] = [];
    let last: StepOut | undefined;
    for (let off = 0; off < S; off += MAX_CHUNK) {
      const n = Math.min(MAX_CHUNK, S - off);
      last = await this.stepOnce({
        ...inp,
        pos: inp.pos + off,
        nTokens: n,
        tokens: inp.tokens?.slice(off, off + n),
        hidden: inp.hidden?.slice(off * dim, (off + n) * dim),
      });
      const part = last.hidden ?? last.logits!;
      if (last.hidden || inp.allLogits) parts.push(part);
    }
    const res: StepOut = { computeMs: performance.now() - t0, length: last!.length };
    if (this.spec.range.head) res.logits = inp.allLogits ? concatF32(parts) : last!.logits!;
    else res.hidden = concatF32(parts);
    return res;
  }

  private async stepOnce(inp: StepIn): Promise<StepOut> {
    const c = this.spec.config;
    const t0 = performance.now();
    const S = inp.nTokens;
    let x: Float32Array;
    if (this.spec.range.embed) x = this.embed(inp.tokens!);
    else x = inp.hidden!;

    let kv = this.sessions.get(inp.sessionId);
    if (!kv) {
      kv = this.spec.path === 'gqa' ? this.newGqa() : { kind: 'std', length: 0, cap: 0, k: [], v: [] };
      this.sessions.set(inp.sessionId, kv);
    }
    if (inp.pos < kv.length) this.truncate(kv, inp.pos);

    if (!this.session) {
      kv.length = inp.pos + S;
      return { hidden: x, computeMs: performance.now() - t0, length: kv.length };
    }
    const feeds: Record<string, ort.Tensor> = { hidden_in: new ort.Tensor('float32', x, [1, S, c.dim]) };
    if (this.spec.range.head) feeds.head_start = new ort.Tensor('int64', BigInt64Array.of(BigInt(inp.allLogits ? 0 : S - 1)), [1]);
    if (this.nLayers > 0) {
      if (kv.kind === 'gqa') this.gqaFeeds(feeds, kv, inp.pos, S);
      else this.stdFeeds(feeds, kv, inp.pos, S);
    }
    const out = await this.session.run(feeds);
    if (this.nLayers > 0) {
      if (kv.kind === 'gqa') {
        for (let l = 0; l < this.nLayers; l++) {
          kv.k[l] = out[`present_key_${l}`]!;
          kv.v[l] = out[`present_value_${l}`]!;
        }
      } else this.stdAppend(kv, out, inp.pos, S);
    }
    kv.length = inp.pos + S;
    const res: StepOut = { computeMs: 0, length: kv.length };
    if (this.spec.range.head) res.logits = out.logits!.data as Float32Array;
    else res.hidden = out.hidden_out!.data as Float32Array;
    res.computeMs = performance.now() - t0;
    return res;
  }

  private embed(tokens: Int32Array): Float32Array {
    const c = this.spec.config;
    const e = this.embedRaw!;
    const rowBytes = e.data.byteLength / c.vocabSize;
    const x = new Float32Array(tokens.length * c.dim);
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i]!;
      dequantize(e.type, e.data.subarray(id * rowBytes, (id + 1) * rowBytes), c.dim, x.subarray(i * c.dim, (i + 1) * c.dim));
    }
    return x;
  }

  private newGqa(): GqaKv {
    const c = this.spec.config;
    const empty = () => new ort.Tensor('float32', new Float32Array(0), [1, c.nKvHeads, 0, c.headDim]);
    return {
      kind: 'gqa',
      length: 0,
      k: Array.from({ length: this.nLayers }, empty),
      v: Array.from({ length: this.nLayers }, empty),
    };
  }

  // kv-transfer: a session's cache as [length, KVH*D] rows per layer (std path only)
  exportSession(id: string): SessionState | undefined {
    const kv = this.sessions.get(id);
    if (!kv) return undefined;
    if (kv.kind !== 'std') throw new EngineError('KV export is implemented for the std attention path only', 'bad_input');
    const { nKvHeads: KVH, headDim: D } = this.spec.config;
    const C = kv.cap;
    const n = kv.length;
    const layers: SessionState['layers'] = [];
    for (let l = 0; l < this.nLayers; l++) {
      const k = new Float32Array(n * KVH * D);
      const v = new Float32Array(n * KVH * D);
      const sk = kv.k[l]!;
      const sv = kv.v[l]!;
      for (let p = 0; p < n; p++)
        for (let h = 0; h < KVH; h++) {
          const dst = (p * KVH + h) * D;
          v.set(sv.subarray((h * C + p) * D, (h * C + p + 1) * D), dst);
          for (let d = 0; d < D; d++) k[dst + d] = sk[(h * D + d) * C + p]!;
        }
      layers.push({ k, v });
    }
    return { length: n, layers };
  }

  // kv-transfer
  importSession(id: string, st: SessionState): void {
    if (this.spec.path === 'gqa') throw new EngineError('KV import is implemented for the std attention path only', 'bad_input');
    const { nKvHeads: KVH, headDim: D } = this.spec.config;
    const n = st.length;
    if (st.layers.length !== this.nLayers)
      throw new EngineError(`KV state has ${st.layers.length} layers, this stage has ${this.nLayers}`, 'bad_input');
    if (n > this.spec.maxContext)
      throw new EngineError(`KV state of ${n} tokens exceeds the maximum context ${this.spec.maxContext}`, 'capacity');
    for (const l of st.layers)
      if (l.k.length !== n * KVH * D || l.v.length !== n * KVH * D)
        throw new EngineError(`KV layer size ${l.k.length} ≠ ${n} × ${KVH * D}`, 'bad_input');
    const C = Math.min(this.spec.maxContext, Math.max(STD_CHUNK, Math.ceil(n / STD_CHUNK) * STD_CHUNK));
    const kv: StdKv = { kind: 'std', length: n, cap: C, k: [], v: [] };
    for (const { k: sk, v: sv } of st.layers) {
      const k = new Float32Array(KVH * D * C);
      const v = new Float32Array(KVH * C * D);
      for (let p = 0; p < n; p++)
        for (let h = 0; h < KVH; h++) {
          const src = (p * KVH + h) * D;
          v.set(sv.subarray(src, src + D), (h * C + p) * D);
          for (let d = 0; d < D; d++) k[(h * D + d) * C + p] = sk[src + d]!;
        }
      kv.k.push(k);
      kv.v.push(v);
    }
    this.sessions.set(id, kv);
    if (this.spec.kvBudget !== undefined) this.lanes.trim(this.laneSlots());
  }

  private truncate(kv: Kv, n: number): void {
    const c = this.spec.config;
    const D = c.headDim;
    const KVH = c.nKvHeads;
    if (kv.kind === 'gqa') {
      // BNSH: keep the first n rows of every head
      const cut = (t: ort.Tensor): ort.Tensor => {
        const old = t.data as Float32Array;
        const len = t.dims[2]!;
        const b = new Float32Array(KVH * n * D);
        for (let h = 0; h < KVH; h++) b.set(old.subarray(h * len * D, h * len * D + n * D), h * n * D);
        return new ort.Tensor('float32', b, [1, KVH, n, D]);
      };
      kv.k = kv.k.map(cut);
      kv.v = kv.v.map(cut);
    }
    // std: slots >= length are masked, nothing to move
    else this.lanes.forget(kv, n);
    kv.length = n;
  }

  private gqaFeeds(feeds: Record<string, ort.Tensor>, kv: GqaKv, pos: number, S: number): void {
    const total = pos + S;
    feeds.seqlens_k = new ort.Tensor('int32', Int32Array.of(total - 1), [1]);
    feeds.total_seq_len = new ort.Tensor('int32', Int32Array.of(total), []);
    for (let l = 0; l < this.nLayers; l++) {
      feeds[`past_key_${l}`] = kv.k[l]!;
      feeds[`past_value_${l}`] = kv.v[l]!;
    }
  }

  private stdFeeds(feeds: Record<string, ort.Tensor>, kv: StdKv, pos: number, S: number): void {
    const c = this.spec.config;
    const D = c.headDim;
    const KVH = c.nKvHeads;
    this.ensureCap(kv, pos, pos + S);
    // one lane: the session's capacity-sized cache as stored (slots past `pos` masked)
    const steps = [{ pos, nTokens: S }];
    this.laneInputs(feeds, oneLane(steps[0]!, kv.cap), steps);
    for (let l = 0; l < this.nLayers; l++) {
      feeds[`cache_k_${l}`] = new ort.Tensor('float32', kv.k[l]!, [KVH, 1, D, kv.cap]);
      feeds[`cache_v_${l}`] = new ort.Tensor('float32', kv.v[l]!, [KVH, 1, kv.cap, D]);
    }
  }

  /** the std graph's per-step inputs but the caches, step b in lane laneOf[b]: RoPE per lane row, mask, indices */
  private laneInputs(feeds: Record<string, ort.Tensor>, layout: LaneLayout, steps: LaneStep[], laneOf?: number[]): void {
    const D = this.spec.config.headDim;
    const { L, C, R } = layout;
    const half = D / 2;
    const inv = this.spec.invFreq;
    const cos = new Float32Array(L * R * D); // a padding row's stay 0: its q and k are 0
    const sin = new Float32Array(L * R * D);
    steps.forEach((st, b) => {
      for (let j = 0; j < st.nTokens; j++) {
        const lr = (laneOf?.[b] ?? b) * R + j;
        for (let i = 0; i < half; i++) {
          const a = (st.pos + j) * inv[i]!;
          const co = Math.cos(a);
          const si = Math.sin(a);
          const o = lr * D + 2 * i;
          cos[o] = co;
          cos[o + 1] = co;
          sin[o] = -si; // out0 = x0*cos - x1*sin
          sin[o + 1] = si; // out1 = x1*cos + x0*sin
        }
      }
    });
    const G = this.spec.config.nHeads / this.spec.config.nKvHeads;
    const f = laneFeeds(layout, steps, G, laneOf);
    feeds.rope_cos = new ort.Tensor('float32', cos, [L * R, 1, half, 2]);
    feeds.rope_sin = new ort.Tensor('float32', sin, [L * R, 1, half, 2]);
    feeds.lane_dims = new ort.Tensor('int64', BigInt64Array.of(BigInt(L), BigInt(R)), [2]);
    feeds.attn_mask = new ort.Tensor('float32', f.mask, [L, G * R, C + R]);
    feeds.split_sizes = new ort.Tensor('int64', BigInt64Array.of(BigInt(C), BigInt(R)), [2]);
    feeds.row_index = new ort.Tensor('int64', f.rowIndex, [L * R]);
    feeds.out_index = new ort.Tensor('int64', f.outIndex, [f.outIndex.length]);
  }

  /** grows a std cache (in STD_CHUNK steps) to hold `need` positions, keeping the first `keep` */
  private ensureCap(kv: StdKv, keep: number, need: number): void {
    const c = this.spec.config;
    const D = c.headDim;
    const KVH = c.nKvHeads;
    const pos = keep;
    if (need > kv.cap) {
      const cap = Math.min(this.spec.maxContext, Math.ceil(need / STD_CHUNK) * STD_CHUNK);
      for (let l = 0; l < this.nLayers; l++) {
        const k = new Float32Array(KVH * D * cap);
        const v = new Float32Array(KVH * cap * D);
        const ok = kv.k[l];
        const ov = kv.v[l];
        if (ok && ov) {
          for (let h = 0; h < KVH; h++) {
            for (let d = 0; d < D; d++) {
              const src = (h * D + d) * kv.cap;
              k.set(ok.subarray(src, src + pos), (h * D + d) * cap);
            }
            v.set(ov.subarray(h * kv.cap * D, h * kv.cap * D + pos * D), h * cap * D);
          }
        }
        kv.k[l] = k;
        kv.v[l] = v;
      }
      kv.cap = cap;
      // the caches took more of the KV budget: the lanes keep only what it still leaves them
      if (this.spec.kvBudget !== undefined) this.lanes.trim(this.laneSlots());
    }
  }

  /**
   * Several sessions' steps in one session.run (continuous batching): their rows are stacked,
   * so every weight matrix is read once for the batch; attention stays per sequence: the
   * sessions' live caches are copied into lanes (./batch-layout.ts), and the mask keeps every
   * row to its own session's slots (the graph is the one unbatched steps use).
   */
  async stepBatch(inps: StepIn[]): Promise<StepOut[]> {
    const c = this.spec.config;
    const dim = c.dim;
    if (inps.length === 1 || this.spec.path === 'gqa' || inps.some((i) => i.nTokens > MAX_CHUNK)) {
      const outs: StepOut[] = [];
      for (const inp of inps) outs.push(await this.step(inp));
      return outs;
    }
    // sessions created, truncated and grown first, so the lane budget counts what their caches now hold
    const kvs = inps.map((inp) => this.prepare(inp));
    const mayTake = this.lanesMayTake(); // one figure for the split and the buffers
    const parts = this.nLayers > 0 ? this.split(inps, mayTake) : undefined;
    if (parts) {
      // parts one after another (a part of one steps alone); outputs in input order
      const outs = new Array<StepOut>(inps.length);
      for (const part of parts) {
        const got = part.length === 1 ? [await this.step(inps[part[0]!]!)] : await this.stepBatch(part.map((i) => inps[i]!));
        part.forEach((i, j) => (outs[i] = got[j]!));
      }
      return outs;
    }
    const t0 = performance.now();
    const D = c.headDim;
    const KVH = c.nKvHeads;
    const N = inps.reduce((a, i) => a + i.nTokens, 0);
    const x = new Float32Array(N * dim);
    const rowOff: number[] = [];
    let r = 0;
    for (const inp of inps) {
      x.set(this.spec.range.embed ? this.embed(inp.tokens!) : inp.hidden!, r * dim);
      rowOff.push(r);
      r += inp.nTokens;
    }
    const finish = (out?: ort.InferenceSession.OnnxValueMapType, logitRows?: number[]): StepOut[] => {
      const res: StepOut[] = inps.map((inp, b) => {
        kvs[b]!.length = inp.pos + inp.nTokens;
        return { computeMs: 0, length: kvs[b]!.length };
      });
      const hid = out ? (out.hidden_out?.data as Float32Array | undefined) : x;
      const logits = out?.logits?.data as Float32Array | undefined;
      inps.forEach((inp, b) => {
        if (this.spec.range.head) {
          const V = c.vocabSize;
          const from = logitRows![b]!;
          const rows = inp.allLogits ? inp.nTokens : 1;
          res[b]!.logits = logits!.slice(from * V, (from + rows) * V);
        } else res[b]!.hidden = hid!.slice(rowOff[b]! * dim, (rowOff[b]! + inp.nTokens) * dim);
      });
      const ms = performance.now() - t0;
      for (const o of res) o.computeMs = ms;
      return res;
    };
    if (!this.session) return finish();
    const feeds: Record<string, ort.Tensor> = {};
    let logitRows: number[] | undefined;
    if (this.nLayers === 0) {
      // head only: just the rows whose logits are wanted, packed
      const rows: Float32Array[] = [];
      logitRows = [];
      let k = 0;
      inps.forEach((inp, b) => {
        const n = inp.allLogits ? inp.nTokens : 1;
        logitRows!.push(k);
        k += n;
        rows.push(x.subarray((rowOff[b]! + inp.nTokens - n) * dim, (rowOff[b]! + inp.nTokens) * dim));
      });
      const packed = new Float32Array(k * dim);
      rows.forEach((row, i) => packed.set(row, logitRows![i]! * dim));
      feeds.hidden_in = new ort.Tensor('float32', packed, [1, k, dim]);
      feeds.head_start = new ort.Tensor('int64', BigInt64Array.of(0n), [1]);
      return finish(await this.session.run(feeds), logitRows);
    }
    feeds.hidden_in = new ort.Tensor('float32', x, [1, N, dim]);
    if (this.spec.range.head) {
      feeds.head_start = new ort.Tensor('int64', BigInt64Array.of(0n), [1]);
      logitRows = inps.map((inp, b) => rowOff[b]! + (inp.allLogits ? 0 : inp.nTokens - 1));
    }
    // the sessions' live caches in lanes of their own (./batch-layout.ts, ./lane-buffers.ts)
    const R = Math.max(...inps.map((i) => i.nTokens));
    const lanes = this.lanes.fill(
      kvs,
      inps.map((i) => i.pos),
      this.laneSlots(mayTake),
    );
    const L = inps.length;
    const C = lanes.C;
    this.laneInputs(feeds, { L, C, R }, inps, lanes.laneOf);
    for (let l = 0; l < this.nLayers; l++) {
      feeds[`cache_k_${l}`] = new ort.Tensor('float32', lanes.k[l]!, [KVH, L, D, C]);
      feeds[`cache_v_${l}`] = new ort.Tensor('float32', lanes.v[l]!, [KVH, L, C, D]);
    }
    const out = await this.session.run(feeds);
    inps.forEach((inp, b) => this.stdAppend(kvs[b]!, out, inp.pos, inp.nTokens, lanes.laneOf[b]! * R));
    return finish(out, logitRows);
  }

  /** a batched step's session: created, truncated to the step's position, grown to hold its rows */
  private prepare(inp: StepIn): StdKv {
    let kv = this.sessions.get(inp.sessionId) as StdKv | undefined;
    if (!kv) {
      kv = { kind: 'std', length: 0, cap: 0, k: [], v: [] };
      this.sessions.set(inp.sessionId, kv);
    }
    if (inp.pos < kv.length) this.truncate(kv, inp.pos);
    if (this.nLayers > 0) this.ensureCap(kv, inp.pos, inp.pos + inp.nTokens);
    return kv;
  }

  /**
   * How a batch must be split before its sessions share lanes, if at all (./batch-layout.ts):
   * long outliers step alone, the rest as one part (`longOutliers`); else, when the lanes of
   * all would pass the lane budget, the shortest that fit share lanes and the others step
   * alone (`fitLanes`). Undefined: the batch goes as it is.
   */
  private split(inps: StepIn[], mayTake: number): number[][] | undefined {
    const alone = longOutliers(inps, laneWidth);
    if (alone.length) return [inps.map((_, i) => i).filter((i) => !alone.includes(i)), ...alone.map((i) => [i])];
    if (mayTake === Infinity) return undefined;
    const part = fitLanes(inps, laneWidth, this.laneBytes, mayTake);
    if (part.length === inps.length) return undefined;
    const rest = inps.map((_, i) => i).filter((i) => !part.includes(i));
    return [...(part.length >= 2 ? [part] : part.map((i) => [i])), ...rest.map((i) => [i])];
  }

  /** bytes the lanes may take now (./batch-layout.ts `laneBudget`; Infinity without a KV budget) */
  private lanesMayTake(): number {
    const B = this.spec.kvBudget;
    if (B === undefined) return Infinity;
    let slots = 0;
    for (const kv of this.sessions.values()) slots += kv.kind === 'std' ? kv.cap : kv.length;
    return laneBudget(B, slots * this.laneBytes(1, 1, 0), LANE_SHARE);
  }

  /** the lane slots `mayTake` bytes hold (default: what the lanes may take now) */
  private laneSlots(mayTake = this.lanesMayTake()): number {
    const slot = this.laneBytes(1, 1, 0);
    return slot > 0 ? Math.floor(mayTake / slot) : Infinity;
  }

  private stdAppend(kv: StdKv, out: ort.InferenceSession.OnnxValueMapType, pos: number, S: number, row0 = 0): void {
    const c = this.spec.config;
    const D = c.headDim;
    const KVH = c.nKvHeads;
    const C = kv.cap;
    for (let l = 0; l < this.nLayers; l++) {
      const nk = out[`new_k_${l}`]!.data as Float32Array; // [S, KVH, D]
      const nv = out[`new_v_${l}`]!.data as Float32Array;
      const k = kv.k[l]!;
      const v = kv.v[l]!;
      for (let s = 0; s < S; s++) {
        const p = pos + s;
        for (let h = 0; h < KVH; h++) {
          const src = ((row0 + s) * KVH + h) * D;
          v.set(nv.subarray(src, src + D), (h * C + p) * D);
          for (let d = 0; d < D; d++) k[(h * D + d) * C + p] = nk[src + d]!;
        }
      }
    }
  }
}

function linearBytes(w: LinearWeight): number {
  return w.kind === 'f32' ? w.data.byteLength : w.b.byteLength + w.scales.byteLength;
}

function weightBytes(layers: LayerWeightsIn[], head?: { output: LinearWeight }): number {
  let n = head ? linearBytes(head.output) : 0;
  for (const w of layers) n += linearBytes(w.qkv) + linearBytes(w.o) + linearBytes(w.gateUp) + linearBytes(w.down);
  return n;
}

/** a full GC, without needing --expose-gc on the command line */
function collectGarbage(): void {
  try {
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
  } catch {
    /* best effort */
  }
}
