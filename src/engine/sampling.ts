// Token sampling. Order of transforms (as in HF transformers and vLLM):
//   repetition penalty → temperature → top-k → top-p → draw.
// temperature 0 means greedy: argmax after the penalty, ties go to the lowest id.
// All probabilities are computed in double in a fixed order and the draw uses our own seeded
// PRNG, so a (logits, params, seed) triple always yields the same tokens on any machine.

import { exp } from './reference/fmath.js';
import { Rng, randomSeed } from '../util/rng.js';
import { EngineError } from './types.js';

export interface SamplingParams {
  /** 0 = greedy */
  temperature: number;
  /** keep the k most likely tokens (0 or undefined = off) */
  topK?: number;
  /** keep the smallest set of most likely tokens whose probability mass reaches p (1 = off) */
  topP?: number;
  /** llama.cpp repeat_penalty: > 1 discourages tokens seen in the last repeatLastN (1 = off) */
  repetitionPenalty?: number;
  /** how many recent tokens the penalty looks at (llama.cpp repeat_last_n, default 64; -1 = all) */
  repeatLastN?: number;
  /** PRNG seed; random when absent (see Sampler.seed) */
  seed?: number;
}

export function validateSampling(p: SamplingParams): void {
  const bad = (m: string) => {
    throw new EngineError(`invalid sampling parameter: ${m}`, 'bad_input');
  };
  if (!Number.isFinite(p.temperature) || p.temperature < 0) bad(`temperature must be >= 0, got ${p.temperature}`);
  if (p.topK !== undefined && (!Number.isInteger(p.topK) || p.topK < 0)) bad(`top-k must be a non-negative integer, got ${p.topK}`);
  if (p.topP !== undefined && !(p.topP > 0 && p.topP <= 1)) bad(`top-p must be in (0, 1], got ${p.topP}`);
  if (p.repetitionPenalty !== undefined && !(p.repetitionPenalty > 0 && Number.isFinite(p.repetitionPenalty))) {
    bad(`repetition penalty must be > 0, got ${p.repetitionPenalty}`);
  }
  if (p.repeatLastN !== undefined && (!Number.isInteger(p.repeatLastN) || p.repeatLastN < -1))
    bad(`repeat-last-n must be an integer >= -1, got ${p.repeatLastN}`);
  if (p.seed !== undefined && !Number.isInteger(p.seed)) bad(`seed must be an integer, got ${p.seed}`);
}

/**
 * llama.cpp's repetition penalty, in place: every distinct token among the last `lastN`
 * of `history` has its logit divided by `penalty` when positive, multiplied when negative.
 */
export function applyRepetitionPenalty(logits: Float32Array, history: readonly number[], penalty: number, lastN = 64): void {
  if (penalty === 1 || history.length === 0 || lastN === 0) return;
  const from = lastN < 0 ? 0 : Math.max(0, history.length - lastN);
  const seen = new Set<number>();
  for (let i = from; i < history.length; i++) {
    const id = history[i];
    if (seen.has(id) || id < 0 || id >= logits.length) continue;
    seen.add(id);
    logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
  }
}

/** index of the largest value; ties → lowest index; NaN never wins */
export function argmax(v: Float32Array): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < v.length; i++) {
    if (v[i] > bv) {
      bv = v[i];
      best = i;
    }
  }
  return best;
}

/**
 * The candidate distribution after temperature, top-k and top-p, sorted by probability
 * (descending, ties by id); probs are normalized over the kept candidates.
 */
export function candidates(logits: Float32Array, p: SamplingParams): { ids: Int32Array; probs: Float64Array } {
  const n = logits.length;
  const t = p.temperature;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = exp((logits[i] - max) / t);
  const topK = p.topK && p.topK > 0 ? Math.min(p.topK, n) : n;
  const topP = p.topP ?? 1;
  let ids: number[];
  let total = 0; // mass that top-p is relative to: the top-k survivors, or everything
  if (topK < n) {
    ids = topKIds(w, topK);
    for (const id of ids) total += w[id];
  } else {
    for (let i = 0; i < n; i++) total += w[i];
    ids = topP < 1 ? nucleusSuperset(w, topP * total) : Array.from({ length: n }, (_, i) => i);
  }
  if (topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < ids.length) {
      cum += w[ids[keep++]];
      if (cum >= topP * total) break;
    }
    ids = ids.slice(0, keep);
  }
  let sum = 0;
  for (const id of ids) sum += w[id];
  const probs = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) probs[i] = w[ids[i]] / sum;
  return { ids: Int32Array.from(ids), probs };
}

/**
 * Sorted (weight desc, id asc) ids of {w >= tau} for the largest tau in 10^-1, 10^-2, … whose
 * set holds at least `mass`: a prefix of the full sorted order that contains the nucleus,
 * found without sorting a large vocabulary. (The largest weight is exp(0) = 1.)
 */
function nucleusSuperset(w: Float64Array, mass: number): number[] {
  for (let tau = 0.1; tau > 1e-30; tau *= 0.1) {
    let m = 0;
    for (let i = 0; i < w.length; i++) if (w[i] >= tau) m += w[i];
    if (m >= mass) {
      const ids: number[] = [];
      for (let i = 0; i < w.length; i++) if (w[i] >= tau) ids.push(i);
      return ids.sort((a, b) => w[b] - w[a] || a - b);
    }
  }
  return Array.from(w.keys()).sort((a, b) => w[b] - w[a] || a - b);
}

/**
 * The k best ids by (weight desc, id asc), sorted that way: a size-k min-heap (root = worst
 * kept) so large vocabularies cost O(n log k) instead of a full sort.
 */
function topKIds(w: Float64Array, k: number): number[] {
  const worse = (a: number, b: number) => w[a] < w[b] || (w[a] === w[b] && a > b);
  const h: number[] = [];
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && worse(h[l], h[m])) m = l;
      if (r < h.length && worse(h[r], h[m])) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  };
  for (let id = 0; id < w.length; id++) {
    if (h.length < k) {
      h.push(id);
      for (let i = h.length - 1; i > 0;) {
        const p = (i - 1) >> 1;
        if (!worse(h[i], h[p])) break;
        [h[i], h[p]] = [h[p], h[i]];
        i = p;
      }
    } else if (worse(h[0], id)) {
      h[0] = id;
      down(0);
    }
  }
  return h.sort((a, b) => w[b] - w[a] || a - b);
}

/** Stateful sampler: holds the PRNG so a sequence of draws is reproducible from its seed. */
export class Sampler {
  readonly seed: number;
  private rng: Rng;

  constructor(readonly params: SamplingParams) {
    validateSampling(params);
    this.seed = params.seed ?? randomSeed();
    this.rng = new Rng(this.seed);
  }

  get greedy(): boolean {
    return this.params.temperature === 0;
  }

  /** pick the next token; `history` = prompt + generated ids (for the penalty). Does not modify logits. */
  sample(logits: Float32Array, history: readonly number[] = []): number {
    const p = this.params;
    let l = logits;
    if (p.repetitionPenalty !== undefined && p.repetitionPenalty !== 1) {
      l = Float32Array.from(logits);
      applyRepetitionPenalty(l, history, p.repetitionPenalty, p.repeatLastN ?? 64);
    }
    if (this.greedy) return argmax(l);
    const { ids, probs } = candidates(l, p);
    const u = this.rng.next();
    let cum = 0;
    for (let i = 0; i < ids.length; i++) {
      cum += probs[i];
      if (u < cum) return ids[i];
    }
    return ids[ids.length - 1]; // u within rounding of 1
  }
}
