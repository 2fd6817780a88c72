// Comparing a worker's stage output with an auditor's re-execution. Engines and activation
// transports differ in rounding, so outputs are compared within a tolerance: the per-token
// relative L2 distance ‖a_t − b_t‖ / ‖b_t‖ (b = the auditor's/reference side) must stay
// under τ for every token. τ comes from bench/verify-calibration.ts: ~1.5× the honest
// p99.99 for that precision pair, never below a small floor.

/** 'q8act': llama.cpp on quantized weights (profiles llama-q4, llama-q8, llama-qmix), whose dot
 *  products quantize activations to Q8 blocks (calibrated on Q4_0) */
export type Precision = 'f32' | 'f16' | 'bf16' | 'q8act';

export interface ToleranceEntry {
  /** threshold on the per-token relative L2 distance */
  tau: number;
  /** measured honest p99.99 and max behind tau (bench/results/verify-calibration.json) */
  honestP9999: number;
  honestMax: number;
  /** how many honest per-token comparisons the calibration saw */
  samples: number;
}

/**
 * Calibrated on stories260K (5 layers, dim 64) and the synthetic 'tiny' GQA model
 * (4 layers, dim 128), all layer ranges, random prompts/positions — see
 * bench/results/verify-calibration.json. Keys are canonical precision pairs (sorted, '|').
 * 'f32|f32' covers reference vs reference, reference vs ORT fp32, ORT 1 vs 2 threads, and the
 * llama engine's f32 profile (F32 KV cache) vs the reference, solo and batched (max 1.35e-6).
 */
export const TOLERANCES: Readonly<Record<string, ToleranceEntry>> = {
  // 1.5 × p99.99 would be 2.4e-6; the floor leaves room for other CPUs' rounding
  'f32|f32': { tau: 1e-5, honestP9999: 1.597e-6, honestMax: 2.394e-6, samples: 88680 },
  'f16|f32': { tau: 5.2e-4, honestP9999: 3.498e-4, honestMax: 3.552e-4, samples: 12955 },
  'bf16|f32': { tau: 4.3e-3, honestP9999: 2.897e-3, honestMax: 3.023e-3, samples: 12955 },
  // llama engine on Q4_0 weights (llama-q4) vs the reference engine on the same file (which
  // dequantizes and computes in f32), solo and batched with another session; synthetic tiny
  // model, 4 layers. Q8_0 activations put honest outputs ~1% apart (p50 1.1e-2), so a 2%-noise
  // cheat is NOT separable at this tau; zeros, skipped/swapped layers, wrong weights are (100%).
  'f32|q8act': { tau: 5.5e-2, honestP9999: 3.672e-2, honestMax: 3.805e-2, samples: 21900 },
  // llama-q4 batched with another session vs llama-q4 replaying one prefill
  'q8act|q8act': { tau: 4.6e-2, honestP9999: 3.085e-2, honestMax: 3.188e-2, samples: 10950 },
};

/** Smallest τ ever used: fp32 engines that happen to agree bit-exactly still get headroom for other hardware. */
export const TAU_FLOOR = 1e-5;

export class ToleranceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ToleranceError';
  }
}

/**
 * Numeric precision of an execution profile string: activation transport "act-f16" /
 * "act-bf16" dominates; anything else built on fp32 arithmetic is 'f32'. (Weight
 * quantization is part of the model identity, not of the profile's noise.)
 */
export function precisionOf(profile: string): Precision {
  const p = profile.toLowerCase();
  if (/act-bf16|\bbf16\b/.test(p)) return 'bf16';
  if (/act-f16|act-fp16|\bf16\b|\bfp16\b/.test(p)) return 'f16';
  if (/^llama-q/.test(p)) return 'q8act';
  if (/int8act|accuracy[-_]?level|fp8/.test(p))
    throw new ToleranceError(`profile '${profile}' quantizes activations: it needs its own calibration`);
  return 'f32';
}

export function pairKey(a: Precision, b: Precision): string {
  return [a, b].sort().join('|');
}

/** Tolerance for a pair given as precisions, profile strings, or a "profA|profB" string. */
export function toleranceFor(pair: string | readonly [string, string]): ToleranceEntry & { key: string } {
  const [x, y] = typeof pair === 'string' ? (pair.split('|') as [string, string?]) : pair;
  if (y === undefined) throw new ToleranceError(`profile pair '${String(pair)}' must be "worker|auditor"`);
  const asPrec = (s: string): Precision => (s === 'f32' || s === 'f16' || s === 'bf16' || s === 'q8act' ? s : precisionOf(s));
  const key = pairKey(asPrec(x), asPrec(y));
  const e = TOLERANCES[key];
  if (!e) throw new ToleranceError(`no calibrated tolerance for precision pair ${key} (have: ${Object.keys(TOLERANCES).join(', ')})`);
  return { ...e, key };
}

/** Per-token relative L2 distance between two [nTokens, dim] row-major tensors; b is the reference. */
export function perTokenRelL2(a: Float32Array, b: Float32Array, dim: number): Float64Array {
  if (!Number.isInteger(dim) || dim < 1) throw new ToleranceError(`dim must be a positive integer, got ${dim}`);
  if (a.length !== b.length) throw new ToleranceError(`outputs differ in size: ${a.length} vs ${b.length} values`);
  if (a.length % dim !== 0) throw new ToleranceError(`output size ${a.length} is not a multiple of dim ${dim}`);
  const n = a.length / dim;
  const out = new Float64Array(n);
  for (let t = 0; t < n; t++) {
    let num = 0;
    let den = 0;
    for (let i = t * dim, e = i + dim; i < e; i++) {
      const bv = b[i]!;
      const d = a[i]! - bv;
      num += d * d;
      den += bv * bv;
    }
    // NaN/Inf on either side is never within tolerance
    out[t] = Number.isFinite(num) && Number.isFinite(den) ? Math.sqrt(num / Math.max(den, 1e-30)) : Infinity;
  }
  return out;
}

export interface ComparisonVerdict {
  pass: boolean;
  /** precision pair key the tolerance came from */
  key: string;
  tau: number;
  nTokens: number;
  maxRelL2: number;
  meanRelL2: number;
  /** index of the worst token */
  worstToken: number;
  /** tokens over tau */
  failingTokens: number;
}

/**
 * Verdict on a worker output `a` against a reference/auditor output `b` ([nTokens, dim]).
 * Fails if any token's relative L2 exceeds τ of the pair (or an explicit `tau`).
 */
export function compareOutputs(
  a: Float32Array,
  b: Float32Array,
  profilePair: string | readonly [string, string],
  opts: { dim: number; tau?: number },
): ComparisonVerdict {
  const tol = toleranceFor(profilePair);
  const tau = Math.max(opts.tau ?? tol.tau, TAU_FLOOR);
  const d = perTokenRelL2(a, b, opts.dim);
  let max = -1;
  let worst = 0;
  let sum = 0;
  let failing = 0;
  for (let t = 0; t < d.length; t++) {
    const v = d[t]!;
    sum += v;
    if (v > max) {
      max = v;
      worst = t;
    }
    if (!(v <= tau)) failing++;
  }
  return {
    pass: failing === 0,
    key: tol.key,
    tau,
    nTokens: d.length,
    maxRelL2: max,
    meanRelL2: sum / Math.max(1, d.length),
    worstToken: worst,
    failingTokens: failing,
  };
}
