// f32 -> stored tensor types, rounding exactly like llama.cpp's reference quantizers
// (quantize_row_q8_0_ref / quantize_row_q4_0_ref in ggml-quants.c, ggml's fp32->bf16), so a file
// we write is byte-identical to what llama-quantize would write from the same f32 data.
// All arithmetic is done in float32 (Math.fround) because that is what the C code does.

import { f32ToF16 } from './half.js';
import { GgmlType, ModelFormatError } from './types.js';

const fr = Math.fround;

/** C roundf: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

function checkBlocks(n: number, qk: number, what: string): void {
  if (n % qk !== 0) throw new ModelFormatError(`${what}: ${n} values is not a multiple of the block size ${qk}`);
}

/** Q8_0: per 32 values, d = amax/127 (f16), q = round(x/d) as int8. 34 bytes per block. */
export function quantizeQ8_0(x: Float32Array, out = new Uint8Array((x.length / 32) * 34)): Uint8Array {
  checkBlocks(x.length, 32, 'Q8_0');
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0, nb = x.length / 32; b < nb; b++) {
    const base = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]!));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const o = b * 34;
    dv.setUint16(o, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(o + 2 + j, roundf(fr(x[base + j]! * id)));
  }
  return out;
}

/**
 * Q4_0: per 32 values, max = the value of largest magnitude (with its sign), d = max/-8 (f16),
 * q = min(15, trunc(x/d + 8.5)); byte j holds element j (low nibble) and j+16 (high nibble).
 */
export function quantizeQ4_0(x: Float32Array, out = new Uint8Array((x.length / 32) * 18)): Uint8Array {
  checkBlocks(x.length, 32, 'Q4_0');
  for (let b = 0, nb = x.length / 32; b < nb; b++) {
    const base = b * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[base + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const o = b * 18;
    const h = f32ToF16(d);
    out[o] = h & 0xff;
    out[o + 1] = h >> 8;
    for (let j = 0; j < 16; j++) {
      const x0 = fr(x[base + j]! * id);
      const x1 = fr(x[base + 16 + j]! * id);
      const q0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
      out[o + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

export function quantizeF16(x: Float32Array, out = new Uint8Array(x.length * 2)): Uint8Array {
  const u = new Uint16Array(out.buffer, out.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) u[i] = f32ToF16(x[i]!);
  return out;
}

/** round-to-nearest-even, NaN kept quiet (ggml_compute_fp32_to_bf16) */
export function quantizeBF16(x: Float32Array, out = new Uint8Array(x.length * 2)): Uint8Array {
  const src = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const u = new Uint16Array(out.buffer, out.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const b = src[i]!;
    if ((b & 0x7fffffff) > 0x7f800000) u[i] = (b >>> 16) | 64;
    else u[i] = ((b + (0x7fff + ((b >>> 16) & 1))) >>> 16) & 0xffff;
  }
  return out;
}

export function quantizeF32(x: Float32Array): Uint8Array {
  // copy so callers can reuse their buffer; typed arrays are little-endian on every Node target
  return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
}

/** Encode f32 values as stored type `t` (F32, F16, BF16, Q8_0, Q4_0). */
export function quantize(t: GgmlType, x: Float32Array): Uint8Array {
  switch (t) {
    case GgmlType.F32:
      return quantizeF32(x);
    case GgmlType.F16:
      return quantizeF16(x);
    case GgmlType.BF16:
      return quantizeBF16(x);
    case GgmlType.Q8_0:
      return quantizeQ8_0(x);
    case GgmlType.Q4_0:
      return quantizeQ4_0(x);
    default:
      throw new ModelFormatError(`quantizing to ${GgmlType[t] ?? t} is not supported (use f32, f16, bf16, q8_0 or q4_0)`);
  }
}

export type TargetDtype = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
export const DTYPE_TYPES: Record<TargetDtype, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
  q4_0: GgmlType.Q4_0,
};

/**
 * The type llama.cpp would store a tensor as when asked for `want`: 1-D tensors stay F32, and a
 * block-quantized type is only used when the row length is a multiple of its block (else F16).
 */
export function storedTypeFor(want: GgmlType, shape: number[]): GgmlType {
  if (shape.length < 2) return GgmlType.F32;
  const rowLen = shape[shape.length - 1]!;
  if ((want === GgmlType.Q8_0 || want === GgmlType.Q4_0) && rowLen % 32 !== 0) return GgmlType.F16;
  return want;
}
