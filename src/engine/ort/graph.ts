// Builds the ONNX graph of one stage: decoder layers [start, end) and optionally the final
// norm + LM head. The embedding is done in JS (a row lookup; keeps the table in its stored,
// possibly quantized form), so every graph starts from hidden states [1, S, dim].
//
// Two attention paths:
//  - 'gqa': com.microsoft GroupQueryAttention with rotary inside (rotary_interleaved=1: adjacent
//    pairs, the GGUF layout). Needs head_size % 16 == 0 on the CPU EP. KV cache: exact-length
//    past in, present out (BNSH).
//  - 'std': standard ops only, any head size. RoPE by adjacent-pair rotation
//    (x*cos + swap(x)*sin with cos/sin fed per row); attention against caches the graph only
//    reads, laid out in L lanes of C slots: K transposed [KVH, L, D, C], V [KVH, L, C, D]. The
//    new rows' K and V are output and JS writes them into its caches. A lane holds one
//    session's cache; its R query rows (gathered from the N hidden rows by `row_index`,
//    scattered back by `out_index`) attend to the lane's C slots and its own R new rows;
//    `attn_mask` [L, G·R, C + R] (one copy per query head of a KV head's group) keeps each row
//    to its session's live slots and earlier tokens. An unbatched step is one lane holding the
//    session's capacity-sized cache as it is stored (no copy); a batch gives each session a lane
//    (./batch-layout.ts, ./lane-buffers.ts), so attention costs rows × their own session's
//    positions rather than rows × every session's.

import type { ModelConfig } from '../../model/types.js';
import { DT, GraphBuilder, type EncodedModel } from './onnx.js';
import type { LinearWeight } from './weights.js';

export type AttentionPath = 'gqa' | 'std';

export interface LayerWeightsIn {
  attnNorm: Float32Array;
  qkv: LinearWeight;
  o: LinearWeight;
  ffnNorm: Float32Array;
  gateUp: LinearWeight;
  down: LinearWeight;
}

export interface GraphSpec {
  config: ModelConfig;
  path: AttentionPath;
  layers: LayerWeightsIn[];
  head?: { norm: Float32Array; output: LinearWeight };
  /** rotary inverse frequencies (headDim/2) */
  invFreq: Float32Array;
  /** GQA path: positions covered by the cos/sin caches */
  maxContext: number;
  /** fp32 linear layers: FusedMatMul(transB) on the stored [out,in] rows, or MatMul on a transposed copy */
  f32Linear?: 'fused' | 'matmul';
  /** MatMulNBits accuracy_level (4 = int8 activations) */
  accuracyLevel: number;
  /** initializers at least this large go to external data (the 2 GB protobuf limit) */
  externalThreshold: number;
}

const MS = 'com.microsoft';
const INT64_MAX = 2 ** 62; // Slice clamps; any huge value works

export function buildStageGraph(spec: GraphSpec): EncodedModel {
  const c = spec.config;
  const g = new GraphBuilder(spec.externalThreshold);
  const D = c.headDim;
  const H = c.nHeads;
  const KVH = c.nKvHeads;
  const G = H / KVH;
  const eps = { float: c.normEps };

  const x0 = g.input('hidden_in', DT.float, [1, 'S', c.dim]);

  const linear = (x: string, w: LinearWeight, name: string): string => {
    if (w.kind === 'f32') {
      if (spec.f32Linear === 'matmul') return g.op('MatMul', [x, g.f32(`${name}.w`, [w.cols, w.rows], transpose(w.data, w.rows, w.cols))]);
      const W = g.f32(`${name}.w`, [w.rows, w.cols], w.data);
      return g.op('FusedMatMul', [x, W], { transB: 1 }, MS);
    }
    const nb = w.cols / 32;
    const B = g.init(`${name}.q`, DT.uint8, [w.rows, nb, (32 * w.bits) / 8], w.b);
    const sc = g.f32(`${name}.s`, [w.rows * nb], w.scales);
    return g.op('MatMulNBits', [x, B, sc], { K: w.cols, N: w.rows, bits: w.bits, block_size: 32, accuracy_level: spec.accuracyLevel }, MS);
  };

  // shared per-step inputs of the attention path
  let stdIn: { cos: string; sin: string; mask: string; split: string; rows: string; back: string; q5: string; kv4: string } | undefined;
  let gqaIn: { seqlens: string; total: string; cos: string; sin: string } | undefined;
  if (spec.layers.length > 0) {
    if (spec.path === 'gqa') {
      const half = D / 2;
      const cos = new Float32Array(spec.maxContext * half);
      const sin = new Float32Array(spec.maxContext * half);
      for (let p = 0; p < spec.maxContext; p++) {
        for (let i = 0; i < half; i++) {
          const a = p * spec.invFreq[i]!;
          cos[p * half + i] = Math.cos(a);
          sin[p * half + i] = Math.sin(a);
        }
      }
      gqaIn = {
        seqlens: g.input('seqlens_k', DT.int32, [1]),
        total: g.input('total_seq_len', DT.int32, []),
        cos: g.f32('cos_cache', [spec.maxContext, half], cos),
        sin: g.f32('sin_cache', [spec.maxContext, half], sin),
      };
    } else {
      // the lane layout [L, R] (./batch-layout.ts) for the reshapes that split lanes from rows
      const lanes = g.input('lane_dims', DT.int64, [2]);
      stdIn = {
        cos: g.input('rope_cos', DT.float, ['LR', 1, D / 2, 2]),
        sin: g.input('rope_sin', DT.float, ['LR', 1, D / 2, 2]),
        mask: g.input('attn_mask', DT.float, ['L', 'GR', 'CR']),
        split: g.input('split_sizes', DT.int64, [2]),
        rows: g.input('row_index', DT.int64, ['LR']),
        back: g.input('out_index', DT.int64, ['S']),
        q5: g.op('Concat', [lanes, g.i64('c_kvh_g_d', [KVH, G, D])], { axis: 0 }), // [L, R, KVH, G, D]
        kv4: g.op('Concat', [lanes, g.i64('c_kvh_d', [KVH, D])], { axis: 0 }), // [L, R, KVH, D]
      };
    }
  }

  // constants
  const shape = (name: string, v: number[]) => g.i64(name, v);
  const cSplitQkv = shape('c_split_qkv', [(H + KVH) * D, KVH * D]);
  const cSplitQk = shape('c_split_qk', [H, KVH]);
  const cQkShape = shape('c_qk_shape', [-1, H + KVH, D / 2, 2]);
  const cQkFlat = shape('c_qk_flat', [-1, H + KVH, D]);
  const cKvShape = shape('c_kv_shape', [-1, KVH, D]);
  const cOut = shape('c_out', [1, -1, H * D]);
  const cQrows = shape('c_q_rows', [KVH, 0, -1, D]); // [KVH, L, G, R, D] → [KVH, L, G*R, D]
  const cOg = shape('c_o_group', [KVH, 0, G, -1, D]); // [KVH, L, G*R, D] → [KVH, L, G, R, D]
  const cUnsq1 = shape('c_axis1', [1]);
  const sliceStart = shape('c_m1', [-1]);
  const sliceEnd = shape('c_neg_inf', [-INT64_MAX]);
  const sliceAxis = shape('c_axis3', [3]);
  const sliceStep = shape('c_step_m1', [-1]);
  const scale = g.scalarF32('c_scale', 1 / Math.sqrt(D));
  const cFfnSplit = shape('c_split_ffn', [c.ffnDim, c.ffnDim]);

  const stdAttention = (qkv: string, l: number): string => {
    const s = stdIn!;
    // the lanes' query rows [1, L*R, ...] (a padding row repeats one of its lane's rows; masked)
    const [qk, v] = g.node('Split', [g.op('Gather', [qkv, s.rows], { axis: 1 }), cSplitQkv], 2, { axis: 2 });
    // RoPE on q and k together: rows of D/2 adjacent pairs
    const p = g.op('Reshape', [qk!, cQkShape]);
    const swapped = g.op('Slice', [p, sliceStart, sliceEnd, sliceAxis, sliceStep]);
    const rot = g.op('Add', [g.op('Mul', [p, s.cos]), g.op('Mul', [swapped, s.sin])]);
    const [q, k] = g.node('Split', [g.op('Reshape', [rot, cQkFlat]), cSplitQk], [g.fresh('q'), `new_k_${l}`], { axis: 1 });
    const vr = g.node('Reshape', [v!, cKvShape], [`new_v_${l}`])[0]!;
    // queries of one KV head's group stacked as rows [KVH, L, G*R, D]: one GEMM per KV head and
    // lane reads each cached K/V once (a [KVH, G, ...] batch would re-pack the cache G times)
    const q4 = g.op('Mul', [g.op('Reshape', [g.op('Transpose', [g.op('Reshape', [q!, s.q5])], { perm: [2, 0, 3, 1, 4] }), cQrows]), scale]);
    const kT = g.op('Transpose', [g.op('Reshape', [k!, s.kv4])], { perm: [2, 0, 3, 1] }); // [KVH,L,D,R]
    const vT = g.op('Transpose', [g.op('Reshape', [vr, s.kv4])], { perm: [2, 0, 1, 3] }); // [KVH,L,R,D]
    const kc = g.input(`cache_k_${l}`, DT.float, [KVH, 'L', D, 'C']);
    const vc = g.input(`cache_v_${l}`, DT.float, [KVH, 'L', 'C', D]);
    const scores = g.op('Concat', [g.op('MatMul', [q4, kc]), g.op('MatMul', [q4, kT])], { axis: 3 }); // [KVH,L,G*R,C+R]
    const probs = g.op('Softmax', [g.op('Add', [scores, s.mask])], { axis: -1 }); // + [L,G*R,C+R]
    const [pc, pn] = g.node('Split', [probs, s.split], 2, { axis: 3 });
    const o = g.op('Add', [g.op('MatMul', [pc!, vc]), g.op('MatMul', [pn!, vT])]); // [KVH,L,G*R,D]
    const og = g.op('Reshape', [o, cOg]); // [KVH,L,G,R,D]
    g.output(`new_k_${l}`, DT.float, ['LR', KVH, D]);
    g.output(`new_v_${l}`, DT.float, ['LR', KVH, D]);
    // [L, R, KVH, G, D] → the lanes' rows → back to the N hidden rows
    const lanes = g.op('Reshape', [g.op('Transpose', [og], { perm: [1, 3, 0, 2, 4] }), cOut]);
    return g.op('Gather', [lanes, s.back], { axis: 1 });
  };

  const gqaAttention = (qkv: string, l: number): string => {
    const a = gqaIn!;
    const pk = g.input(`past_key_${l}`, DT.float, [1, KVH, 'P', D]);
    const pv = g.input(`past_value_${l}`, DT.float, [1, KVH, 'P', D]);
    const [out] = g.node(
      'GroupQueryAttention',
      [qkv, '', '', pk, pv, a.seqlens, a.total, a.cos, a.sin],
      [g.fresh('attn'), `present_key_${l}`, `present_value_${l}`],
      { num_heads: H, kv_num_heads: KVH, do_rotary: 1, rotary_interleaved: 1, scale: { float: 1 / Math.sqrt(D) } },
      MS,
    );
    g.output(`present_key_${l}`, DT.float, [1, KVH, 'T', D]);
    g.output(`present_value_${l}`, DT.float, [1, KVH, 'T', D]);
    return out!;
  };

  // residual stream: `res` is the running sum, `delta` what the last block added to it;
  // SkipSimplifiedLayerNormalization adds and normalises in one op (output 3 = the sum)
  let res = x0;
  let delta: string | undefined;
  const addNorm = (gamma: string): string => {
    if (delta === undefined) return g.op('SimplifiedLayerNormalization', [res, gamma], { axis: -1, epsilon: eps, stash_type: 1 });
    const sum = g.fresh('res');
    const [y] = g.node('SkipSimplifiedLayerNormalization', [delta, res, gamma], [g.fresh('norm'), '', '', sum], { epsilon: eps }, MS);
    res = sum;
    delta = undefined;
    return y!;
  };

  spec.layers.forEach((w, i) => {
    const l = i;
    const xn = addNorm(g.f32(`l${l}.attn_norm`, [c.dim], w.attnNorm));
    const qkv = linear(xn, w.qkv, `l${l}.qkv`);
    const att = spec.path === 'gqa' ? gqaAttention(qkv, l) : stdAttention(qkv, l);
    delta = linear(att, w.o, `l${l}.o`);
    const fn = addNorm(g.f32(`l${l}.ffn_norm`, [c.dim], w.ffnNorm));
    const [gate, up] = g.node('Split', [linear(fn, w.gateUp, `l${l}.gate_up`), cFfnSplit], 2, { axis: 2 });
    const act = g.op('Mul', [g.op('Mul', [gate!, g.op('Sigmoid', [gate!])]), up!]);
    delta = linear(act, w.down, `l${l}.down`);
  });
  const hidden = delta === undefined ? res : g.op('Add', [res, delta]);

  if (spec.head) {
    const start = g.input('head_start', DT.int64, [1]);
    const rows = g.op('Slice', [hidden, start, shape('c_big', [INT64_MAX]), cUnsq1]);
    const n = g.op('SimplifiedLayerNormalization', [rows, g.f32('output_norm', [c.dim], spec.head.norm)], { axis: -1, epsilon: eps, stash_type: 1 });
    const logits = linear(n, spec.head.output, 'lm_head');
    g.node('Identity', [logits], ['logits']);
    g.output('logits', DT.float, [1, 'R', c.vocabSize]);
  } else {
    g.node('Identity', [hidden], ['hidden_out']);
    g.output('hidden_out', DT.float, [1, 'S', c.dim]);
  }
  return g.encode({ '': 17, [MS]: 1 });
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]!;
  return t;
}
