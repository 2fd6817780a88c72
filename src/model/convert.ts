// Convert a model (GGUF or HF directory) to a GGUF file of another storage type, tensor by
// tensor. Rules follow llama.cpp: 1-D tensors (norms, rope_freqs) stay F32; a tensor whose row
// length is not a multiple of the 32-value block stays F16 when a block type was asked for.
// All metadata (including the tokenizer) is kept; general.file_type is updated.

import { GgufFile } from './gguf.js';
import { kv, metadataFromHeader, writeGguf, type GgufKV, type GgufTensorSpec } from './gguf-writer.js';
import { openModel } from './load.js';
import { byteSize } from './quant.js';
import { DTYPE_TYPES, quantize, storedTypeFor, type TargetDtype } from './quantize.js';
import { llamaGgufMetadata, progressFor } from './synth.js';
import { ModelFormatError } from './types.js';

const FILE_TYPE: Record<TargetDtype, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

export interface ConvertOptions {
  dtype: TargetDtype;
  out: string;
  progress?: boolean;
}

export async function convertModel(inPath: string, opts: ConvertOptions): Promise<{ tensors: number; bytes: number }> {
  const want = DTYPE_TYPES[opts.dtype];
  if (want === undefined) throw new ModelFormatError(`unsupported target dtype '${opts.dtype}' (use f32, f16, bf16, q8_0 or q4_0)`);
  const src = openModel(inPath);
  try {
    let md: GgufKV[];
    if (src instanceof GgufFile) {
      md = metadataFromHeader(src.header, (k) => k === 'general.file_type');
      md.push(kv.u32('general.file_type', FILE_TYPE[opts.dtype]));
    } else {
      md = llamaGgufMetadata(src.config, FILE_TYPE[opts.dtype], src.tokenizer);
      md.push(kv.str('general.source.format', src.format));
    }
    const specs: GgufTensorSpec[] = src.tensorNames().map((name) => {
      const info = src.info(name);
      const type = storedTypeFor(want, info.shape);
      const data =
        type === info.type
          ? () => (src.readRawChunks ? src.readRawChunks(name) : src.readRaw(name))
          : () => quantize(type, src.readF32(name));
      return { name, shape: info.shape, type, data };
    });
    const total = specs.reduce(
      (a, s) =>
        a +
        byteSize(
          s.type,
          s.shape.reduce((x, y) => x * y, 1),
        ),
      0,
    );
    const progress = progressFor(total, `convert → ${opts.dtype}`, opts.progress);
    try {
      await writeGguf(opts.out, md, specs, { onProgress: progress });
    } finally {
      progress.stop();
    }
    return { tensors: specs.length, bytes: total };
  } finally {
    src.close();
  }
}
