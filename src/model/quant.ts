// Block layouts of ggml tensor types and dequantization to f32.
// Layouts follow ggml-common.h; each function reads `n` values from `src` (raw stored bytes).

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

const f16Table = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = halfToFloatSlow(h);
  return t;
})();

function halfToFloatSlow(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function f16ToF32(h: number): number {
  return f16Table[h & 0xffff]!;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
/** round-to-nearest-even f32 -> f16 bits */
export function f32ToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function bf16ToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0]!;
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
      for (let i = 0; i < n; i++) out[i] = f16Table[dv.getUint16(i * 2, true)]!;
      return out;
    case GgmlType.BF16:
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(dv.getUint16(i * 2, true));
      return out;
    case GgmlType.Q8_0:
      for (let b = 0; b < n / 32; b++) {
        const o = b * 34;
        const d = f16Table[dv.getUint16(o, true)]!;
        for (let j = 0; j < 32; j++) out[b * 32 + j] = d * dv.getInt8(o + 2 + j);
      }
      return out;
    case GgmlType.Q4_0:
      for (let b = 0; b < n / 32; b++) {
        const o = b * 18;
        const d = f16Table[dv.getUint16(o, true)]!;
        for (let j = 0; j < 16; j++) {
          const q = src[o + 2 + j]!;
          out[b * 32 + j] = d * ((q & 0x0f) - 8);
          out[b * 32 + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return out;
    default: {
      const k = extraDequantizers.get(t);
      if (k) return k(src, n, out);
      throw new ModelFormatError(`dequantization of ${typeName(t)} is not supported`);
    }
  }
}

/** K-quant and other dequantizers register here (see kquants.ts). */
export const extraDequantizers = new Map<GgmlType, (src: Uint8Array, n: number, out: Float32Array) => Float32Array>();

// Registered here (not in kquants.ts) so the import cycle resolves in either load order.
for (const [t, f] of kquantEntries()) extraDequantizers.set(t, f);

const BUILTIN = new Set([GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0]);
/** true when dequantize() can decode type `t` */
export function canDequantize(t: GgmlType): boolean {
  return BUILTIN.has(t) || extraDequantizers.has(t);
}
