// Bindings to llama.cpp's own C library (libllama / libggml of the prebuilt
// @node-llama-cpp/linux-x64 package) through koffi. Struct layouts are copied from
// include/llama.h and ggml.h of the same release (node-llama-cpp 3.22.1's bundle, tag v0.5.0);
// bench/results/llama-ffi-probe.md records how each was checked. Loaded lazily, once per
// process (the native libraries are process-wide anyway).

import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EngineError } from '../types.js';

type Ptr = unknown;
type CType = unknown;
type Fn = (...args: unknown[]) => unknown;

/** the part of koffi's API used here (typed locally: koffi's own typings are broader) */
export interface Koffi {
  load(path: string): { func(...a: unknown[]): Fn };
  proto(decl: string): CType;
  struct(name: string, members: Record<string, unknown>): CType;
  pointer(t: CType): CType;
  array(t: string, n: number): CType;
  register(fn: (...a: never[]) => unknown, t: CType): unknown;
  unregister(cb: unknown): void;
  decode(ref: unknown, type: CType, len?: number): unknown;
  view(ref: unknown, len: number): ArrayBuffer;
  call(fn: unknown, type: CType, ...args: unknown[]): unknown;
}

/** ggml_type values used for the KV cache */
export const GGML_TYPE_F32 = 0;
export const GGML_TYPE_F16 = 1;
/** llama_flash_attn_type */
export const FLASH_ATTN_AUTO = -1;
export const FLASH_ATTN_DISABLED = 0;

/** the directory holding libllama*.so / libggml*.so of the platform package, or undefined */
export function findLibDir(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return undefined;
  // the package exports no entry point: walk up to the node_modules that holds it
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 12; i++) {
    const cand = join(d, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
    if (existsSync(cand) && readdirSync(cand).some((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f))) return cand;
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  return undefined;
}

function libFile(dir: string, stem: string): string {
  const f = readdirSync(dir).find((n) => n === `${stem}.so` || new RegExp(`^${stem.replace('.', '\\.')}\\.v[\\d.]+\\.so$`).test(n));
  if (!f) throw new EngineError(`${stem}.so not found in ${dir}`, 'internal');
  return join(dir, f);
}

function bind(koffi: Koffi, dir: string) {
  const ggml = koffi.load(libFile(dir, 'libggml'));
  const base = koffi.load(libFile(dir, 'libggml-base'));
  const llama = koffi.load(libFile(dir, 'libllama'));
  const EvalCb = koffi.proto('bool odsi_ggml_eval_cb(void *t, bool ask, void *ud)');
  const LogCb = koffi.proto('void odsi_ggml_log_cb(int level, const char *text, void *ud)');
  const ModelParams = koffi.struct('odsi_llama_model_params', {
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
  const ContextParams = koffi.struct('odsi_llama_context_params', {
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
  const Batch = koffi.struct('odsi_llama_batch', {
    n_tokens: 'int32_t',
    token: 'void *',
    embd: 'void *',
    pos: 'void *',
    n_seq_id: 'void *',
    seq_id: 'void *',
    logits: 'void *',
  });
  const logSet = llama.func('void llama_log_set(odsi_ggml_log_cb *cb, void *ud)');
  return {
    koffi,
    EvalCb,
    LogCb,
    logSet,
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
    nCtx: llama.func('uint32_t llama_n_ctx(void *ctx)'),
    batchInit: llama.func('llama_batch_init', Batch, ['int32_t', 'int32_t', 'int32_t']),
    batchFree: llama.func('llama_batch_free', 'void', [Batch]),
    decode: llama.func('llama_decode', 'int32_t', ['void *', Batch]),
    logitsIth: llama.func('float *llama_get_logits_ith(void *ctx, int32_t i)'),
    getMemory: llama.func('void *llama_get_memory(void *ctx)'),
    memorySeqRm: llama.func('bool llama_memory_seq_rm(void *mem, int32_t seq, int32_t p0, int32_t p1)'),
    memorySeqPosMax: llama.func('int32_t llama_memory_seq_pos_max(void *mem, int32_t seq)'),
    tensorName: base.func('const char *ggml_get_name(void *t)'),
    tensorNelements: base.func('int64_t ggml_nelements(void *t)'),
    tensorGet: base.func('void ggml_backend_tensor_get(void *t, float *data, size_t offset, size_t size)'),
  };
}
export type LlamaLib = ReturnType<typeof bind> & { dir: string; loadMs: number };

// The one exception to "no module-level state": dlopen'd libraries and ggml's backend registry
// are process-wide (per thread: the bound functions), so loading them twice would register the
// CPU backends twice.
let loaded: LlamaLib | undefined;

/**
 * libllama with its CPU backends, loaded once per thread. The main thread loads first: it
 * registers ggml's backends (process-wide) and the log filter, whose callback lives as long as
 * the process; a stage's worker thread (worker: true) then only binds the functions.
 * Throws EngineError('bad_input') when koffi or the platform package is absent.
 */
export function loadLlamaLib(o: { libDir?: string; worker?: boolean } = {}): LlamaLib {
  if (loaded) return loaded;
  const dir = o.libDir ?? findLibDir();
  if (!dir) {
    throw new EngineError(
      `the llama engine needs llama.cpp's prebuilt library from @node-llama-cpp/linux-x64 (linux x64 only; ${process.platform} ${process.arch} here, or the package is not installed)`,
      'bad_input',
    );
  }
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
  } catch (e) {
    throw new EngineError(`the llama engine needs the koffi package: ${(e as Error).message}`, 'bad_input');
  }
  const t0 = performance.now();
  const L = bind(koffi, dir);
  if (!o.worker) {
    // llama.cpp logs every load step (and warnings such as a slice's training context) to
    // stderr: keep errors only. Calls from workers' threads are relayed to this thread.
    const quiet = koffi.register((level: number, text: string) => {
      if (level === 4) process.stderr.write(`llama.cpp: ${text}`);
    }, koffi.pointer(L.LogCb));
    L.logSet(quiet, null);
    L.backendLoadAll(dir);
    L.backendInit();
  }
  loaded = Object.assign(L, { dir, loadMs: performance.now() - t0 });
  return loaded;
}

export type { Ptr };
