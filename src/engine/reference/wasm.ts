// WebAssembly SIMD matmul for the reference engine: same arithmetic, same bits, ~4× the speed.
//
// The kernel follows kernels.ts's dot() exactly: four double partial sums s_k over i ≡ k
// (mod 4), kept in two f64x2 registers (s0,s1) and (s2,s3); each f32 operand is promoted to
// f64, multiplied (exact), and added in increasing i; the same scalar tail; the result
// (s0 + s1) + (s2 + s3) rounded to f32 at the store. Non-relaxed WASM SIMD float operations
// are fully specified by IEEE-754 (no FMA, no reassociation), so the JS and WASM paths return
// identical bits; test/engine/reference.test.ts checks that. The JS path remains the
// specification and the fallback where SIMD is unavailable or the weights exceed 4 GiB.
//
// The module is written out byte by byte below (no toolchain at build or run time).

// the project's TS lib settings carry no WebAssembly typings: declare the little we use
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (mod: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (d: { initial: number }) => WasmMemory;
}
const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65536;
/** wasm32 addresses are 32-bit: keep weights and scratch under 4 GiB */
const MAX_BYTES = 65536 * PAGE - PAGE;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const str = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'latin1')];

// opcodes
// prettier-ignore
const BLOCK = 0x02, LOOP = 0x03, IF = 0x04, END = 0x0b, BR = 0x0c, BR_IF = 0x0d, VOID = 0x40;
// prettier-ignore
const GET = 0x20, SET = 0x21;
// prettier-ignore
const I32_CONST = 0x41, I32_ADD = 0x6a, I32_MUL = 0x6c, I32_AND = 0x71, I32_GE_U = 0x4f, I32_LT_U = 0x49, I32_GT_U = 0x4b, I32_SHL = 0x74;
// prettier-ignore
const F32_LOAD = 0x2a, F32_STORE = 0x38, F64_PROMOTE = 0xbb, F32_DEMOTE = 0xb6, F64_ADD = 0xa0, F64_MUL = 0xa2;
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const V128_LOAD = (align: number) => simd(0x00, align, 0);
const V128_ZERO = simd(0x0c, ...new Array(16).fill(0));
const SHUF_HIGH = simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
const F64X2_EXTRACT = (lane: number) => simd(0x21, lane);
// prettier-ignore
const F64X2_ADD = simd(0xf0), F64X2_MUL = simd(0xf2), F64X2_PROMOTE_LOW = simd(0x5f);
const R_MAX = 4;

// params: 0 xPtr, 1 wPtr, 2 yPtr, 3 nTok, 4 nIn, 5 nOut (byte pointers, counts)
// locals (i32): 6 o, 7 t, 8 i, 9 n4, 10 xRow, 11..14 wRow[r]
//        (v128): 15 va, 16 vb, 17..20 acc01[r], 21..24 acc23[r]
//        (f64): 25 s0, 26 s1, 27 s2, 28 s3
// Rows are computed R = 4 at a time (then 1 at a time for the rest): x is loaded once for
// four independent accumulation chains, while each row's own order stays exactly dot()'s.
const [xPtr, wPtr, yPtr, nTok, nIn, nOut, o, t, i, n4, xRow] = Array.from({ length: 11 }, (_, k) => k);
const wRow = (r: number) => 11 + r;
// prettier-ignore
const va = 15, vb = 16;
const acc01 = (r: number) => 17 + r;
const acc23 = (r: number) => 21 + r;
const [s0, s1, s2, s3] = [25, 26, 27, 28];
const get = (l: number) => [GET, l];
const set = (l: number) => [SET, l];
const i32 = (v: number) => [I32_CONST, ...sleb(v)];
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}
/** byte address of element `idx` (i32 local) of the f32 row starting at byte address `row` */
const addr = (row: number, idx: number) => [...get(row), ...get(idx), ...i32(2), I32_SHL, I32_ADD];
const inc = (l: number, by: number) => [...get(l), ...i32(by), I32_ADD, ...set(l)];
/** tail step of row r: if (i < nIn) { s += f64(x[i]) * f64(w_r[i]); i++ } */
// prettier-ignore
const tail = (r: number, s: number) => [
  ...get(i), ...get(nIn), I32_LT_U, IF, VOID,
  ...get(s), ...addr(xRow, i), F32_LOAD, 2, 0, F64_PROMOTE, ...addr(wRow(r), i), F32_LOAD, 2, 0, F64_PROMOTE, F64_MUL, F64_ADD, ...set(s),
  ...inc(i, 1),
  END,
];
/** finish row r at token t: reduce its accumulators, add the tail, store y[t*nOut + o + r] */
// prettier-ignore
const finish = (r: number) => [
  ...get(acc01(r)), ...F64X2_EXTRACT(0), ...set(s0),
  ...get(acc01(r)), ...F64X2_EXTRACT(1), ...set(s1),
  ...get(acc23(r)), ...F64X2_EXTRACT(0), ...set(s2),
  ...get(acc23(r)), ...F64X2_EXTRACT(1), ...set(s3),
  ...get(n4), ...set(i),
  ...tail(r, s0), ...tail(r, s1), ...tail(r, s2),
  ...get(yPtr), ...get(t), ...get(nOut), I32_MUL, ...get(o), I32_ADD, ...i32(r), I32_ADD, ...i32(2), I32_SHL, I32_ADD,
  ...get(s0), ...get(s1), F64_ADD, ...get(s2), ...get(s3), F64_ADD, F64_ADD, F32_DEMOTE,
  F32_STORE, 2, 0,
];
/** while (o + R <= nOut) { rows o..o+R-1 for every token; o += R } */
function rowsLoop(R: number): number[] {
  const rs = Array.from({ length: R }, (_, r) => r);
  // prettier-ignore
  return [
    BLOCK, VOID, LOOP, VOID,
    // exit when o + R > nOut
    ...get(o), ...i32(R), I32_ADD, ...get(nOut), I32_GT_U, BR_IF, 1,
    ...rs.flatMap((r) => [...get(wPtr), ...get(o), ...i32(r), I32_ADD, ...get(nIn), I32_MUL, ...i32(2), I32_SHL, I32_ADD, ...set(wRow(r))]),
    ...i32(0), ...set(t),
    BLOCK, VOID, LOOP, VOID,
    ...get(t), ...get(nTok), I32_GE_U, BR_IF, 1,
    ...get(xPtr), ...get(t), ...get(nIn), I32_MUL, ...i32(2), I32_SHL, I32_ADD, ...set(xRow),
    ...rs.flatMap((r) => [...V128_ZERO, ...set(acc01(r)), ...V128_ZERO, ...set(acc23(r))]),
    ...i32(0), ...set(i),
    BLOCK, VOID, LOOP, VOID,
    ...get(i), ...get(n4), I32_GE_U, BR_IF, 1,
    ...addr(xRow, i), ...V128_LOAD(2), ...set(va),
    ...rs.flatMap((r) => [
      ...addr(wRow(r), i), ...V128_LOAD(2), ...set(vb),
      ...get(acc01(r)), ...get(va), ...F64X2_PROMOTE_LOW, ...get(vb), ...F64X2_PROMOTE_LOW, ...F64X2_MUL, ...F64X2_ADD, ...set(acc01(r)),
      ...get(acc23(r)), ...get(va), ...get(va), ...SHUF_HIGH, ...F64X2_PROMOTE_LOW, ...get(vb), ...get(vb), ...SHUF_HIGH, ...F64X2_PROMOTE_LOW, ...F64X2_MUL, ...F64X2_ADD, ...set(acc23(r)),
    ]),
    ...inc(i, 4),
    BR, 0, END, END,
    ...rs.flatMap((r) => finish(r)),
    ...inc(t, 1),
    BR, 0, END, END,
    ...inc(o, R),
    BR, 0, END, END,
  ];
}

// prettier-ignore
const body = [
  ...vec([[5 + R_MAX, 0x7f], [2 + 2 * R_MAX, 0x7b], [4, 0x7c]]),
  ...get(nIn), ...i32(-4), I32_AND, ...set(n4),
  ...i32(0), ...set(o),
  ...rowsLoop(R_MAX),
  ...rowsLoop(1),
  END,
];

// prettier-ignore
const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vec([[0x60, ...vec([[0x7f], [0x7f], [0x7f], [0x7f], [0x7f], [0x7f]]), 0x00]])), // type: (i32 ×6) → ()
  ...section(2, vec([[...str('env'), ...str('mem'), 0x02, 0x00, 0x01]])), // import memory, min 1 page
  ...section(3, vec([[0x00]])),
  ...section(7, vec([[...str('matmul'), 0x00, 0x00]])),
  ...section(10, vec([[...uleb(body.length), ...body]])),
]);

let compiled: object | null | undefined;
function module(): object | null {
  if (compiled === undefined) {
    try {
      compiled = WebAssembly.validate(MODULE) ? new WebAssembly.Module(MODULE) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** tokens per kernel call: bounds the scratch size (the LM head output is block × vocab) */
const BLOCK_TOKENS = 16;

/**
 * One linear memory holding a stage's weights plus scratch for activations. Weights are
 * allocated once at load (the memory never grows, so views stay valid).
 */
export class WasmArena {
  private mem: WasmMemory;
  private fn: (x: number, w: number, y: number, nTok: number, nIn: number, nOut: number) => void;
  private next = 0;
  private xOff: number;
  private yOff: number;
  private xView: Float32Array;
  private yView: Float32Array;

  private constructor(mod: object, weightFloats: number, maxIn: number, maxOut: number) {
    const xFloats = BLOCK_TOKENS * maxIn;
    const yFloats = BLOCK_TOKENS * maxOut;
    const bytes = 4 * (weightFloats + xFloats + yFloats) + 64;
    this.mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
    const inst = new WebAssembly.Instance(mod, { env: { mem: this.mem } });
    this.fn = inst.exports.matmul as WasmArena['fn'];
    this.xOff = this.reserve(xFloats);
    this.yOff = this.reserve(yFloats);
    this.xView = new Float32Array(this.mem.buffer, this.xOff, xFloats);
    this.yView = new Float32Array(this.mem.buffer, this.yOff, yFloats);
  }

  /** an arena for this many weight floats, or null when SIMD is unavailable or it would not fit */
  static create(weightFloats: number, maxIn: number, maxOut: number): WasmArena | null {
    const mod = module();
    if (!mod) return null;
    if (4 * (weightFloats + BLOCK_TOKENS * (maxIn + maxOut)) + 64 > MAX_BYTES) return null;
    try {
      return new WasmArena(mod, weightFloats, maxIn, maxOut);
    } catch {
      return null; // e.g. the memory could not be reserved
    }
  }

  private reserve(floats: number): number {
    const off = this.next;
    this.next += 4 * floats + ((16 - ((4 * floats) % 16)) % 16); // keep 16-byte alignment
    return off;
  }

  /** copy a tensor into the arena; the returned view is what matmul() recognises */
  place(data: Float32Array): Float32Array {
    const off = this.reserve(data.length);
    const v = new Float32Array(this.mem.buffer, off, data.length);
    v.set(data);
    return v;
  }

  owns(w: Float32Array): boolean {
    return w.buffer === this.mem.buffer;
  }

  /** y[t, o] = dot(x[t, :], w[o, :]) for w placed in this arena; same bits as kernels.matmul */
  matmul(y: Float32Array, x: Float32Array, w: Float32Array, nTok: number, nIn: number, nOut: number): void {
    for (let t0 = 0; t0 < nTok; t0 += BLOCK_TOKENS) {
      const nb = Math.min(BLOCK_TOKENS, nTok - t0);
      this.xView.set(x.subarray(t0 * nIn, (t0 + nb) * nIn));
      this.fn(this.xOff, w.byteOffset, this.yOff, nb, nIn, nOut);
      y.set(this.yView.subarray(0, nb * nOut), t0 * nOut);
    }
  }
}
