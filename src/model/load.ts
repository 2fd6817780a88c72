// One entry point for model files: a GGUF file or a Hugging Face directory (config.json +
// safetensors). Opening parses headers only and checks that every tensor the config needs is
// present with the right shape and a type we can decode, so errors surface at open time with a
// clear message rather than mid-inference.

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GgufFile } from './gguf.js';
import { openHfModel } from './hf.js';
import { canDequantize, typeName } from './quant.js';
import { ROPE_FREQS } from './rope.js';
import { ModelFormatError, tensorNames as T, type ModelConfig, type WeightSource } from './types.js';

export interface OpenOptions {
  /** skip the tensor presence/shape check (e.g. a file holding only some layers) */
  skipCheck?: boolean;
}

/** Open a GGUF file or a HF model directory for lazy reads. */
export function openModel(path: string, opts: OpenOptions = {}): WeightSource {
  if (!existsSync(path)) throw new ModelFormatError('no such file or directory', path);
  const st = statSync(path);
  let src: WeightSource;
  if (st.isDirectory()) {
    if (!existsSync(join(path, 'config.json'))) {
      throw new ModelFormatError('directory has no config.json (expected a Hugging Face model directory or a .gguf file)', path);
    }
    src = openHfModel(path);
  } else if (path.endsWith('.safetensors') || path.endsWith('.json')) {
    throw new ModelFormatError('pass the Hugging Face model directory (with config.json), not a file inside it', path);
  } else {
    src = new GgufFile(path);
  }
  if (!opts.skipCheck) {
    try {
      checkTensors(src);
    } catch (e) {
      src.close();
      throw e;
    }
  }
  return src;
}

/** Tensor shapes (row-major) a Llama config implies, by canonical name. */
export function expectedShapes(
  c: ModelConfig,
  range: { start: number; end: number; embed: boolean; head: boolean },
): Map<string, number[]> {
  const m = new Map<string, number[]>();
  if (range.embed || (range.head && c.tiedEmbeddings)) m.set(T.embed, [c.vocabSize, c.dim]);
  const q = c.nHeads * c.headDim;
  const kvd = c.nKvHeads * c.headDim;
  for (let l = range.start; l < range.end; l++) {
    m.set(T.attnNorm(l), [c.dim]);
    m.set(T.q(l), [q, c.dim]);
    m.set(T.k(l), [kvd, c.dim]);
    m.set(T.v(l), [kvd, c.dim]);
    m.set(T.o(l), [c.dim, q]);
    m.set(T.ffnNorm(l), [c.dim]);
    m.set(T.gate(l), [c.ffnDim, c.dim]);
    m.set(T.up(l), [c.ffnDim, c.dim]);
    m.set(T.down(l), [c.dim, c.ffnDim]);
  }
  if (range.head) {
    m.set(T.outputNorm, [c.dim]);
    if (!c.tiedEmbeddings) m.set(T.output, [c.vocabSize, c.dim]);
  }
  return m;
}

/**
 * Check that the tensors needed for layers [start,end) (plus embedding/head when asked; default:
 * the whole model) exist, have the shapes the config implies, and a type we can decode.
 */
export function checkTensors(src: WeightSource, range?: { start: number; end: number; embed?: boolean; head?: boolean }): void {
  const c = src.config;
  const r = range
    ? { start: range.start, end: range.end, embed: range.embed ?? false, head: range.head ?? false }
    : { start: 0, end: c.nLayers, embed: true, head: true };
  if (r.start < 0 || r.end > c.nLayers || r.start > r.end) {
    throw new ModelFormatError(`layer range [${r.start},${r.end}) outside the model's ${c.nLayers} layers`, src.path);
  }
  const want = expectedShapes(c, r);
  if (src.has(ROPE_FREQS)) want.set(ROPE_FREQS, [c.headDim / 2]);
  const missing: string[] = [];
  for (const [name, shape] of want) {
    if (!src.has(name)) {
      missing.push(name);
      continue;
    }
    const info = src.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(
        `inconsistent shapes: tensor ${name} is [${info.shape.join(', ')}], the config implies [${shape.join(', ')}]`,
        src.path,
      );
    }
    if (!canDequantize(info.type)) throw new ModelFormatError(`tensor ${name} has unsupported type ${typeName(info.type)}`, src.path);
  }
  if (missing.length) {
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    throw new ModelFormatError(`missing tensor${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).join(', ')}${more}`, src.path);
  }
}
