// The GGUF file llama.cpp loads for one stage: only the range's decoder layers, renumbered
// from 0, with token_embd and output_norm (llama.cpp's loader requires both) and the LM head
// when the stage applies it. Tensors are copied as stored (quantized blocks stay as they are:
// no requantization), and the metadata is the source's with block_count set to the range.

import { GgufFile } from '../../model/gguf.js';
import { kv, metadataFromHeader, writeGguf, type GgufTensorSpec } from '../../model/gguf-writer.js';
import { layerTensorNames, tensorNames as tn, type WeightSource } from '../../model/types.js';
import { EngineError, type StageRange } from '../types.js';

/** Writes the slice to `out`; returns the layer tensors' stored types (for the profile). */
export async function writeRangeSlice(src: WeightSource, range: StageRange, out: string, onProgress?: (bytes: number) => void): Promise<Set<number>> {
  if (src.format !== 'gguf' || !src.path) throw new EngineError('the llama engine needs a GGUF model file (convert a Hugging Face directory with `odsi model convert`)', 'bad_input');
  const own = !(src instanceof GgufFile);
  const g = src instanceof GgufFile ? src : new GgufFile(src.path);
  try {
    const h = g.header;
    const arch = String(h.metadata.get('general.architecture') ?? '');
    if (arch !== 'llama') throw new EngineError(`the llama engine runs architecture 'llama' (this file is '${arch}')`, 'bad_input');
    const blockKey = `${arch}.block_count`;
    const md = metadataFromHeader(h, (k) => k === blockKey);
    md.push(kv.u32(blockKey, range.end - range.start));
    const tensors: GgufTensorSpec[] = [];
    const types = new Set<number>();
    const copy = (name: string, as = name) => {
      const info = g.info(name);
      tensors.push({
        name: as,
        shape: info.shape,
        type: info.type,
        data: () => {
          onProgress?.(info.byteLength);
          return g.readRawChunks(name);
        },
      });
    };
    for (const name of g.tensorNames()) {
      // per-model tensors other than the head (token_embd, output_norm, rope_freqs, ...)
      if (!name.startsWith('blk.') && name !== tn.output) copy(name);
    }
    if (range.head && g.has(tn.output)) copy(tn.output);
    for (let l = range.start; l < range.end; l++) {
      for (const name of layerTensorNames(l)) {
        copy(name, name.replace(`blk.${l}.`, `blk.${l - range.start}.`));
        if (!name.endsWith('norm.weight')) types.add(g.info(name).type);
      }
    }
    await writeGguf(out, md, tensors, { alignment: h.alignment });
    return types;
  } finally {
    if (own) g.close();
  }
}
