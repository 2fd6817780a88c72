// Stage factory: one entry point for every in-process engine, plus helpers that split a
// model into contiguous layer ranges and build a local pipeline of stages.

import type { WeightSource } from '../model/types.js';
import { createReferenceStage } from './reference.js';
import { EngineError, type ComputeThread, type Stage, type StageRange } from './types.js';

import { trackReads } from '../model/reads.js';

export type EngineKind = 'reference' | 'ort' | 'llama';

export interface StageOptions {
  /** ORT: weight precision of the execution profile (default f32); llama: checked against the stored types; ignored by 'reference' */
  weights?: 'f32' | 'q8' | 'q4';
  /** ORT / llama: compute threads; ignored by 'reference' (single-threaded by design) */
  threads?: number;
  /** called with the byte size of each tensor as it is read (load progress) */
  onProgress?: (bytes: number) => void;
  /** llama: directory for the stage's GGUF slice (default: a fresh one under os.tmpdir(), removed on dispose) */
  cacheDir?: string;
  /** llama: sessions held at once (llama.cpp sequences; default 64) */
  maxSessions?: number;
  /**
   * memory for the stage's KV caches, all sessions together (a node's `--kv-budget-mb`). ORT
   * states four fifths of it as its capacity for the sessions' caches, and batched attention's
   * lanes take what the caches leave (at least the fifth); llama sizes its KV cells to fit it.
   * The stage's `capacity` says what that holds.
   * Default: no bound (ORT), llama.cpp's own default cells (llama); ignored by 'reference'.
   */
  kvBudgetBytes?: number;
  /**
   * ORT / llama: where the engine computes. 'worker' (default): its own worker thread, so the
   * caller's event loop keeps serving I/O during a step. 'main': the calling thread, which saves
   * two thread wake-ups per step (about 0.4 ms a hop on the development VM: bench/README.md,
   * session 16) while the caller's event loop waits for each step's compute.
   */
  computeThread?: ComputeThread;
}

export async function createStage(kind: EngineKind, src: WeightSource, range: StageRange, opts: StageOptions = {}): Promise<Stage> {
  if (kind === 'reference') return createReferenceStage(opts.onProgress ? trackReads(src, opts.onProgress) : src, range);
  if (kind === 'ort') {
    // loaded lazily: onnxruntime-node is a heavy native module the reference path never needs
    const spec = './ort/index.js';
    const mod = (await import(spec)) as { createOrtStage(src: WeightSource, range: StageRange, opts: StageOptions): Promise<Stage> };
    return mod.createOrtStage(src, range, opts);
  }
  // llama.cpp cannot load a model without layers: a gateway's embedding-only or head-only
  // stage on the llama engine runs on the reference engine
  if (kind === 'llama' && range.start === range.end) return createStage('reference', src, range, opts);
  if (kind === 'llama') {
    // loaded lazily too: koffi and llama.cpp's libraries are only needed by this engine
    const spec = './llama/index.js';
    const mod = (await import(spec)) as { createLlamaStage(src: WeightSource, range: StageRange, opts: StageOptions): Promise<Stage> };
    return mod.createLlamaStage(src, range, opts);
  }
  throw new EngineError(`unknown engine '${String(kind)}' (expected 'reference', 'ort' or 'llama')`, 'bad_input');
}

/**
 * Balanced contiguous ranges [start, end) covering nLayers in k stages; the first
 * nLayers % k stages get one extra layer. k may not exceed nLayers.
 */
export function splitLayers(nLayers: number, k: number): [number, number][] {
  if (!Number.isInteger(k) || k < 1) throw new EngineError(`number of stages must be a positive integer, got ${k}`, 'bad_input');
  if (k > nLayers) throw new EngineError(`cannot split ${nLayers} layers into ${k} stages (at most ${nLayers})`, 'bad_input');
  const base = Math.floor(nLayers / k);
  const extra = nLayers % k;
  const out: [number, number][] = [];
  let start = 0;
  for (let i = 0; i < k; i++) {
    const end = start + base + (i < extra ? 1 : 0);
    out.push([start, end]);
    start = end;
  }
  return out;
}

/** k in-process stages covering the whole model: the first embeds, the last applies the head */
export async function buildLocalPipeline(kind: EngineKind, src: WeightSource, k: number, opts: StageOptions = {}): Promise<Stage[]> {
  const ranges = splitLayers(src.config.nLayers, k);
  const stages: Stage[] = [];
  try {
    for (let i = 0; i < ranges.length; i++) {
      const [start, end] = ranges[i];
      stages.push(await createStage(kind, src, { start, end, embed: i === 0, head: i === ranges.length - 1 }, opts));
    }
  } catch (e) {
    await disposePipeline(stages);
    throw e;
  }
  return stages;
}

export async function disposePipeline(stages: Stage[]): Promise<void> {
  await Promise.allSettled(stages.map((s) => s.dispose()));
}
