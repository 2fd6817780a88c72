// Numeric kernels of the reference engine. Reproducibility rules (every function here obeys them):
//  - tensors are stored as float32 (Float32Array); every value written to a Float32Array is
//    rounded to f32 once, at that store;
//  - arithmetic between stores is IEEE-754 double (plain JS numbers), which V8 evaluates
//    exactly as written: no reassociation, no FMA contraction, no fast-math;
//  - reductions run in a fixed order that depends only on the vector length: dot products
//    use four interleaved partial sums s_k = sum over i ≡ k (mod 4) in increasing i, combined
//    as (s0 + s1) + (s2 + s3); other sums are sequential in increasing index;
//  - exp, sin and cos are our own (fmath.ts), built from +, -, * only; the only other
//    operations are +, -, *, / and Math.sqrt, all correctly rounded by IEEE-754. Nothing
//    depends on the platform libm or on V8's Math.exp/sin/cos ports;
//  - RoPE inverse frequencies come from src/model/rope.ts as f32 values (theta ** x, then
//    rounded to f32), angles are p * invFreq[i] in double;
//  - the WASM SIMD matmul (wasm.ts) implements exactly the dot() order below.
// Hence results depend only on the inputs, never on the machine, thread count or how a
// model is split into stages (a layer sees the same inputs either way), nor on how a prompt is
// chunked: every token's row is computed by the same operations in the same order.

import { exp, sincos } from './fmath.js';

/** dot product of a[ao..ao+n) and b[bo..bo+n) in the fixed 4-lane order described above */
export function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n4 = n - (n & 3);
  let i = 0;
  for (; i < n4; i += 4) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    s2 += a[ao + i + 2] * b[bo + i + 2];
    s3 += a[ao + i + 3] * b[bo + i + 3];
  }
  for (; i < n; i++) {
    if ((i & 3) === 0) s0 += a[ao + i] * b[bo + i];
    else if ((i & 3) === 1) s1 += a[ao + i] * b[bo + i];
    else s2 += a[ao + i] * b[bo + i];
  }
  return s0 + s1 + (s2 + s3);
}

/**
 * y[t, o] = sum_i x[t, i] * w[o, i] for t < nTok: x is [nTok, nIn], w is [nOut, nIn] (a
 * linear layer's weight, row-major), y is [nTok, nOut]. The weight row stays hot in cache
 * while all tokens use it.
 */
export function matmul(y: Float32Array, x: Float32Array, w: Float32Array, nTok: number, nIn: number, nOut: number): void {
  for (let o = 0; o < nOut; o++) {
    const wo = o * nIn;
    for (let t = 0; t < nTok; t++) y[t * nOut + o] = dot(x, t * nIn, w, wo, nIn);
  }
}

/** RMSNorm per row: y = w * (x / sqrt(mean(x^2) + eps)), one f32 rounding per element */
export function rmsnorm(y: Float32Array, x: Float32Array, w: Float32Array, nTok: number, dim: number, eps: number): void {
  for (let t = 0; t < nTok; t++) {
    const off = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[off + i] * x[off + i];
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[off + i] = w[i] * (x[off + i] * scale);
  }
}

/** x += y elementwise */
export function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i] + y[i];
}

/** g = silu(g) * u elementwise, silu(z) = z / (1 + exp(-z)) */
export function swiglu(g: Float32Array, u: Float32Array): void {
  for (let i = 0; i < g.length; i++) {
    const z = g[i];
    g[i] = (z / (1 + exp(-z))) * u[i];
  }
}

/** cos/sin tables [nTok, half] for positions pos..pos+nTok-1: angle = p * invFreq[i] */
export function ropeTables(invFreq: Float32Array, pos: number, nTok: number): { cos: Float64Array; sin: Float64Array } {
  const half = invFreq.length;
  const cos = new Float64Array(nTok * half);
  const sin = new Float64Array(nTok * half);
  for (let t = 0; t < nTok; t++) {
    for (let i = 0; i < half; i++) {
      const [s, c] = sincos((pos + t) * invFreq[i]);
      cos[t * half + i] = c;
      sin[t * half + i] = s;
    }
  }
  return { cos, sin };
}

/**
 * Rotary embedding in ggml's "normal" mode: within each head, rotate adjacent pairs
 * (x[2i], x[2i+1]) by angle p * invFreq[i]. x is [nTok, nHeads * headDim].
 */
export function rope(x: Float32Array, nTok: number, nHeads: number, headDim: number, cos: Float64Array, sin: Float64Array): void {
  const half = headDim >> 1;
  const rowLen = nHeads * headDim;
  for (let t = 0; t < nTok; t++) {
    for (let h = 0; h < nHeads; h++) {
      const off = t * rowLen + h * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i];
        const s = sin[t * half + i];
        const x0 = x[off + 2 * i];
        const x1 = x[off + 2 * i + 1];
        x[off + 2 * i] = x0 * c - x1 * s;
        x[off + 2 * i + 1] = x0 * s + x1 * c;
      }
    }
  }
}

/**
 * Causal grouped-query attention. q is [nTok, nHeads*headDim] for positions pos..pos+nTok-1;
 * kc/vc hold [>= pos+nTok, nKvHeads*headDim] (the new rows already written). Query head h
 * reads KV head floor(h / (nHeads / nKvHeads)). Scores, softmax and the weighted sum stay in
 * double; out [nTok, nHeads*headDim] is rounded to f32 once.
 */
export function attention(
  out: Float32Array,
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  pos: number,
  nTok: number,
  nHeads: number,
  nKvHeads: number,
  headDim: number,
): void {
  const group = nHeads / nKvHeads;
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const scores = new Float64Array(pos + nTok);
  const acc = new Float64Array(headDim);
  for (let t = 0; t < nTok; t++) {
    const n = pos + t + 1; // positions 0..pos+t are visible
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qDim + h * headDim;
      const ko = Math.floor(h / group) * headDim;
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const s = dot(q, qo, kc, j * kvDim + ko, headDim) * scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const e = exp(scores[j] - max);
        scores[j] = e;
        sum += e;
      }
      acc.fill(0);
      for (let j = 0; j < n; j++) {
        const a = scores[j] / sum;
        const vo = j * kvDim + ko;
        for (let d = 0; d < headDim; d++) acc[d] += a * vc[vo + d];
      }
      for (let d = 0; d < headDim; d++) out[qo + d] = acc[d];
    }
  }
}
