// Dequantizers for the remaining ggml block types (Q4_1, Q5_0, Q5_1 and the K-quants
// Q2_K..Q6_K), following the block structs of ggml-common.h and dequantize_row_* of
// ggml-quants.c; quant.ts dispatches to them.
//
// K-quant super-blocks hold 256 values. Byte layouts (offsets within one block):
//   Q2_K (84):  scales[16] @0 (lo nibble scale, hi nibble min), qs[64] @16, d @80, dmin @82
//   Q3_K (110): hmask[32] @0, qs[64] @32, scales[12] @96 (16 6-bit scales), d @108
//   Q4_K (144): d @0, dmin @2, scales[12] @4 (8 6-bit scale/min pairs), qs[128] @16
//   Q5_K (176): d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48
//   Q6_K (210): ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208

import { f16ToF32 } from './half.js';
import { GgmlType } from './types.js';

type Deq = (src: Uint8Array, n: number, out: Float32Array) => Float32Array;
const fr = Math.fround;
const half = (s: Uint8Array, o: number) => f16ToF32(s[o]! | (s[o + 1]! << 8));
const u32le = (s: Uint8Array, o: number) => (s[o]! | (s[o + 1]! << 8) | (s[o + 2]! << 16) | (s[o + 3]! << 24)) >>> 0;

function q4_1(src: Uint8Array, n: number, out: Float32Array): Float32Array {
  for (let b = 0; b < n / 32; b++) {
    const o = b * 20;
    const d = half(src, o);
    const m = half(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 4 + j]!;
      out[b * 32 + j] = (q & 15) * d + m;
      out[b * 32 + j + 16] = (q >> 4) * d + m;
    }
  }
  return out;
}

/** Q5_0 / Q5_1: 4 low bits in qs (element j low nibble, j+16 high), bit 4 of element j in qh bit j */
function q5(withMin: boolean): Deq {
  const bs = withMin ? 24 : 22;
  return (src, n, out) => {
    for (let b = 0; b < n / 32; b++) {
      const o = b * bs;
      const d = half(src, o);
      const m = withMin ? half(src, o + 2) : 0;
      const qho = o + (withMin ? 4 : 2);
      const qh = u32le(src, qho);
      const qs = qho + 4;
      for (let j = 0; j < 16; j++) {
        const x0 = (src[qs + j]! & 15) | (((qh >>> j) & 1) << 4);
        const x1 = (src[qs + j]! >> 4) | (((qh >>> (j + 16)) & 1) << 4);
        out[b * 32 + j] = withMin ? x0 * d + m : (x0 - 16) * d;
        out[b * 32 + j + 16] = withMin ? x1 * d + m : (x1 - 16) * d;
      }
    }
    return out;
  };
}

function q2_K(src: Uint8Array, n: number, out: Float32Array): Float32Array {
  for (let b = 0; b < n / 256; b++) {
    const o = b * 84;
    const d = half(src, o + 80);
    const min = half(src, o + 82);
    let y = b * 256;
    let is = 0;
    for (let half128 = 0; half128 < 2; half128++) {
      const q = o + 16 + half128 * 32;
      for (let shift = 0; shift < 8; shift += 2) {
        for (let part = 0; part < 2; part++) {
          const sc = src[o + is++]!;
          const dl = fr(d * (sc & 15));
          const ml = fr(min * (sc >> 4));
          for (let l = 0; l < 16; l++) out[y++] = dl * ((src[q + part * 16 + l]! >> shift) & 3) - ml;
        }
      }
    }
  }
  return out;
}

function q3_K(src: Uint8Array, n: number, out: Float32Array): Float32Array {
  const scales = new Int8Array(16);
  for (let b = 0; b < n / 256; b++) {
    const o = b * 110;
    const d = half(src, o + 108);
    // 16 6-bit scales: low 4 bits from bytes 0..7 (nibbles), high 2 bits from bytes 8..11
    const s = o + 96;
    for (let i = 0; i < 16; i++) {
      const lo = i < 8 ? src[s + i]! & 15 : src[s + i - 8]! >> 4;
      const hi = (src[s + 8 + (i & 3)]! >> (2 * (i >> 2))) & 3;
      scales[i] = (lo | (hi << 4)) - 32;
    }
    let y = b * 256;
    let is = 0;
    let m = 1;
    for (let half128 = 0; half128 < 2; half128++) {
      const q = o + 32 + half128 * 32;
      for (let shift = 0; shift < 8; shift += 2) {
        for (let part = 0; part < 2; part++) {
          const dl = fr(d * scales[is++]!);
          for (let l = 0; l < 16; l++) {
            const idx = part * 16 + l;
            const v = ((src[q + idx]! >> shift) & 3) - (src[o + idx]! & m ? 0 : 4);
            out[y++] = dl * v;
          }
        }
        m <<= 1;
      }
    }
  }
  return out;
}

/** 6-bit scale and min j (0..7) of Q4_K/Q5_K packed in 12 bytes at s */
function scaleMin(src: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [src[s + j]! & 63, src[s + j + 4]! & 63];
  return [(src[s + j + 4]! & 15) | ((src[s + j - 4]! >> 6) << 4), (src[s + j + 4]! >> 4) | ((src[s + j]! >> 6) << 4)];
}

function q45_K(five: boolean): Deq {
  const bs = five ? 176 : 144;
  return (src, n, out) => {
    for (let b = 0; b < n / 256; b++) {
      const o = b * bs;
      const d = half(src, o);
      const min = half(src, o + 2);
      const qh = o + 16;
      let ql = o + (five ? 48 : 16);
      let y = b * 256;
      for (let j = 0; j < 4; j++) {
        const [sc1, m1] = scaleMin(src, o + 4, 2 * j);
        const [sc2, m2] = scaleMin(src, o + 4, 2 * j + 1);
        const d1 = fr(d * sc1),
          mm1 = fr(min * m1);
        const d2 = fr(d * sc2),
          mm2 = fr(min * m2);
        const u1 = 1 << (2 * j),
          u2 = 2 << (2 * j);
        for (let l = 0; l < 32; l++) out[y++] = d1 * ((src[ql + l]! & 15) + (five && src[qh + l]! & u1 ? 16 : 0)) - mm1;
        for (let l = 0; l < 32; l++) out[y++] = d2 * ((src[ql + l]! >> 4) + (five && src[qh + l]! & u2 ? 16 : 0)) - mm2;
        ql += 32;
      }
    }
    return out;
  };
}

function q6_K(src: Uint8Array, n: number, out: Float32Array): Float32Array {
  for (let b = 0; b < n / 256; b++) {
    const o = b * 210;
    const d = half(src, o + 208);
    for (let h = 0; h < 2; h++) {
      const ql = o + h * 64;
      const qh = o + 128 + h * 32;
      const sc = o + 192 + h * 8;
      const y = b * 256 + h * 128;
      const scale = (i: number) => fr(d * ((src[sc + i]! << 24) >> 24)); // int8
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h8 = src[qh + l]!;
        const q1 = ((src[ql + l]! & 15) | ((h8 & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32]! & 15) | (((h8 >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l]! >> 4) | (((h8 >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32]! >> 4) | (((h8 >> 6) & 3) << 4)) - 32;
        out[y + l] = scale(is) * q1;
        out[y + l + 32] = scale(is + 2) * q2;
        out[y + l + 64] = scale(is + 4) * q3;
        out[y + l + 96] = scale(is + 6) * q4;
      }
    }
  }
  return out;
}

/** Function declaration (hoisted) so quant.ts can call it whichever module loads first. */
export function kquantEntries(): [GgmlType, Deq][] {
  return [
    [GgmlType.Q4_1, q4_1],
    [GgmlType.Q5_0, q5(false)],
    [GgmlType.Q5_1, q5(true)],
    [GgmlType.Q2_K, q2_K],
    [GgmlType.Q3_K, q3_K],
    [GgmlType.Q4_K, q45_K(false)],
    [GgmlType.Q5_K, q45_K(true)],
    [GgmlType.Q6_K, q6_K],
  ];
}
