// Linear-layer weights in the forms the ORT graph consumes: fp32 [out, in], or the blocks of
// com.microsoft MatMulNBits (block 32, per output row). GGUF Q4_0 / Q8_0 blocks map onto
// MatMulNBits directly (same block size, same per-row order); anything else is dequantized
// and, for q4/q8, re-quantized with llama.cpp's own rounding (src/model/quantize.ts).

import { f16ToF32 } from '../../model/half.js';
import { dequantize } from '../../model/quant.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../../model/quantize.js';
import { GgmlType, ModelFormatError } from '../../model/types.js';

export type WeightMode = 'f32' | 'q8' | 'q4';

export type LinearWeight =
  | { kind: 'f32'; rows: number; cols: number; data: Float32Array }
  | { kind: 'nbits'; bits: 4 | 8; rows: number; cols: number; b: Uint8Array; scales: Float32Array };

export interface RawTensor {
  type: GgmlType;
  /** row-major [rows, cols] */
  shape: number[];
  data: Uint8Array;
}

/** [rows, cols] weight of a linear layer (rows = outputs) in the requested precision */
export function prepareLinear(t: RawTensor, mode: WeightMode, name = 'tensor'): LinearWeight {
  if (t.shape.length !== 2) throw new ModelFormatError(`${name}: expected a 2-D weight, got [${t.shape.join(', ')}]`);
  const [rows, cols] = t.shape as [number, number];
  if (mode === 'f32') return { kind: 'f32', rows, cols, data: dequantize(t.type, t.data, rows * cols) };
  if (cols % 32 !== 0) throw new ModelFormatError(`${name}: ${cols} columns is not a multiple of 32, cannot use ${mode}`);
  if (mode === 'q4') {
    const q = t.type === GgmlType.Q4_0 ? t.data : quantizeQ4_0(dequantize(t.type, t.data, rows * cols));
    return { kind: 'nbits', bits: 4, rows, cols, ...q4_0ToNBits(q, rows * (cols / 32)) };
  }
  const q = t.type === GgmlType.Q8_0 ? t.data : quantizeQ8_0(dequantize(t.type, t.data, rows * cols));
  return { kind: 'nbits', bits: 8, rows, cols, ...q8_0ToNBits(q, rows * (cols / 32)) };
}

/**
 * Q4_0 block (f16 d, 16 bytes: byte j = element j | element j+16 << 4) → MatMulNBits 4-bit
 * block (byte i = element 2i | element 2i+1 << 4) with an fp32 scale; both use offset 8.
 */
export function q4_0ToNBits(src: Uint8Array, nBlocks: number): { b: Uint8Array; scales: Float32Array } {
  if (src.byteLength < nBlocks * 18) throw new ModelFormatError(`Q4_0 data truncated`);
  const b = new Uint8Array(nBlocks * 16);
  const scales = new Float32Array(nBlocks);
  const e = new Uint8Array(32);
  for (let k = 0; k < nBlocks; k++) {
    const o = k * 18;
    scales[k] = f16ToF32(src[o]! | (src[o + 1]! << 8));
    for (let j = 0; j < 16; j++) {
      const q = src[o + 2 + j]!;
      e[j] = q & 0x0f;
      e[j + 16] = q >> 4;
    }
    const d = k * 16;
    for (let i = 0; i < 16; i++) b[d + i] = e[2 * i]! | (e[2 * i + 1]! << 4);
  }
  return { b, scales };
}

/** Q8_0 block (f16 d, 32 int8) → MatMulNBits 8-bit block: uint8 = int8 + 128 (the implicit zero point) */
export function q8_0ToNBits(src: Uint8Array, nBlocks: number): { b: Uint8Array; scales: Float32Array } {
  if (src.byteLength < nBlocks * 34) throw new ModelFormatError(`Q8_0 data truncated`);
  const b = new Uint8Array(nBlocks * 32);
  const scales = new Float32Array(nBlocks);
  for (let k = 0; k < nBlocks; k++) {
    const o = k * 34;
    scales[k] = f16ToF32(src[o]! | (src[o + 1]! << 8));
    const d = k * 32;
    for (let j = 0; j < 32; j++) b[d + j] = src[o + 2 + j]! ^ 0x80;
  }
  return { b, scales };
}

/** rows of several same-kind weights stacked (fused QKV, gate+up); inputs are not kept */
export function concatRows(ws: LinearWeight[]): LinearWeight {
  const first = ws[0]!;
  const rows = ws.reduce((s, w) => s + w.rows, 0);
  for (const w of ws) {
    if (w.kind !== first.kind || w.cols !== first.cols || (w.kind === 'nbits' && first.kind === 'nbits' && w.bits !== first.bits)) {
      throw new ModelFormatError('cannot fuse weights of different shapes or precisions');
    }
  }
  if (first.kind === 'f32') {
    const data = new Float32Array(rows * first.cols);
    let o = 0;
    for (const w of ws) {
      data.set((w as typeof first).data, o);
      o += w.rows * w.cols;
    }
    return { kind: 'f32', rows, cols: first.cols, data };
  }
  const nb = ws.map((w) => w as typeof first);
  const b = new Uint8Array(nb.reduce((s, w) => s + w.b.byteLength, 0));
  const scales = new Float32Array(nb.reduce((s, w) => s + w.scales.length, 0));
  let ob = 0;
  let os = 0;
  for (const w of nb) {
    b.set(w.b, ob);
    scales.set(w.scales, os);
    ob += w.b.byteLength;
    os += w.scales.length;
  }
  return { kind: 'nbits', bits: first.bits, rows, cols: first.cols, b, scales };
}

/** the precision a file's layer weights suggest when the caller does not choose */
export function defaultMode(types: GgmlType[]): WeightMode {
  if (types.length && types.every((t) => t === GgmlType.Q4_0)) return 'q4';
  if (types.length && types.every((t) => t === GgmlType.Q8_0)) return 'q8';
  return 'f32';
}
