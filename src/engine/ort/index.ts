// ORT engine: a Stage that runs a contiguous range of Llama layers (plus optional embedding
// and LM head) in onnxruntime-node, with an ONNX graph odsi builds itself (graph.ts).
// The session lives in a worker thread (worker.ts), or on the calling thread (../in-thread.ts)
// for an embedding-only stage, which has none, or with computeThread 'main'; this side reads
// exactly the range's tensors, validates every call, and tracks session lengths so
// sessionLength() is synchronous.

import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { ropeInvFreq } from '../../model/rope.js';
import { ModelFormatError, layerTensorNames, tensorNames as tn, type ModelConfig, type WeightSource } from '../../model/types.js';
import {
  EngineError,
  type ComputeThread,
  type Stage,
  type StageCapacity,
  type StageInput,
  type StageOutput,
  type StageRange,
  type SessionState, // kv-transfer
} from '../types.js';
import type { AttentionPath } from './graph.js';
import { STD_CHUNK, type LoadInfo, type LoadSpec, type StepIn, type StepOut } from './runner.js';
import { defaultMode, type RawTensor, type WeightMode } from './weights.js';
import { LANE_SHARE } from './lane-buffers.js';
import { ortHandler, type WorkerRequest } from './handler.js';
import { InThreadCaller } from '../in-thread.js';
import { EngineWorkerClient, type EngineCaller } from '../worker-client.js';
import { kvBytesPerPosition } from '../kv-bytes.js';
import { checkStepInput } from '../step-input.js';

export interface OrtStageOptions {
  /** weight precision; default: q4/q8 when every layer weight is stored Q4_0/Q8_0, else f32 */
  weights?: WeightMode;
  /** ORT intra-op threads (default: all cores) */
  threads?: number;
  /** called with each tensor's byte size as it is read (load progress) */
  onProgress?: (bytes: number) => void;
  /** longest session in positions (default: the model's context length) */
  maxContext?: number;
  /**
   * attention implementation. 'std' (standard ops, any head size) reads a capacity-sized cache
   * in place and measured faster than 'gqa' at long context (2× at 1024 positions, 4-bit
   * SmolLM2) and on par at 128, so 'auto' = 'std'. 'gqa' (com.microsoft GroupQueryAttention)
   * needs head size % 16 == 0.
   */
  attention?: 'auto' | AttentionPath;
  /** MatMulNBits accuracy_level: 4 = int8 activations (fast, default), 1 = fp32 activations */
  accuracyLevel?: number;
  /** let ORT's thread pool spin between ops (default false: on a busy 2-core machine spinning
   *  made 2-thread 4-bit decode 2.5× slower) */
  allowSpinning?: boolean;
  /** fp32 linear form (benchmarking): FusedMatMul with transB (default) or MatMul on a transposed copy */
  f32Linear?: 'fused' | 'matmul';
  /** memory for KV caches, all sessions together: four fifths for the sessions' caches, which
   *  `capacity.kvTokens` states, and batched attention's lanes get what the caches leave, at
   *  least a fifth (a batch whose lanes would take more is split) (default: neither bounded) */
  kvBudgetBytes?: number;
  /** where session.run runs: the stage's own worker thread (default) or the calling thread
   *  (an embedding-only stage, which runs no session, always answers on the calling thread) */
  computeThread?: ComputeThread;
}

export interface OrtStage extends Stage {
  /** graph build and session creation figures of this stage */
  readonly loadInfo: LoadInfo;
  readonly attention: AttentionPath;
}

export async function createOrtStage(src: WeightSource, range: StageRange, opts: OrtStageOptions = {}): Promise<OrtStage> {
  const c = src.config;
  checkRange(c, range);
  const names = neededTensors(src, range);
  const shapes = expectedShapes(c);
  const tensors: Record<string, RawTensor> = {};
  const transfer: ArrayBuffer[] = [];
  // file-backed sources are read by the worker itself, one tensor at a time
  const byPath = (src.format === 'gguf' || src.format === 'safetensors') && !!src.path && existsSync(src.path);
  for (const name of names) {
    const info = src.info(name);
    const want = shapes(name);
    if (want && (info.shape.length !== want.length || info.shape.some((d, i) => d !== want[i]))) {
      throw new ModelFormatError(`tensor ${name} has shape [${info.shape.join(', ')}], expected [${want.join(', ')}]`, src.path);
    }
    if (byPath) continue;
    let data = src.readRaw(name);
    opts.onProgress?.(data.byteLength);
    if (data.byteOffset !== 0 || data.buffer.byteLength !== data.byteLength || data.buffer instanceof SharedArrayBuffer)
      data = data.slice();
    transfer.push(data.buffer as ArrayBuffer);
    tensors[name] = { type: info.type, shape: info.shape, data };
  }
  // a tied LM head multiplies by token_embd, so its type decides a head-only stage's profile
  const tiedHead = range.head && !src.has(tn.output);
  const linearTypes = names.filter((n) => !n.endsWith('norm.weight') && (n !== tn.embed || tiedHead)).map((n) => src.info(n).type);
  const mode = opts.weights ?? defaultMode(linearTypes.length ? linearTypes : names.map((n) => src.info(n).type));
  const path: AttentionPath = opts.attention && opts.attention !== 'auto' ? opts.attention : 'std';
  if (path === 'gqa' && c.headDim % 16 !== 0)
    throw new EngineError(`GroupQueryAttention needs a head size that is a multiple of 16 (got ${c.headDim})`, 'bad_input');
  const maxContext = Math.min(opts.maxContext ?? c.contextLength, c.contextLength);
  const spec: LoadSpec = {
    config: c,
    range: { ...range },
    mode,
    path,
    threads: opts.threads ?? availableParallelism(),
    maxContext,
    accuracyLevel: opts.accuracyLevel ?? 4,
    allowSpinning: opts.allowSpinning ?? false,
    f32Linear: opts.f32Linear,
    invFreq: ropeInvFreq(c, src),
    kvBudget: opts.kvBudgetBytes,
    tensors,
    modelPath: byPath ? src.path : undefined,
    names: byPath ? names : undefined,
  };
  // an embedding-only stage (the gateway's) runs no ORT session: a row lookup per token, on the
  // calling thread; everything else on its own worker thread unless told otherwise
  const embedOnly = range.start === range.end && !range.head;
  const thread: ComputeThread = embedOnly || opts.computeThread === 'main' ? 'main' : 'worker';
  const w: EngineCaller<WorkerRequest> =
    thread === 'main'
      ? new InThreadCaller(ortHandler)
      : new EngineWorkerClient<WorkerRequest>(new URL('./worker.js', import.meta.url), 'ORT worker');
  w.onProgress = opts.onProgress;
  try {
    const info = (await w.call({ type: 'load', id: 0, spec }, transfer)) as LoadInfo;
    // the profile names what changes numerics: weight precision, and int8 activations unless level 4
    const profile = mode === 'f32' || spec.accuracyLevel === 4 ? `ort-${mode}` : `ort-${mode}-acc${spec.accuracyLevel}`;
    // cached positions are f32
    const kvBytesPerToken = kvBytesPerPosition(c, range.end - range.start);
    // with a budget, the sessions' caches hold four fifths of it (the lanes take what they leave)
    const kvTokens = opts.kvBudgetBytes === undefined ? undefined : Math.floor((opts.kvBudgetBytes * (1 - LANE_SHARE)) / kvBytesPerToken);
    const capacity: StageCapacity | undefined =
      kvBytesPerToken === 0 ? undefined : { ...(kvTokens === undefined ? {} : { kvTokens }), chunkTokens: STD_CHUNK, kvBytesPerToken };
    return new OrtStageImpl(w, c, { ...range }, profile, maxContext, info, path, capacity, thread);
  } catch (e) {
    await w.terminate();
    throw e;
  }
}

function checkRange(c: ModelConfig, range: StageRange): void {
  const { start, end } = range;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > c.nLayers || start > end) {
    throw new EngineError(`bad layer range [${start}, ${end}) for a model with ${c.nLayers} layers`, 'bad_input');
  }
  if (start === end && !range.embed && !range.head)
    throw new EngineError(`empty layer range [${start}, ${end}) with neither embedding nor head`, 'bad_input');
}

/** exactly the tensors this range needs: a node never reads the others */
function neededTensors(src: WeightSource, range: StageRange): string[] {
  const out: string[] = [];
  for (let l = range.start; l < range.end; l++) out.push(...layerTensorNames(l));
  if (range.embed || (range.head && !src.has(tn.output))) out.push(tn.embed);
  if (range.head) {
    out.push(tn.outputNorm);
    if (src.has(tn.output)) out.push(tn.output);
  }
  return out;
}

function expectedShapes(c: ModelConfig): (name: string) => number[] | undefined {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  const byKind: Record<string, number[]> = {
    attn_norm: [c.dim],
    attn_q: [q, c.dim],
    attn_k: [kv, c.dim],
    attn_v: [kv, c.dim],
    attn_output: [c.dim, q],
    ffn_norm: [c.dim],
    ffn_gate: [c.ffnDim, c.dim],
    ffn_up: [c.ffnDim, c.dim],
    ffn_down: [c.dim, c.ffnDim],
  };
  return (name) => {
    if (name === tn.embed || name === tn.output) return [c.vocabSize, c.dim];
    if (name === tn.outputNorm) return [c.dim];
    const m = /^blk\.\d+\.(\w+)\.weight$/.exec(name);
    return m ? byKind[m[1]!] : undefined;
  };
}

class OrtStageImpl implements OrtStage {
  private lengths = new Map<string, number>();
  private disposed = false;

  constructor(
    private w: EngineCaller<WorkerRequest>,
    readonly config: ModelConfig,
    readonly range: StageRange,
    readonly profile: string,
    private maxContext: number,
    readonly loadInfo: LoadInfo,
    readonly attention: AttentionPath,
    readonly capacity: StageCapacity | undefined,
    readonly computeThread: ComputeThread,
  ) {}

  sessionLength(sessionId: string): number {
    return this.lengths.get(sessionId) ?? 0;
  }

  closeSession(sessionId: string): void {
    if (!this.lengths.delete(sessionId) || this.disposed) return;
    this.w.call({ type: 'close', id: 0, sessionId }).catch(() => {});
  }

  // kv-transfer: the cache lives in the worker; copies travel by structured clone
  async exportSession(sessionId: string): Promise<SessionState | undefined> {
    if (this.disposed || !this.lengths.has(sessionId)) return undefined;
    return ((await this.w.call({ type: 'export', id: 0, sessionId })) as SessionState | null) ?? undefined;
  }

  // kv-transfer
  async importSession(sessionId: string, state: SessionState): Promise<void> {
    if (this.disposed) throw new EngineError('stage is disposed', 'internal');
    await this.w.call({ type: 'import', id: 0, sessionId, state });
    this.lengths.set(sessionId, state.length);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.lengths.clear();
    await this.w.call({ type: 'dispose', id: 0 }).catch(() => {});
    await this.w.terminate();
  }

  async forward(input: StageInput): Promise<StageOutput> {
    return (await this.forwardBatch([input]))[0]!;
  }

  /** one worker call and one session.run for several sessions' steps (runner.stepBatch) */
  async forwardBatch(inputs: StageInput[]): Promise<StageOutput[]> {
    if (this.disposed) throw new EngineError('stage is disposed', 'internal');
    if (inputs.length === 0) return [];
    if (new Set(inputs.map((i) => i.sessionId)).size !== inputs.length)
      throw new EngineError('a batch holds at most one step per session', 'bad_input');
    const steps = inputs.map((i) => this.validate(i));
    const transfer = steps.map((s) => (s.hidden ?? s.tokens!).buffer as ArrayBuffer);
    const outs =
      steps.length === 1
        ? [(await this.w.call({ type: 'step', id: 0, input: steps[0]! }, transfer)) as StepOut]
        : ((await this.w.call({ type: 'batch', id: 0, inputs: steps }, transfer)) as StepOut[]);
    return outs.map((out, i) => {
      this.lengths.set(inputs[i]!.sessionId, out.length);
      const res: StageOutput = { computeMs: out.computeMs };
      if (out.logits) res.logits = out.logits;
      // only the last row wanted: the graph computed them all (its keys and values are cached)
      if (out.hidden) res.hidden = inputs[i]!.lastRow ? out.hidden.subarray(out.hidden.length - this.config.dim) : out.hidden;
      return res;
    });
  }

  /** checks one input and makes the copy that travels to the worker */
  private validate(input: StageInput): StepIn {
    const { pos, nTokens, sessionId } = input;
    checkStepInput(input, {
      config: this.config,
      range: this.range,
      maxContext: this.maxContext,
      cachedLength: this.lengths.get(sessionId),
    });
    // our copy travels to the worker (transferred)
    const tokens = this.range.embed ? Int32Array.from(input.tokens!) : undefined;
    const hidden = this.range.embed ? undefined : Float32Array.from(input.hidden!);
    return { sessionId, pos, nTokens, tokens, hidden, allLogits: input.allLogits };
  }
}
