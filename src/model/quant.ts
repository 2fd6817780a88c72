// Block layouts of ggml tensor types and dequantization to f32.
// Layouts follow ggml-common.h; each function reads `n` values from `src` (raw stored bytes).

import { bf16ToF32, f16ToF32 } from './half.js';
import { kquantEntries } from './kquants.js';
import { GgmlType, ModelFormatError } from './types.js';

/** [elements per block, bytes per block] */
export const blockLayout: Partial<Record<GgmlType, [number, number]>> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.BF16]: [1, 2],
  [GgmlType.Q4_0]: [32, 18],
  [GgmlType.Q4_1]: [32, 20],
  [GgmlType.Q5_0]: [32, 22],
  [GgmlType.Q5_1]: [32, 24],
  [GgmlType.Q8_0]: [32, 34],
  [GgmlType.Q2_K]: [256, 84],
  [GgmlType.Q3_K]: [256, 110],
  [GgmlType.Q4_K]: [256, 144],
  [GgmlType.Q5_K]: [256, 176],
  [GgmlType.Q6_K]: [256, 210],
  [GgmlType.Q8_K]: [256, 292],
  [GgmlType.I8]: [1, 1],
  [GgmlType.I16]: [1, 2],
  [GgmlType.I32]: [1, 4],
  [GgmlType.F64]: [1, 8],
};

export function typeName(t: GgmlType): string {
  return GgmlType[t] ?? `type${t}`;
}

/** Byte size of `n` elements of type `t`; throws when n is not a whole number of blocks. */
export function byteSize(t: GgmlType, n: number): number {
  const l = blockLayout[t];
  if (!l) throw new ModelFormatError(`unsupported tensor type ${typeName(t)}`);
  if (n % l[0] !== 0) throw new ModelFormatError(`${n} elements is not a multiple of the ${typeName(t)} block (${l[0]})`);
  return (n / l[0]) * l[1];
}

/** Dequantize `n` values of type `t` from raw bytes. */
export function dequantize(t: GgmlType, src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const need = byteSize(t, n);
  if (src.byteLength < need) throw new ModelFormatError(`tensor data truncated: need ${need} bytes, have ${src.byteLength}`);
  switch (t) {
    case GgmlType.F32:
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case GgmlType.F16:
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return out;
    case GgmlType.BF16:
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(dv.getUint16(i * 2, true));
      return out;
    case GgmlType.Q8_0:
      for (let b = 0; b < n / 32; b++) {
        const o = b * 34;
        const d = f16ToF32(dv.getUint16(o, true));
        for (let j = 0; j < 32; j++) out[b * 32 + j] = d * dv.getInt8(o + 2 + j);
      }
      return out;
    case GgmlType.Q4_0:
      for (let b = 0; b < n / 32; b++) {
        const o = b * 18;
        const d = f16ToF32(dv.getUint16(o, true));
        for (let j = 0; j < 16; j++) {
          const q = src[o + 2 + j]!;
          out[b * 32 + j] = d * ((q & 0x0f) - 8);
          out[b * 32 + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return out;
    default: {
      const k = KQUANTS.get(t);
      if (k) return k(src, n, out);
      throw new ModelFormatError(`dequantization of ${typeName(t)} is not supported`);
    }
  }
}

/** the K-quant and remaining block types' dequantizers (kquants.ts) */
const KQUANTS = new Map(kquantEntries());

const BUILTIN = new Set([GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0]);
/** true when dequantize() can decode type `t` */
export function canDequantize(t: GgmlType): boolean {
  return BUILTIN.has(t) || KQUANTS.has(t);
}
