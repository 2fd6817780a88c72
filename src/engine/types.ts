// The one interface every executor of a layer range implements: the in-process engines
// (reference, ort), and later remote stages reached over the network. A generation loop
// chains stages without knowing where they run.
//
// Rotary convention: weights are in GGUF layout (Q/K rows permuted by the converter), so
// RoPE rotates adjacent pairs (x[2i], x[2i+1]) — ggml's "normal" mode. HF loaders permute
// q_proj/k_proj into this layout when they read them.

import type { ModelConfig } from '../model/types.js';

/** Which part of the model a stage runs: decoder layers [start, end), plus optional ends. */
export interface StageRange {
  start: number;
  end: number;
  /** stage takes token ids and applies the embedding first */
  embed: boolean;
  /** stage applies the final norm and LM head and returns logits */
  head: boolean;
}

export interface StageInput {
  sessionId: string;
  /** absolute position of the first new token; must be <= the session's cached length
   *  (a smaller value truncates the cache first, which replays and retries rely on) */
  pos: number;
  /** number of new tokens in this step */
  nTokens: number;
  /** token ids, when range.embed */
  tokens?: Int32Array;
  /** hidden states [nTokens, dim] row-major, when !range.embed */
  hidden?: Float32Array;
  /** head stages: return logits for every new position instead of only the last */
  allLogits?: boolean;
  /**
   * stages without the head: only the last new position's hidden state is wanted (the stage
   * feeds a head that samples from it). Every position still goes through the layers (their
   * keys and values are cached); `hidden` comes back as [1, dim]. An engine may skip the work
   * whose only use is the other rows' output (llama.cpp: the last layer after attention).
   */
  lastRow?: boolean;
}

export interface StageOutput {
  /** hidden states [nTokens, dim] when !range.head ([1, dim], the last position's, when lastRow) */
  hidden?: Float32Array;
  /** logits [vocab] (last position) or [nTokens, vocab] when allLogits, when range.head */
  logits?: Float32Array;
  /** compute time spent in this stage, milliseconds */
  computeMs: number;
  /**
   * Present when the output is provisional (a remote route whose receipts are still on their
   * way): it may feed the next stage and the next step at once, but nothing computed from it
   * may reach a user before this resolves. A rejection means the output must be discarded and
   * the step run again (a stage that can recover, e.g. a resilient route, has arranged it).
   */
  settled?: Promise<void>;
}

/** Where an engine computes a stage's steps: a worker thread of its own, or the calling (main) thread. */
export type ComputeThread = 'worker' | 'main';

export interface Stage {
  readonly range: StageRange;
  readonly config: ModelConfig;
  /** e.g. 'reference', 'ort-f32', 'ort-q4' — part of the execution profile */
  readonly profile: string;
  /** where its steps compute, for engines that can choose (ORT, llama; the reference engine always uses the calling thread) */
  readonly computeThread?: ComputeThread;
  /** what the stage can hold at once, where less than its caller's budget (absent: no limit of its own) */
  readonly capacity?: StageCapacity;
  forward(input: StageInput): Promise<StageOutput>;
  /**
   * Several sessions' steps as one batched pass (continuous batching): at most one input per
   * session; outputs in input order. Each session's result equals what forward() would return
   * for it alone (the reference engine bit for bit; ORT within its own kernels' rounding).
   * computeMs of each output is the whole batch's compute time.
   */
  forwardBatch?(inputs: StageInput[]): Promise<StageOutput[]>;
  /** cached length of a session (0 when unknown) */
  sessionLength(sessionId: string): number;
  closeSession(sessionId: string): void;
  dispose(): Promise<void>;
  // kv-transfer: optional state hand-over (graceful leave); layers are this stage's, in order
  exportSession?(sessionId: string): SessionState | undefined | Promise<SessionState | undefined>;
  importSession?(sessionId: string, state: SessionState): void | Promise<void>;
}

/**
 * A stage's own bounds, fixed at load: a node admits sessions against them as well as against
 * its KV budget, so a session it accepts never fails later for want of room in the engine.
 */
export interface StageCapacity {
  /** cached positions of all sessions together */
  kvTokens?: number;
  /** sessions at once */
  sessions?: number;
  /** a session's cache is allocated in steps of this many positions: a node counts each
   *  reservation rounded up to it, so the caches it admits fit kvTokens as allocated */
  chunkTokens?: number;
  /** bytes one cached position takes as the stage stores it (f32 or f16 KV): the node turns its
   *  KV budget into positions, and its KV metrics into bytes, with it */
  kvBytesPerToken?: number;
}

// kv-transfer: a session's KV cache, per layer [length, nKvHeads*headDim] row-major
export interface SessionState {
  length: number;
  layers: { k: Float32Array; v: Float32Array }[];
}

export class EngineError extends Error {
  constructor(
    message: string,
    readonly code: 'bad_input' | 'unknown_session' | 'capacity' | 'internal' = 'internal',
  ) {
    super(message);
    this.name = 'EngineError';
  }
}
