// Probe: can llama.cpp's own library, called through an FFI (koffi), run a decoder layer range for
// odsi? Uses the prebuilt libllama / libggml of @node-llama-cpp/linux-x64 (the binaries
// node-llama-cpp already ships) directly, not node-llama-cpp's addon.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/probe-llama-ffi.js [--threads N] [--reps N] [--out FILE]
//
// What is checked, each against the pure-TS reference engine or the ORT engine on the same file:
//  1. hidden states in: a llama_batch whose `embd` is set (no token ids) feeds the first layer;
//  2. last layer's output out: the eval callback (cb_eval) asks for tensor "l_out-<last>" and
//     copies it with ggml_backend_tensor_get; returning false after it stops the graph, so the
//     output norm and LM head are not computed;
//  3. a GGUF slice holding only the range: a synthetic SmolLM2-shaped file with 10 layers stands
//     in for layers [a, a+10) of the full model (llama.cpp numbers layers from 0 in any file);
//     positions come from batch.pos, so a middle range continues at the caller's positions;
//  4. sessions as llama.cpp sequences: two sequences decoded in one llama_decode give the same
//     rows as each decoded alone, and llama_memory_seq_rm frees one without touching the other;
//  5. speed, Q4_0 (llama.cpp) vs MatMulNBits q4 (ORT engine), decoder layers [0, 30) of a
//     SmolLM2-135M-shaped file, same thread count, interleaved: decode ms/token at context 128
//     and prefill ms for 128 tokens.
// Writes bench/results/llama-ffi-probe.json; findings in bench/results/llama-ffi-probe.md.

import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createStage } from '../src/engine/create.js';
import { openModel } from '../src/model/load.js';
import { writeSyntheticGguf, type SynthDtype } from '../src/model/synth.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult } from './lib/results.js';
import { stats, fmt } from './lib/stats.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '7' },
    // ggml's CPU threadpool polling level; unset: llama.cpp's own default pool (polls between ops)
    poll: { type: 'string' },
    out: { type: 'string' },
  },
});
const THREADS = Number(args.threads);
const REPS = Number(args.reps);
const POLL = args.poll === undefined ? undefined : Number(args.poll);
const OUT = args.out ?? join(ROOT, 'bench/results/llama-ffi-probe.json');

// ---------------------------------------------------------------- koffi bindings to libllama (v0.5.0 headers)

type Ptr = unknown;
type CType = unknown;
/** the part of koffi's API this probe uses (typed here so the build does not need koffi installed) */
interface Koffi {
  load(path: string): { func(...a: unknown[]): (...args: unknown[]) => unknown };
  proto(decl: string): CType;
  struct(name: string, members: Record<string, unknown>): CType;
  pointer(t: CType): CType;
  array(t: string, n: number): CType;
  register(fn: (...a: never[]) => unknown, t: CType): unknown;
  unregister(cb: unknown): void;
  encode(ref: unknown, type: CType, value: unknown): void;
  decode(ref: unknown, type: CType): unknown;
  call(fn: unknown, type: CType, ...args: unknown[]): unknown;
}

function bind(koffi: Koffi, dir: string) {
  const ggml = koffi.load(join(dir, 'libggml.v0.5.0.so'));
  const base = koffi.load(join(dir, 'libggml-base.so'));
  const llama = koffi.load(join(dir, 'libllama.v0.5.0.so'));
  const EvalCb = koffi.proto('bool ggml_eval_cb(void *t, bool ask, void *ud)');
  // struct layouts copied from include/llama.h of the same release (node-llama-cpp's gitRelease.bundle)
  const ModelParams = koffi.struct('llama_model_params', {
    devices: 'void *',
    tensor_buft_overrides: 'void *',
    n_gpu_layers: 'int32_t',
    split_mode: 'int',
    load_mode: 'int',
    lazy_mode: 'int',
    main_gpu: 'int32_t',
    tensor_split: 'void *',
    progress_callback: 'void *',
    progress_callback_user_data: 'void *',
    kv_overrides: 'void *',
    vocab_only: 'bool',
    check_tensors: 'bool',
    use_extra_bufts: 'bool',
    no_host: 'bool',
    no_alloc: 'bool',
    load_mtp: 'bool',
  });
  const ContextParams = koffi.struct('llama_context_params', {
    n_ctx: 'uint32_t',
    n_batch: 'uint32_t',
    n_ubatch: 'uint32_t',
    n_seq_max: 'uint32_t',
    n_rs_seq: 'uint32_t',
    n_outputs_max: 'uint32_t',
    n_outputs_max_per_seq: 'uint32_t',
    n_threads: 'int32_t',
    n_threads_batch: 'int32_t',
    ctx_type: 'int',
    rope_scaling_type: 'int',
    pooling_type: 'int',
    attention_type: 'int',
    flash_attn_type: 'int',
    rope_freq_base: 'float',
    rope_freq_scale: 'float',
    yarn_ext_factor: 'float',
    yarn_attn_factor: 'float',
    yarn_beta_fast: 'float',
    yarn_beta_slow: 'float',
    yarn_orig_ctx: 'uint32_t',
    defrag_thold: 'float',
    cb_eval: koffi.pointer(EvalCb),
    cb_eval_user_data: 'void *',
    type_k: 'int',
    type_v: 'int',
    abort_callback: 'void *',
    abort_callback_data: 'void *',
    embeddings: 'bool',
    offload_kqv: 'bool',
    no_perf: 'bool',
    op_offload: 'bool',
    swa_full: 'bool',
    kv_unified: 'bool',
    samplers: 'void *',
    n_samplers: 'size_t',
    ctx_other: 'void *',
  });
  const Batch = koffi.struct('llama_batch', {
    n_tokens: 'int32_t',
    token: 'void *',
    embd: 'void *',
    pos: 'void *',
    n_seq_id: 'void *',
    seq_id: 'void *',
    logits: 'void *',
  });
  const TpParams = koffi.struct('ggml_threadpool_params', {
    cpumask: koffi.array('bool', 512),
    n_threads: 'int',
    prio: 'int',
    poll: 'uint32_t',
    strict_cpu: 'bool',
    paused: 'bool',
  });
  const TpNew = koffi.proto('void *ggml_threadpool_new_t(ggml_threadpool_params *p)');
  const regByName = ggml.func('void *ggml_backend_reg_by_name(const char *name)');
  const regProc = ggml.func('void *ggml_backend_reg_get_proc_address(void *reg, const char *name)');
  const tpDefault = base.func('ggml_threadpool_params_default', TpParams, ['int']);
  return {
    koffi,
    EvalCb,
    /** a CPU threadpool with this polling level (0: threads sleep instead of spinning between ops) */
    threadpoolNew(nThreads: number, poll: number): unknown {
      const p = tpDefault(nThreads) as Record<string, unknown>;
      p.poll = poll;
      // the CPU backend is loaded dynamically: its functions come through the registry
      const fn = regProc(regByName('CPU'), 'ggml_threadpool_new');
      if (!fn) throw new Error('CPU backend has no ggml_threadpool_new');
      return koffi.call(fn, TpNew, p);
    },
    attachThreadpool: llama.func('void llama_attach_threadpool(void *ctx, void *tp, void *tpb)'),
    backendLoadAll: ggml.func('void ggml_backend_load_all_from_path(const char *dir)'),
    backendInit: llama.func('void llama_backend_init(void)'),
    modelDefaultParams: llama.func('llama_model_default_params', ModelParams, []),
    contextDefaultParams: llama.func('llama_context_default_params', ContextParams, []),
    modelLoad: llama.func('llama_model_load_from_file', 'void *', ['const char *', ModelParams]),
    modelFree: llama.func('void llama_model_free(void *m)'),
    initFromModel: llama.func('llama_init_from_model', 'void *', ['void *', ContextParams]),
    free: llama.func('void llama_free(void *ctx)'),
    nEmbd: llama.func('int32_t llama_model_n_embd(void *m)'),
    nLayer: llama.func('int32_t llama_model_n_layer(void *m)'),
    batchInit: llama.func('llama_batch_init', Batch, ['int32_t', 'int32_t', 'int32_t']),
    batchFree: llama.func('llama_batch_free', 'void', [Batch]),
    decode: llama.func('llama_decode', 'int32_t', ['void *', Batch]),
    getMemory: llama.func('void *llama_get_memory(void *ctx)'),
    memorySeqRm: llama.func('bool llama_memory_seq_rm(void *mem, int32_t seq, int32_t p0, int32_t p1)'),
    memorySeqPosMax: llama.func('int32_t llama_memory_seq_pos_max(void *mem, int32_t seq)'),
    tensorName: base.func('const char *ggml_get_name(void *t)'),
    tensorNelements: base.func('int64_t ggml_nelements(void *t)'),
    tensorGet: base.func('void ggml_backend_tensor_get(void *t, float *data, size_t offset, size_t size)'),
  };
}
type Lib = ReturnType<typeof bind>;

/** one llama.cpp context over a layer-range file: hidden rows in, last layer's rows out */
class LlamaRange {
  private out = new Float32Array(0);
  private got = 0;
  private target = '';
  /** stop the graph right after the target tensor (skips output norm + LM head) */
  stopAfter = true;
  private readonly batch: Record<string, unknown>;
  private readonly cb: unknown;
  readonly dim: number;
  readonly nLayers: number;
  private readonly model: Ptr;
  readonly ctx: Ptr;

  constructor(
    private readonly L: Lib,
    file: string,
    o: { threads: number; nCtx: number; nSeq: number; maxBatch: number; poll?: number },
  ) {
    const mp = L.modelDefaultParams() as Record<string, unknown>;
    mp.n_gpu_layers = 0;
    this.model = L.modelLoad(file, mp);
    if (!this.model) throw new Error(`llama_model_load_from_file failed for ${file}`);
    this.dim = L.nEmbd(this.model) as number;
    this.nLayers = L.nLayer(this.model) as number;
    this.target = `l_out-${this.nLayers - 1}`;
    this.cb = L.koffi.register((t: Ptr, ask: boolean) => {
      const name = L.tensorName(t) as string;
      // ask: true only for the target, or the scheduler splits the graph at every tensor we
      // claim (one graph launch, with its thread wake-ups, per tensor); otherwise: go on
      if (name !== this.target) return !ask;
      if (ask) return true;
      const n = Number(L.tensorNelements(t));
      if (this.out.length < n) this.out = new Float32Array(n);
      L.tensorGet(t, this.out, 0, n * 4);
      this.got = n;
      return !this.stopAfter;
    }, L.koffi.pointer(L.EvalCb));
    const cp = L.contextDefaultParams() as Record<string, unknown>;
    Object.assign(cp, {
      n_ctx: o.nCtx,
      n_batch: o.maxBatch,
      n_ubatch: o.maxBatch,
      n_seq_max: o.nSeq,
      n_threads: o.threads,
      n_threads_batch: o.threads,
      cb_eval: this.cb,
      no_perf: true,
    });
    this.ctx = L.initFromModel(this.model, cp);
    if (!this.ctx) throw new Error('llama_init_from_model failed');
    if (o.poll !== undefined) {
      const tp = L.threadpoolNew(o.threads, o.poll);
      L.attachThreadpool(this.ctx, tp, tp);
    }
    this.batch = L.batchInit(o.maxBatch, this.dim, o.nSeq) as Record<string, unknown>;
  }

  /**
   * Rows of hidden states (n × dim) at positions pos.. for sequence seq (or per-row seqs) through
   * every layer of the file; returns the last layer's output rows (a copy).
   */
  forward(hidden: Float32Array, rows: { pos: number; seq: number }[]): Float32Array {
    const { koffi } = this.L;
    const n = rows.length;
    const b = this.batch;
    koffi.encode(b.embd, koffi.array('float', n * this.dim), hidden.subarray(0, n * this.dim));
    koffi.encode(b.pos, koffi.array('int32_t', n), Int32Array.from(rows, (r) => r.pos));
    koffi.encode(b.n_seq_id, koffi.array('int32_t', n), new Int32Array(n).fill(1));
    const seqPtrs = koffi.decode(b.seq_id, koffi.array('void *', n)) as Ptr[];
    for (let i = 0; i < n; i++) koffi.encode(seqPtrs[i], 'int32_t', rows[i]!.seq);
    // every row is an output: the last layer keeps only output rows
    koffi.encode(b.logits, koffi.array('int8_t', n), new Int8Array(n).fill(1));
    b.n_tokens = n;
    this.got = 0;
    const rc = this.L.decode(this.ctx, b) as number;
    // a stopped graph reports success (the abort callback is not involved); any rc < 0 is an error
    if (rc < 0) throw new Error(`llama_decode returned ${rc}`);
    if (this.got !== n * this.dim) throw new Error(`eval callback got ${this.got} values, expected ${n * this.dim}`);
    return this.out.slice(0, n * this.dim);
  }

  /** drop positions [from, ∞) of a sequence (all of it by default) */
  seqRm(seq: number, from = -1): boolean {
    return this.L.memorySeqRm(this.L.getMemory(this.ctx), seq, from, -1) as boolean;
  }

  seqPosMax(seq: number): number {
    return this.L.memorySeqPosMax(this.L.getMemory(this.ctx), seq) as number;
  }

  dispose(): void {
    this.L.batchFree(this.batch);
    this.L.free(this.ctx);
    this.L.modelFree(this.model);
    this.L.koffi.unregister(this.cb as never);
  }
}

// ---------------------------------------------------------------- probe

async function ensure(name: string, dtype: SynthDtype, nLayers?: number): Promise<string> {
  const f = join(ROOT, 'bench/tmp', name);
  if (!existsSync(f)) {
    mkdirSync(dirname(f), { recursive: true });
    console.error(`writing ${f} ...`);
    await writeSyntheticGguf({ shape: 'smollm2-135m', dtype, seed: 1234, out: `${f}.tmp`, nLayers });
    renameSync(`${f}.tmp`, f);
  }
  return f;
}

function hiddenFor(dim: number, n: number, seed: number): Float32Array {
  const h = new Float32Array(n * dim);
  for (let i = 0; i < h.length; i++) h[i] = Math.sin((i + 1) * 0.7 + seed) * 0.5;
  return h;
}

function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(machineLine(machine));
  // koffi from the project's dependencies, else from a side install under bench/tmp/ffi
  // (`npm install --prefix bench/tmp/ffi koffi`) when the shared node_modules does not have it yet
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
  } catch {
    koffi = createRequire(join(ROOT, 'bench/tmp/ffi/package.json'))('koffi') as Koffi;
  }
  // the package exports no package.json: its binaries sit in node_modules next to node-llama-cpp
  const binDir = join(ROOT, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
  const L = bind(koffi, binDir);
  let t0 = performance.now();
  L.backendLoadAll(binDir);
  L.backendInit();
  const loadMs = performance.now() - t0;
  console.log(`libllama + ggml CPU backends loaded from ${binDir} in ${loadMs.toFixed(0)} ms`);
  const facts: Record<string, unknown> = { loadMs: Math.round(loadMs), binDir: binDir.replace(`${ROOT}/`, '') };

  // 1–3: a 10-layer f32 slice, hidden in, last layer out, against the reference engine
  const sliceFile = await ensure('smollm2-135m-l10-f32.gguf', 'f32', 10);
  const src = openModel(sliceFile);
  const c = src.config;
  const ref = await createStage('reference', src, { start: 0, end: c.nLayers, embed: false, head: false });
  const lr = new LlamaRange(L, sliceFile, { threads: THREADS, nCtx: 512, nSeq: 2, maxBatch: 128 });
  const P0 = 100; // a middle range continues at the caller's positions
  const pre = hiddenFor(c.dim, 8, 1);
  const rowsOf = (n: number, pos: number, seq: number) => Array.from({ length: n }, (_, i) => ({ pos: pos + i, seq }));
  // the reference engine starts its session at 0: give it 100 filler rows first, llama.cpp the same
  const filler = hiddenFor(c.dim, P0, 9);
  await ref.forward({ sessionId: 'a', pos: 0, nTokens: P0, hidden: filler });
  lr.forward(filler, rowsOf(P0, 0, 0));
  const yRef = (await ref.forward({ sessionId: 'a', pos: P0, nTokens: 8, hidden: pre })).hidden!;
  const yL = lr.forward(pre, rowsOf(8, P0, 0));
  const step = hiddenFor(c.dim, 1, 2);
  const dRef = (await ref.forward({ sessionId: 'a', pos: P0 + 8, nTokens: 1, hidden: step })).hidden!;
  const dL = lr.forward(step, rowsOf(1, P0 + 8, 0));
  facts.slice = {
    file: sliceFile.replace(`${ROOT}/`, ''),
    layers: lr.nLayers,
    dim: lr.dim,
    prefillRelL2VsReference: relL2(yL, yRef),
    decodeRelL2VsReference: relL2(dL, dRef),
    note: 'llama.cpp keeps the KV cache in F16 by default; the reference engine in f32',
  };
  console.log(`slice: ${lr.nLayers} layers; rel. L2 vs reference: prefill ${relL2(yL, yRef).toExponential(2)}, decode ${relL2(dL, dRef).toExponential(2)}`);

  // 4: sessions as sequences — seq 1 gets the same history as seq 0 had, then both decode in one batch
  lr.forward(filler, rowsOf(P0, 0, 1));
  lr.forward(pre, rowsOf(8, P0, 1));
  // seq 0 is at P0+9 now, seq 1 at P0+8: one batch with a row of each
  const step0 = hiddenFor(c.dim, 1, 3);
  const both = new Float32Array(2 * c.dim);
  both.set(step0, 0);
  both.set(step, c.dim);
  const yBoth = lr.forward(both, [
    { pos: P0 + 9, seq: 0 },
    { pos: P0 + 8, seq: 1 },
  ]);
  // seq 1's row must equal seq 0's earlier lone decode of the same input at the same position
  const seq1VsAlone = relL2(yBoth.subarray(c.dim), dL);
  const rRef0 = (await ref.forward({ sessionId: 'a', pos: P0 + 9, nTokens: 1, hidden: step0 })).hidden!;
  const seq0VsRef = relL2(yBoth.subarray(0, c.dim), rRef0);
  const rm = lr.seqRm(1);
  facts.sequences = {
    batchedRowVsAloneRelL2: seq1VsAlone,
    otherRowVsReferenceRelL2: seq0VsRef,
    seqRmFreed: rm,
    posMaxAfterRm: { seq0: lr.seqPosMax(0), seq1: lr.seqPosMax(1) },
  };
  console.log(
    `sequences: batched row vs same row alone rel. L2 ${seq1VsAlone.toExponential(2)}, other row vs reference ${seq0VsRef.toExponential(2)}; seq_rm(1) → ${rm}, pos max seq0 ${lr.seqPosMax(0)} seq1 ${lr.seqPosMax(1)}`,
  );
  lr.dispose();
  await ref.dispose();
  src.close();

  // 5: speed, 4-bit, decoder layers [0, 30), ORT q4 vs llama.cpp Q4_0 through the FFI, interleaved
  const q4File = await ensure('smollm2-135m-q4_0.gguf', 'q4_0');
  const q4src = openModel(q4File);
  const qc = q4src.config;
  t0 = performance.now();
  const ort = await createStage('ort', q4src, { start: 0, end: qc.nLayers, embed: false, head: false }, { threads: THREADS, weights: 'q4' });
  const ortLoadMs = performance.now() - t0;
  t0 = performance.now();
  const lq = new LlamaRange(L, q4File, { threads: THREADS, nCtx: 1024, nSeq: 1, maxBatch: 128, poll: POLL });
  const llamaLoadMs = performance.now() - t0;
  const PRE = 128;
  const pre128 = { ort: [] as number[], llama: [] as number[], llamaWithHead: [] as number[] };
  const dec = { ort: [] as number[], llama: [] as number[], llamaWithHead: [] as number[] };
  for (let r = -1; r < REPS; r++) {
    const h = hiddenFor(qc.dim, PRE, r);
    let t = performance.now();
    await ort.forward({ sessionId: `p${r}`, pos: 0, nTokens: PRE, hidden: h });
    if (r >= 0) pre128.ort.push(performance.now() - t);
    ort.closeSession(`p${r}`);
    lq.seqRm(0);
    t = performance.now();
    lq.forward(h, rowsOf(PRE, 0, 0));
    if (r >= 0) pre128.llama.push(performance.now() - t);
    lq.seqRm(0);
    lq.stopAfter = false;
    t = performance.now();
    lq.forward(h, rowsOf(PRE, 0, 0));
    if (r >= 0) pre128.llamaWithHead.push(performance.now() - t);
    lq.stopAfter = true;
  }
  // decode at context 128: both caches hold 128 rows, then one row per step
  lq.seqRm(0);
  const ctx128 = hiddenFor(qc.dim, PRE, 5);
  await ort.forward({ sessionId: 'd', pos: 0, nTokens: PRE, hidden: ctx128 });
  lq.forward(ctx128, rowsOf(PRE, 0, 0));
  for (let r = -2; r < REPS * 3; r++) {
    const h = hiddenFor(qc.dim, 1, r);
    let t = performance.now();
    await ort.forward({ sessionId: 'd', pos: PRE, nTokens: 1, hidden: h });
    if (r >= 0) dec.ort.push(performance.now() - t);
    lq.seqRm(0, PRE); // positions must continue the sequence: drop the previous step's row
    t = performance.now();
    lq.forward(h, rowsOf(1, PRE, 0));
    if (r >= 0) dec.llama.push(performance.now() - t);
    lq.stopAfter = false;
    lq.seqRm(0, PRE);
    t = performance.now();
    lq.forward(h, rowsOf(1, PRE, 0));
    if (r >= 0) dec.llamaWithHead.push(performance.now() - t);
    lq.stopAfter = true;
  }
  // same input at the same position: outputs agree within 4-bit kernel differences
  const oOut = (await ort.forward({ sessionId: 'd', pos: PRE, nTokens: 1, hidden: hiddenFor(qc.dim, 1, 77) })).hidden!;
  lq.seqRm(0, PRE);
  const lOut = lq.forward(hiddenFor(qc.dim, 1, 77), rowsOf(1, PRE, 0));
  ort.closeSession('d');
  lq.dispose();
  await ort.dispose();
  q4src.close();
  const s = {
    prefill128: { ort: stats(pre128.ort), llama: stats(pre128.llama), llamaWithHead: stats(pre128.llamaWithHead) },
    decode128: { ort: stats(dec.ort), llama: stats(dec.llama), llamaWithHead: stats(dec.llamaWithHead) },
  };
  const ratio = (a: { min: number; median: number }, b: { min: number; median: number }) => ({ best: a.min / b.min, median: a.median / b.median });
  facts.speed = {
    file: q4File.replace(`${ROOT}/`, ''),
    layers: qc.nLayers,
    threads: THREADS,
    threadpoolPoll: POLL ?? 'llama.cpp default',
    reps: REPS,
    loadMs: { ort: Math.round(ortLoadMs), llama: Math.round(llamaLoadMs) },
    ...s,
    ortOverLlama: { prefill128: ratio(s.prefill128.ort, s.prefill128.llama), decode128: ratio(s.decode128.ort, s.decode128.llama) },
    outputRelL2OrtVsLlama: relL2(oOut, lOut),
  };
  console.log(`4-bit, ${qc.nLayers} layers, ${THREADS} threads; ms, best (median):`);
  console.log(`  prefill ${PRE}: ort ${fmt(s.prefill128.ort)}  llama.cpp FFI ${fmt(s.prefill128.llama)}  (with output norm + LM head ${fmt(s.prefill128.llamaWithHead)})`);
  console.log(`  decode @${PRE}: ort ${fmt(s.decode128.ort, 2)}  llama.cpp FFI ${fmt(s.decode128.llama, 2)}  (with output norm + LM head ${fmt(s.decode128.llamaWithHead, 2)})`);
  console.log(`  output rel. L2, ort vs llama.cpp: ${relL2(oOut, lOut).toExponential(2)}`);
  writeResult(OUT, {
    what: 'llama.cpp (libllama of @node-llama-cpp/linux-x64 through koffi) as a layer-range engine: hidden in via batch.embd, last layer out via cb_eval, slice GGUF, sequences; 4-bit speed vs the ORT engine',
    machine,
    loadAvgAtEnd: describeMachine().loadAvg,
    ...facts,
  });
  console.log(`wrote ${OUT}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
