// Token sampling. Order of transforms (as in HF transformers and vLLM):
//   repetition penalty → presence/frequency penalty → logit bias → constraint mask →
//   temperature → top-k → top-p → draw.
// Log-probabilities (when asked for) are the log-softmax of the logits after the penalties,
// bias and mask, before temperature: the model's distribution over what could be drawn.
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
  /** OpenAI presence_penalty in [-2, 2]: subtracted once from every token already generated */
  presencePenalty?: number;
  /** OpenAI frequency_penalty in [-2, 2]: subtracted per occurrence among the generated tokens */
  frequencyPenalty?: number;
  /** OpenAI logit_bias: token id → bias in [-100, 100] added to its logit; -100 bans the token */
  logitBias?: ReadonlyMap<number, number>;
  /** PRNG seed; random when absent (see Sampler.seed) */
  seed?: number;
}

/**
 * A stateful restriction on which tokens may come next (e.g. structured output): mask() sets
 * the logit of every forbidden token to -Infinity, accept() advances past the drawn token,
 * done says the output is complete (generation stops).
 */
export interface TokenConstraint {
  /** `remaining` = tokens left in the budget, this one included */
  mask(logits: Float32Array, remaining: number): void;
  accept(id: number): void;
  readonly done: boolean;
}

export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** One draw: the token, and when asked for, its log-probability and the most likely alternatives. */
export interface Pick {
  id: number;
  logprob?: number;
  top?: TokenLogprob[];
}

export interface PickOptions {
  /** index in `history` where the generated tokens begin (presence/frequency penalties count only those) */
  generatedFrom?: number;
  constraint?: TokenConstraint;
  /** tokens left in the budget, this one included (for the constraint) */
  remaining?: number;
  /** compute the drawn token's log-probability and this many top alternatives (0..20) */
  topLogprobs?: number;
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
  for (const [name, v] of [
    ['presence penalty', p.presencePenalty],
    ['frequency penalty', p.frequencyPenalty],
  ] as const) {
    if (v !== undefined && !(v >= -2 && v <= 2)) bad(`${name} must be in [-2, 2], got ${v}`);
  }
  for (const [id, b] of p.logitBias ?? []) {
    if (!Number.isInteger(id) || id < 0) bad(`logit bias token ids must be non-negative integers, got ${id}`);
    if (!(b >= -100 && b <= 100)) bad(`logit bias values must be in [-100, 100], got ${b} for token ${id}`);
  }
}

/**
 * OpenAI's presence and frequency penalties, in place: logit[t] -= count(t) * frequency +
 * (count(t) > 0 ? presence : 0), counting t among `generated`.
 */
export function applyPresenceFrequency(logits: Float32Array, generated: readonly number[], presence: number, frequency: number): void {
  if ((presence === 0 && frequency === 0) || generated.length === 0) return;
  const counts = new Map<number, number>();
  for (const id of generated) if (id >= 0 && id < logits.length) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, c] of counts) logits[id] -= c * frequency + presence;
}

/** OpenAI's logit_bias, in place: the bias is added; -100 bans the token outright. */
export function applyLogitBias(logits: Float32Array, bias: ReadonlyMap<number, number>): void {
  for (const [id, b] of bias) {
    if (id >= logits.length) continue;
    logits[id] = b <= -100 ? -Infinity : logits[id] + b;
  }
}

/** log-softmax of `logits` at `id`, and the `top` most likely possible tokens (ties → lowest id). */
export function logprobsOf(logits: Float32Array, id: number, top: number): { logprob: number; top: TokenLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const best: number[] = [];
  if (top > 0) {
    for (let i = 0; i < logits.length; i++) {
      if (logits[i] === -Infinity) continue;
      if (best.length === top && !(logits[i] > logits[best[top - 1]])) continue;
      let j = best.length < top ? best.length : top - 1;
      best[j] = i;
      while (j > 0 && logits[best[j]] > logits[best[j - 1]]) {
        [best[j], best[j - 1]] = [best[j - 1], best[j]];
        j--;
      }
    }
  }
  return { logprob: logits[id] - lse, top: best.map((t) => ({ id: t, logprob: logits[t] - lse })) };
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

  /** where the random stream stands; rewind(mark) draws the same again (a pick from logits that were discarded) */
  mark(): ReturnType<Rng['mark']> {
    return this.rng.mark();
  }

  rewind(m: ReturnType<Rng['mark']>): void {
    this.rng.rewind(m);
  }

  /** pick the next token; `history` = prompt + generated ids (for the penalty). Does not modify logits. */
  sample(logits: Float32Array, history: readonly number[] = []): number {
    return this.pick(logits, history).id;
  }

  /** pick the next token with every transform of the file header; does not modify logits */
  pick(logits: Float32Array, history: readonly number[] = [], o: PickOptions = {}): Pick {
    const p = this.params;
    const penalize = p.repetitionPenalty !== undefined && p.repetitionPenalty !== 1;
    const presence = p.presencePenalty ?? 0;
    const frequency = p.frequencyPenalty ?? 0;
    const l =
      penalize || presence !== 0 || frequency !== 0 || (p.logitBias?.size ?? 0) > 0 || o.constraint ? Float32Array.from(logits) : logits;
    if (penalize) applyRepetitionPenalty(l, history, p.repetitionPenalty!, p.repeatLastN ?? 64);
    applyPresenceFrequency(l, history.slice(o.generatedFrom ?? 0), presence, frequency);
    if (p.logitBias) applyLogitBias(l, p.logitBias);
    o.constraint?.mask(l, o.remaining ?? Infinity);
    if (!l.some((x) => x > -Infinity))
      throw new EngineError('no token can be drawn: logit_bias or the output constraint bans every token', 'bad_input');
    const id = this.draw(l);
    if (o.topLogprobs === undefined) return { id };
    return { id, ...logprobsOf(l, id, o.topLogprobs) };
  }

  private draw(l: Float32Array): number {
    if (this.greedy) return argmax(l);
    const { ids, probs } = candidates(l, this.params);
    const u = this.rng.next();
    let cum = 0;
    for (let i = 0; i < ids.length; i++) {
      cum += probs[i];
      if (u < cum) return ids[i];
    }
    return ids[ids.length - 1]; // u within rounding of 1
  }
}
