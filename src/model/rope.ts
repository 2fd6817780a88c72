// RoPE inverse frequencies for a model, with the scaling variants Llama-family models use.
//
// Base: inv_freq[i] = theta^(-2i/headDim), i = 0 .. headDim/2-1.
// Linear scaling (factor f): every inv_freq divided by f (positions stretched by f).
// Llama 3 scaling: long wavelengths divided by `factor`, short ones kept, a smooth blend in
// between (HF `_compute_llama3_parameters`). llama.cpp's converter stores the per-frequency
// divisors as the F32 tensor `rope_freqs.weight` instead of metadata; when a source has that
// tensor, it wins: inv_freq[i] = base[i] / rope_freqs[i] (ggml divides theta by freq_factors).

import { ModelFormatError, type ModelConfig, type RopeScaling, type WeightSource } from './types.js';

export const ROPE_FREQS = 'rope_freqs.weight';

/** Per-frequency divisors of Llama 3 scaling, as llama.cpp's converter writes to rope_freqs.weight. */
export function llama3RopeFactors(headDim: number, theta: number, s: Extract<RopeScaling, { type: 'llama3' }>): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  const lowWavelen = s.originalContext / s.lowFreqFactor;
  const highWavelen = s.originalContext / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = 1 / theta ** ((2 * i) / headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (s.originalContext / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/** headDim/2 inverse frequencies; pass the weight source so a stored rope_freqs tensor applies. */
export function ropeInvFreq(config: ModelConfig, src?: WeightSource): Float32Array {
  const half = config.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  if (src?.has(ROPE_FREQS)) {
    const f = src.readF32(ROPE_FREQS);
    if (f.length !== half) throw new ModelFormatError(`${ROPE_FREQS} has ${f.length} values, expected headDim/2 = ${half}`, src.path);
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / f[i]!;
    return inv;
  }
  const s = config.ropeScaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factor;
  } else if (s?.type === 'llama3') {
    const f = llama3RopeFactors(config.headDim, config.ropeTheta, s);
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / f[i]!;
  }
  return inv;
}
