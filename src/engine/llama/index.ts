// llama engine: a Stage on llama.cpp's own library (libllama through koffi, ffi.ts). The range's
// layers are written to a GGUF slice (slice.ts) that llama.cpp loads; sessions are llama.cpp
// sequences in one context, so forwardBatch is one llama_decode over every session's rows
// (continuous batching in llama.cpp itself). Hidden states go in through the batch's `embd`;
// a stage that does not apply the head reads the last layer's output `l_out-<last>` in the eval
// callback and stops the graph there (no output norm, no LM head).
//
// llama.cpp runs in a worker thread per stage (worker.ts, runner.ts), as the ORT engine does, so
// a decode never blocks the caller's event loop (or, with computeThread 'main', on the calling
// thread: ../in-thread.ts); this side writes the slice, tracks session lengths (sessionLength()
// is synchronous) and hands steps over with their buffers transferred.

import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType, type ModelConfig, type WeightSource } from '../../model/types.js';
import {
  EngineError,
  type ComputeThread,
  type Stage,
  type StageCapacity,
  type StageInput,
  type StageOutput,
  type StageRange,
} from '../types.js';
import { FLASH_ATTN_AUTO, FLASH_ATTN_DISABLED, GGML_TYPE_F16, GGML_TYPE_F32, loadLlamaLib } from './ffi.js';
import type { RunnerSpec, StepIn, StepOut } from './runner.js';
import { llamaHandler, type WorkerRequest } from './handler.js';
import { InThreadCaller } from '../in-thread.js';
import { EngineWorkerClient, type EngineCaller } from '../worker-client.js';
import { writeRangeSlice } from './slice.js';
import { kvBytesPerPosition } from '../kv-bytes.js';

export interface LlamaStageOptions {
  /** expected weight precision; the slice keeps the file's stored types, so this only checks them */
  weights?: 'f32' | 'q8' | 'q4';
  /**
   * llama.cpp threads (default: cores − 1, at most 8, at least 1: one core stays with the node's
   * own thread). ggml's threads spin at barriers between ops, so threads beyond the cores the
   * process really gets are ruinous: on the busy 2-core VM a 5-layer stories260K decode took
   * 0.5 ms on 1 thread and 10 ms (median) on 2.
   */
  threads?: number;
  onProgress?: (bytes: number) => void;
  /** directory for the GGUF slice (default: a fresh one under os.tmpdir(), removed on dispose) */
  cacheDir?: string;
  /** most sessions held at once (llama.cpp sequences; default 64, at most 256) */
  maxSessions?: number;
  /** KV cells shared by all sessions (default min(8192, sessions × context, what kvBudgetBytes holds)) */
  kvCells?: number;
  /** memory for the KV cells, all sessions together (a node's `--kv-budget-mb`; llama.cpp allocates them at load) */
  kvBudgetBytes?: number;
  /** longest session in positions (default: the model's context length, capped by kvCells) */
  maxContext?: number;
  /** rows per llama_decode (default 512); longer steps are split */
  maxBatch?: number;
  /** directory of libllama*.so (default: @node-llama-cpp/linux-x64's) */
  libDir?: string;
  /** where llama_decode runs: the stage's own worker thread (default) or the calling thread */
  computeThread?: ComputeThread;
}

export interface LlamaStage extends Stage {
  /** load figures: library, slice write, model + context creation (ms) */
  readonly loadInfo: { libMs: number; sliceMs: number; createMs: number; kvCells: number; kvType: 'f32' | 'f16' };
}

/**
 * profile by the layers' stored weight types: F32 → llama-f32 (F32 KV), Q4_0 → llama-q4,
 * Q8_0 → llama-q8, other or mixed quantized types (k-quants) → llama-qmix; every llama-q*
 * profile computes quantized dot products on Q8-quantized activations (tolerance pair q8act,
 * calibrated on Q4_0 only).
 */
function profileOf(types: Set<number>): { name: string; weights: 'f32' | 'q8' | 'q4' | 'f16' | 'mixed' } {
  const t = [...types];
  const float = (x: number) => x === GgmlType.F32 || x === GgmlType.F16 || x === GgmlType.BF16;
  if (t.length === 0 || t.every((x) => x === GgmlType.F32)) return { name: 'llama-f32', weights: 'f32' };
  if (t.every((x) => x === GgmlType.Q4_0)) return { name: 'llama-q4', weights: 'q4' };
  if (t.every((x) => x === GgmlType.Q8_0)) return { name: 'llama-q8', weights: 'q8' };
  if (t.every((x) => x === GgmlType.F16)) return { name: 'llama-f16', weights: 'f16' };
  if (t.every((x) => !float(x))) return { name: 'llama-qmix', weights: 'mixed' };
  return { name: 'llama-mixed', weights: 'mixed' };
}

export async function createLlamaStage(src: WeightSource, range: StageRange, opts: LlamaStageOptions = {}): Promise<LlamaStage> {
  const c = src.config;
  const { start, end } = range;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > c.nLayers || start > end) {
    throw new EngineError(`bad layer range [${start}, ${end}) for a model with ${c.nLayers} layers`, 'bad_input');
  }
  if (start === end) throw new EngineError(`the llama engine needs at least one layer per stage (got [${start}, ${end}))`, 'bad_input');
  const t0 = performance.now();
  loadLlamaLib({ libDir: opts.libDir });
  const libMs = performance.now() - t0;
  const ownDir = !opts.cacheDir;
  const dir = opts.cacheDir ?? mkdtempSync(join(tmpdir(), 'odsi-llama-'));
  const file = join(
    dir,
    `range-${start}-${end}${range.embed ? '-embed' : ''}${range.head ? '-head' : ''}-${process.pid}-${Date.now().toString(36)}.gguf`,
  );
  const cleanup = () => rmSync(ownDir ? dir : file, { recursive: true, force: true });
  try {
    const t1 = performance.now();
    const types = await writeRangeSlice(src, range, file, opts.onProgress);
    const sliceMs = performance.now() - t1;
    const prof = profileOf(types);
    if (opts.weights && opts.weights !== prof.weights) {
      throw new EngineError(
        `the llama engine runs weights as stored (${prof.weights} here); it does not requantize to ${opts.weights}`,
        'bad_input',
      );
    }
    const f32 = prof.weights === 'f32';
    const maxSessions = Math.min(Math.max(1, Math.floor(opts.maxSessions ?? 64)), 256);
    const ctxLen = Math.min(opts.maxContext ?? c.contextLength, c.contextLength);
    // a cell is one cached position, F32 or F16
    const cellBytes = kvBytesPerPosition(c, range.end - range.start, f32 ? 4 : 2);
    const budgetCells = opts.kvBudgetBytes === undefined ? Infinity : Math.floor(opts.kvBudgetBytes / cellBytes);
    const kvCells = Math.max(256, Math.floor(opts.kvCells ?? Math.min(8192, maxSessions * ctxLen, budgetCells)));
    const maxBatch = Math.max(1, Math.floor(opts.maxBatch ?? 512));
    const spec: RunnerSpec = {
      file,
      config: c,
      range: { ...range },
      threads: opts.threads ?? Math.max(1, Math.min(8, availableParallelism() - 1)),
      maxSessions,
      kvCells,
      maxContext: Math.min(ctxLen, kvCells),
      maxBatch,
      // f32: F32 KV and plain attention, so the stage matches the reference engine within the
      // f32 tolerance; 4-bit and others keep llama.cpp's defaults (F16 KV, flash attention auto)
      kvType: f32 ? GGML_TYPE_F32 : GGML_TYPE_F16,
      flashAttn: f32 ? FLASH_ATTN_DISABLED : FLASH_ATTN_AUTO,
    };
    const t2 = performance.now();
    const thread: ComputeThread = opts.computeThread ?? 'worker';
    const w: EngineCaller<WorkerRequest> =
      thread === 'main'
        ? new InThreadCaller((reply) => llamaHandler(reply, { worker: false }))
        : new EngineWorkerClient<WorkerRequest>(new URL('./worker.js', import.meta.url), 'llama worker');
    try {
      await w.call({ type: 'load', id: 0, spec, libDir: opts.libDir });
    } catch (e) {
      await w.terminate();
      throw e;
    }
    const loadInfo = { libMs, sliceMs, createMs: performance.now() - t2, kvCells, kvType: f32 ? ('f32' as const) : ('f16' as const) };
    // what llama.cpp holds: the node admits sessions against it, not only against its budget
    const capacity = { kvTokens: kvCells, sessions: maxSessions, kvBytesPerToken: cellBytes };
    return new LlamaStageImpl(w, c, { ...range }, prof.name, loadInfo, capacity, thread, cleanup);
  } catch (e) {
    cleanup();
    throw e;
  }
}

type Failure = EngineError & { lengths?: Record<string, number> };

class LlamaStageImpl implements LlamaStage {
  private lengths = new Map<string, number>();
  private disposed = false;

  constructor(
    private w: EngineCaller<WorkerRequest>,
    readonly config: ModelConfig,
    readonly range: StageRange,
    readonly profile: string,
    readonly loadInfo: LlamaStage['loadInfo'],
    readonly capacity: StageCapacity,
    readonly computeThread: ComputeThread,
    private cleanup: () => void,
  ) {}

  sessionLength(sessionId: string): number {
    return this.lengths.get(sessionId) ?? 0;
  }

  closeSession(sessionId: string): void {
    if (!this.lengths.delete(sessionId) || this.disposed) return;
    this.w.call({ type: 'close', id: 0, sessionId }).catch(() => {});
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.lengths.clear();
    await this.w.call({ type: 'dispose', id: 0 }).catch(() => {});
    await this.w.terminate();
    this.cleanup();
  }

  async forward(input: StageInput): Promise<StageOutput> {
    return (await this.forwardBatch([input]))[0]!;
  }

  /** one worker call, one llama_decode per maxBatch rows, for several sessions' steps */
  async forwardBatch(inputs: StageInput[]): Promise<StageOutput[]> {
    if (this.disposed) throw new EngineError('stage is disposed', 'internal');
    if (inputs.length === 0) return [];
    // our copies travel to the worker (transferred); the runner validates them
    const steps: StepIn[] = inputs.map((i) => ({
      sessionId: i.sessionId,
      pos: i.pos,
      nTokens: i.nTokens,
      tokens: i.tokens ? Int32Array.from(i.tokens) : undefined,
      hidden: i.hidden ? Float32Array.from(i.hidden) : undefined,
      allLogits: i.allLogits,
      lastRow: i.lastRow,
    }));
    const transfer = steps.flatMap((s) => [s.tokens?.buffer, s.hidden?.buffer]).filter((b): b is ArrayBuffer => !!b);
    let outs: StepOut[];
    try {
      outs = (await this.w.call({ type: 'batch', id: 0, inputs: steps }, transfer)) as StepOut[];
    } catch (e) {
      for (const [id, len] of Object.entries((e as Failure).lengths ?? {})) {
        if (len > 0) this.lengths.set(id, len);
        else this.lengths.delete(id);
      }
      throw e;
    }
    return outs.map((out, i) => {
      this.lengths.set(inputs[i]!.sessionId, out.length);
      const res: StageOutput = { computeMs: out.computeMs };
      if (out.logits) res.logits = out.logits;
      if (out.hidden) res.hidden = out.hidden;
      return res;
    });
  }
}
