// odsi vs llama.cpp on the same GGUF file: greedy continuations of the golden prompts, with
// stories260K converted (by odsi's own convertModel) to each storage precision.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { convertModel } from '../../src/model/convert.js';
import { openModel } from '../../src/model/load.js';
import { buildLocalPipeline, disposePipeline } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { llamaGreedy, loadLlamaModel } from './llama.js';

export type Precision = 'f32' | 'f16' | 'q8_0' | 'q4_0';
export const PRECISIONS: Precision[] = ['f32', 'f16', 'q8_0', 'q4_0'];

export interface CaseResult {
  prompt: string;
  odsi: number[];
  llamacpp: number[];
  /** index of the first differing token, or null when all `n` agree */
  firstDivergence: number | null;
}

export interface PrecisionResult {
  precision: Precision;
  file: string;
  bytes: number;
  cases: CaseResult[];
  /** smallest first-divergence index over the prompts (n when none diverged) */
  firstDivergence: number;
  /** golden prompts for which llama.cpp's continuation equals golden.json (llama2.c, f32) */
  llamacppMatchesGolden: number;
}

export function firstDivergence(a: number[], b: number[]): number | null {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return null;
}

/** The model file at a precision: the original for f32, else converted into `dir` (reused if present). */
export async function modelAt(precision: Precision, dir: string): Promise<string> {
  if (precision === 'f32') return STORIES_GGUF;
  const out = join(dir, `stories260K-${precision}.gguf`);
  if (!existsSync(out)) await convertModel(STORIES_GGUF, { dtype: precision, out });
  return out;
}

/** odsi's reference engine, one stage, greedy, no stop tokens (llama.cpp yields EOS too). */
export async function odsiGreedy(file: string, promptIds: number[], n: number): Promise<number[]> {
  const src = openModel(file);
  const pipeline = await buildLocalPipeline('reference', src, 1);
  try {
    const tok = { stopIds: [], createStreamDecoder: () => ({ push: () => '', flush: () => '' }) };
    const r = await generate(pipeline, tok, promptIds, { maxTokens: n, sampling: { temperature: 0 } });
    return r.tokens;
  } finally {
    await disposePipeline(pipeline);
    src.close();
  }
}

/** Golden prompts first (checked against golden.json too), then any `extra` prompts. */
/** odsi's logits for the next token after `ids` (reference engine, one stage). */
export async function odsiNextLogits(file: string, ids: number[]): Promise<Float32Array> {
  const src = openModel(file);
  const pipeline = await buildLocalPipeline('reference', src, 1);
  try {
    const tok = { stopIds: [], createStreamDecoder: () => ({ push: () => '', flush: () => '' }) };
    const r = await generate(pipeline, tok, ids, { maxTokens: 1, sampling: { temperature: 0 }, returnPromptLogits: true });
    return r.promptLogits!;
  } finally {
    await disposePipeline(pipeline);
    src.close();
  }
}

export async function comparePrecision(
  precision: Precision,
  dir: string,
  n = 60,
  extra: { prompt: string; ids: number[] }[] = [],
): Promise<PrecisionResult> {
  const file = await modelAt(precision, dir);
  const model = await loadLlamaModel(file);
  const golden = loadGolden();
  const prompts: { prompt: string; ids: number[]; expect?: number[] }[] = [
    ...golden.map((g) => ({ prompt: g.prompt, ids: g.prompt_tokens, expect: g.generated_tokens })),
    ...extra,
  ];
  const cases: CaseResult[] = [];
  let matchesGolden = 0;
  try {
    for (const c of prompts) {
      const llamacpp = await llamaGreedy(model, c.ids, n);
      const odsi = await odsiGreedy(file, c.ids, n);
      cases.push({ prompt: c.prompt, odsi, llamacpp, firstDivergence: firstDivergence(odsi, llamacpp) });
      if (c.expect && firstDivergence(llamacpp, c.expect.slice(0, n)) === null) matchesGolden++;
    }
  } finally {
    await model.dispose();
  }
  const { size } = await import('node:fs/promises').then((fs) => fs.stat(file));
  return {
    precision,
    file,
    bytes: size,
    cases,
    firstDivergence: Math.min(...cases.map((c) => c.firstDivergence ?? n)),
    llamacppMatchesGolden: matchesGolden,
  };
}
