// Dequantizers (hand-built blocks, expected values derived element by element from the block
// definitions in ggml-common.h) and the llama.cpp-exact quantizers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f16ToF32, f32ToF16 } from '../../src/model/half.js';
import { dequantize, canDequantize } from '../../src/model/quant.js';
import { quantizeBF16, quantizeF16, quantizeQ4_0, quantizeQ8_0 } from '../../src/model/quantize.js';
import { GgmlType } from '../../src/model/types.js';

/** small deterministic byte source */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 255;
  }
  return out;
}
const putHalf = (b: Uint8Array, o: number, v: number) => {
  const h = f32ToF16(v);
  b[o] = h & 255;
  b[o + 1] = h >> 8;
};

function close(actual: Float32Array, expected: number[], what: string) {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    assert.ok(Math.abs(actual[i]! - e) <= 1e-5 * Math.max(1, Math.abs(e)), `${what}[${i}]: got ${actual[i]}, expected ${e}`);
  }
}

test('every ggml block type we list for llama files can be decoded', () => {
  for (const t of [
    GgmlType.F32,
    GgmlType.F16,
    GgmlType.BF16,
    GgmlType.Q4_0,
    GgmlType.Q4_1,
    GgmlType.Q5_0,
    GgmlType.Q5_1,
    GgmlType.Q8_0,
    GgmlType.Q2_K,
    GgmlType.Q3_K,
    GgmlType.Q4_K,
    GgmlType.Q5_K,
    GgmlType.Q6_K,
  ]) {
    assert.ok(canDequantize(t), GgmlType[t]);
  }
  assert.ok(!canDequantize(GgmlType.Q8_K));
});

test('Q4_1: x = d*q + m, element j in the low nibble of byte j, j+16 in the high nibble', () => {
  const b = bytes(20, 1);
  putHalf(b, 0, 0.25);
  putHalf(b, 2, -1.5);
  const exp: number[] = [];
  for (let e = 0; e < 32; e++) {
    const byte = b[4 + (e % 16)]!;
    const q = e < 16 ? byte & 15 : byte >> 4;
    exp.push(0.25 * q - 1.5);
  }
  close(dequantize(GgmlType.Q4_1, b, 32), exp, 'q4_1');
});

test('Q5_0 / Q5_1: fifth bit of element j is bit j of the u32 qh', () => {
  for (const withMin of [false, true]) {
    const b = bytes(withMin ? 24 : 22, 2);
    putHalf(b, 0, 0.5);
    if (withMin) putHalf(b, 2, 2);
    const qhOff = withMin ? 4 : 2;
    const qh = b[qhOff]! + b[qhOff + 1]! * 2 ** 8 + b[qhOff + 2]! * 2 ** 16 + b[qhOff + 3]! * 2 ** 24;
    const exp: number[] = [];
    for (let e = 0; e < 32; e++) {
      const byte = b[qhOff + 4 + (e % 16)]!;
      const lo = e < 16 ? byte & 15 : byte >> 4;
      const hi = Math.floor(qh / 2 ** e) % 2;
      const q = lo + 16 * hi;
      exp.push(withMin ? 0.5 * q + 2 : 0.5 * (q - 16));
    }
    close(dequantize(withMin ? GgmlType.Q5_1 : GgmlType.Q5_0, b, 32), exp, withMin ? 'q5_1' : 'q5_0');
  }
});

// 6-bit scales/mins of Q4_K/Q5_K: j<4 in the low 6 bits of bytes j / j+4; j>=4 split into a low
// nibble (byte j+4) and two high bits (top bits of bytes j-4 / j).
function packScaleMin(sc: number[], m: number[]): Uint8Array {
  const p = new Uint8Array(12);
  for (let j = 0; j < 4; j++) {
    p[j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
    p[j + 4] = m[j]! | ((m[j + 4]! >> 4) << 6);
    p[j + 8] = (sc[j + 4]! & 15) | ((m[j + 4]! & 15) << 4);
  }
  return p;
}

test('Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scale and min', () => {
  const sc = [1, 2, 3, 4, 17, 33, 5, 63];
  const mn = [0, 1, 2, 3, 20, 40, 6, 63];
  for (const five of [false, true]) {
    const size = five ? 176 : 144;
    const b = bytes(size * 2, five ? 3 : 4); // two super-blocks
    for (let blk = 0; blk < 2; blk++) {
      const o = blk * size;
      putHalf(b, o, 0.125 * (blk + 1));
      putHalf(b, o + 2, 0.0625);
      b.set(packScaleMin(sc, mn), o + 4);
    }
    const exp: number[] = [];
    for (let blk = 0; blk < 2; blk++) {
      const o = blk * size;
      const d = 0.125 * (blk + 1);
      const qs = o + (five ? 48 : 16);
      for (let e = 0; e < 256; e++) {
        const s = e >> 5; // sub-block
        const chunk = e >> 6;
        const high = (e >> 5) & 1;
        const l = e & 31;
        const byte = b[qs + chunk * 32 + l]!;
        let q = high ? byte >> 4 : byte & 15;
        if (five) q += ((b[o + 16 + l]! >> (2 * chunk + high)) & 1) * 16;
        exp.push(d * sc[s]! * q - 0.0625 * mn[s]!);
      }
    }
    close(dequantize(five ? GgmlType.Q5_K : GgmlType.Q4_K, b, 512), exp, five ? 'q5_K' : 'q4_K');
  }
});

test('Q6_K: 4-bit ql + 2-bit qh, 16 int8 scales, offset 32', () => {
  const b = bytes(210, 5);
  putHalf(b, 208, 0.0078125);
  const scales = [-128, -3, 0, 1, 5, 127, 64, -64, 7, 9, -9, 100, -100, 2, 3, 4];
  scales.forEach((s, i) => (b[192 + i] = s & 255));
  const exp: number[] = [];
  for (let e = 0; e < 256; e++) {
    const h = e >> 7;
    const r = e & 127;
    const g = r >> 5; // which of the four 32-value groups in this half
    const l = r & 31;
    const qlByte = b[h * 64 + (g & 1) * 32 + l]!;
    const lo = g < 2 ? qlByte & 15 : qlByte >> 4;
    const hi = (b[128 + h * 32 + l]! >> (2 * g)) & 3;
    const q = (lo | (hi << 4)) - 32;
    exp.push(0.0078125 * scales[h * 8 + g * 2 + (l >> 4)]! * q);
  }
  close(dequantize(GgmlType.Q6_K, b, 256), exp, 'q6_K');
});

test('Q2_K: 2-bit quants, 4-bit scale and min per 16 values', () => {
  const b = bytes(84, 6);
  putHalf(b, 80, 0.5);
  putHalf(b, 82, 0.25);
  const exp: number[] = [];
  for (let e = 0; e < 256; e++) {
    const h = e >> 7;
    const r = e & 127;
    const j = r >> 5;
    const part = (r >> 4) & 1;
    const l = r & 15;
    const q = (b[16 + h * 32 + part * 16 + l]! >> (2 * j)) & 3;
    const s = b[h * 8 + j * 2 + part]!;
    exp.push(0.5 * (s & 15) * q - 0.25 * (s >> 4));
  }
  close(dequantize(GgmlType.Q2_K, b, 256), exp, 'q2_K');
});

test('Q3_K: 2 low bits + inverted high bit in hmask, 16 6-bit scales offset 32', () => {
  const b = bytes(110, 7);
  putHalf(b, 108, 0.75);
  const scales = [0, 1, 31, 32, 33, 63, 10, 50, 5, 40, 20, 60, 2, 34, 47, 16];
  const packed = new Uint8Array(12);
  scales.forEach((l, j) => {
    if (j < 8) packed[j]! |= l & 15;
    else packed[j - 8]! |= (l & 15) << 4;
    packed[(j % 4) + 8]! |= (l >> 4) << (2 * Math.floor(j / 4));
  });
  b.set(packed, 96);
  const exp: number[] = [];
  for (let e = 0; e < 256; e++) {
    const h = e >> 7;
    const r = e & 127;
    const j = r >> 5;
    const part = (r >> 4) & 1;
    const l = r & 15;
    const low = (b[32 + h * 32 + part * 16 + l]! >> (2 * j)) & 3;
    const hbit = (b[part * 16 + l]! >> (h * 4 + j)) & 1;
    exp.push(0.75 * (scales[h * 8 + j * 2 + part]! - 32) * (low - (hbit ? 0 : 4)));
  }
  close(dequantize(GgmlType.Q3_K, b, 256), exp, 'q3_K');
});

test('Q8_0 quantizer matches llama.cpp rounding byte for byte', () => {
  const x = new Float32Array(32);
  for (let j = 0; j < 32; j++) x[j] = (j - 16) * 0.5; // amax 8 -> d = 8/127
  const q = quantizeQ8_0(x);
  assert.equal(q.length, 34);
  assert.deepEqual([q[0], q[1]], [0x08, 0x2c]); // f16(8/127) = 0x2C08
  const qs = new Int8Array(q.buffer, 2, 32);
  // q = roundf(x * 127/8) with C roundf (ties away from zero): 4*15.875 = 63.5 -> 64
  assert.equal(qs[0], -127);
  assert.equal(qs[1], -119);
  assert.equal(qs[8], -64);
  assert.equal(qs[16], 0);
  assert.equal(qs[17], 8);
  assert.equal(qs[24], 64);
  assert.equal(qs[31], 119);
  // all-zero block: d = 0, q = 0
  assert.deepEqual([...quantizeQ8_0(new Float32Array(32))], new Array(34).fill(0));
});

test('Q4_0 quantizer matches llama.cpp (signed max, d = max/-8, trunc(x/d + 8.5) clipped to 15)', () => {
  const x = new Float32Array(32);
  for (let j = 0; j < 32; j++) x[j] = -8 + j * 0.5; // max |x| is -8 -> d = 1
  const q = quantizeQ4_0(x);
  assert.equal(q.length, 18);
  assert.deepEqual([q[0], q[1]], [0x00, 0x3c]); // f16(1.0)
  for (let k = 0; k < 16; k++) {
    const lo = Math.floor((k + 1) / 2);
    const hi = Math.min(15, Math.floor((k + 17) / 2));
    assert.equal(q[2 + k], lo | (hi << 4), `byte ${k}`);
  }
  // and it decodes back to d*(q-8)
  const y = dequantize(GgmlType.Q4_0, q, 32);
  assert.equal(y[0], -8);
  assert.equal(y[31], 7); // clipped
});

test('quantizer round-trip error bounds on random data', () => {
  const n = 32 * 64;
  const x = new Float32Array(n);
  const r = bytes(n * 2, 9);
  for (let i = 0; i < n; i++) x[i] = ((r[2 * i]! + r[2 * i + 1]! - 255) / 64) * (1 + (i % 7));
  const y8 = dequantize(GgmlType.Q8_0, quantizeQ8_0(x), n);
  const y4 = dequantize(GgmlType.Q4_0, quantizeQ4_0(x), n);
  for (let b = 0; b < n / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      assert.ok(Math.abs(x[i]! - y8[i]!) <= (amax / 127) * 0.5 + amax * 1e-3, `q8 ${i}`);
      assert.ok(Math.abs(x[i]! - y4[i]!) <= (amax / 8) * 1.001 + 1e-6, `q4 ${i}`);
    }
  }
  const yh = dequantize(GgmlType.F16, quantizeF16(x), n);
  const yb = dequantize(GgmlType.BF16, quantizeBF16(x), n);
  for (let i = 0; i < n; i++) {
    assert.ok(Math.abs(x[i]! - yh[i]!) <= Math.abs(x[i]!) * 2 ** -11 + 1e-7);
    assert.ok(Math.abs(x[i]! - yb[i]!) <= Math.abs(x[i]!) * 2 ** -8);
  }
  // bf16 rounds to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1
  assert.equal(dequantize(GgmlType.BF16, quantizeBF16(new Float32Array([1 + 2 ** -8])), 1)[0], 1);
  assert.equal(f16ToF32(f32ToF16(65504)), 65504);
});
