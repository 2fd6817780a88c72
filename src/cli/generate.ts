// `odsi generate`: run a whole model locally as k in-process stages and generate text.
// Streams text to stdout (stats to stderr), or prints one JSON object with --json.

import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Option, type Command } from 'commander';
import { integerOption, numberOption } from './numbers.js';
import { engineOption } from './config.js';
import { rangeBytes } from '../model/reads.js';
import { loadProgress } from '../util/progress.js';
import { openModel } from '../model/load.js';
import type { WeightSource } from '../model/types.js';
import { createTokenizer } from '../tokenizer/index.js';
import { buildLocalPipeline, disposePipeline, splitLayers, type EngineKind } from '../engine/create.js';
import { generate } from '../engine/generate.js';
import type { SamplingParams } from '../engine/sampling.js';

interface GenerateCliOptions {
  model: string;
  prompt: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repeatPenalty: number;
  repeatLastN: number;
  seed?: number;
  stop: string[];
  engine: EngineKind;
  weights: 'f32' | 'q8' | 'q4';
  stages: number;
  threads?: number;
  json?: boolean;
}

/** Opens a model (GGUF file or HF directory) with a short message when the path is wrong. */
function openSource(path: string): WeightSource {
  if (!existsSync(path)) throw new Error(`model not found: ${path}`);
  return openModel(path);
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('generate text with a local model split into in-process stages')
    .requiredOption('-m, --model <path>', 'model file (GGUF) or Hugging Face directory')
    .requiredOption('-p, --prompt <text>', 'prompt text')
    .option('-n, --max-tokens <n>', 'maximum number of new tokens', integerOption('--max-tokens', { min: 0 }), 128)
    .option(
      '--temperature <t>',
      'sampling temperature (0 = greedy)',
      numberOption('--temperature', { min: 0 }),
      0.8,
    )
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', integerOption('--top-k', { min: 0 }), 40)
    .option(
      '--top-p <p>',
      'nucleus sampling mass (1 = off)',
      numberOption('--top-p', { min: 0, max: 1, aboveMin: true }),
      0.95,
    )
    .option(
      '--repeat-penalty <r>',
      'repetition penalty (1 = off)',
      numberOption('--repeat-penalty', { min: 0, aboveMin: true }),
      1,
    )
    .option('--repeat-last-n <n>', 'tokens the repetition penalty looks back over (-1 = all)', integerOption('--repeat-last-n', { min: -1 }), 64)
    .option('--seed <s>', 'sampling seed (default: random, printed in the stats)', integerOption('--seed', { min: 0 }))
    .option('--stop <s...>', 'stop strings (not included in the output)', [])
    .addOption(engineOption('every stage'))
    .addOption(new Option('--weights <w>', 'ORT weight precision').choices(['f32', 'q8', 'q4']).default('f32'))
    .option('--stages <k>', 'split the layers into k in-process stages', integerOption('--stages', { min: 1 }), 1)
    .option('--threads <n>', 'engine threads (ORT intra-op, llama.cpp)', integerOption('--threads', { min: 1 }))
    .option('--json', 'print one JSON object instead of streaming text')
    .action(async (o: GenerateCliOptions) => runGenerate(o));
}

async function runGenerate(o: GenerateCliOptions): Promise<void> {
  const tLoad = performance.now();
  const src = openSource(o.model);
  try {
    if (!src.tokenizer) throw new Error(`${o.model}: the model carries no tokenizer`);
    splitLayers(src.config.nLayers, o.stages); // a clear --stages error before loading anything
    const tokenizer = createTokenizer(src.tokenizer);
    const bar = loadProgress('loading', rangeBytes(src, 0, src.config.nLayers, true, true), !o.json && process.stderr.isTTY === true);
    const pipeline = await buildLocalPipeline(o.engine, src, o.stages, { weights: o.engine === 'llama' ? undefined : o.weights /* llama runs weights as stored */, threads: o.threads, onProgress: bar.add }).finally(bar.stop);
    const loadMs = performance.now() - tLoad;
    const promptIds = tokenizer.encode(o.prompt);
    const sampling: SamplingParams = {
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      repetitionPenalty: o.repeatPenalty,
      repeatLastN: o.repeatLastN,
      seed: o.seed,
    };
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once('SIGINT', onSigint);
    let streamed = 0;
    try {
      const r = await generate(pipeline, tokenizer, promptIds, {
        maxTokens: o.maxTokens,
        sampling,
        stop: o.stop,
        signal: ac.signal,
        onToken: o.json
          ? undefined
          : (t) => {
              streamed += t.text.length;
              process.stdout.write(t.text);
            },
      });
      const stages = r.stages.map((s) => ({
        start: s.start,
        end: s.end,
        embed: s.embed,
        head: s.head,
        profile: s.profile,
        prefill_ms: round(s.prefillMs),
        compute_ms_per_token: round(s.decodeMsPerToken),
      }));
      if (o.json) {
        const out = {
          text: r.text,
          prompt_tokens: promptIds,
          tokens: r.tokens,
          finish_reason: r.finishReason,
          seed: r.seed,
          engine: o.engine,
          timings: {
            load_ms: round(loadMs),
            prefill_ms: round(r.timings.prefillMs),
            decode_ms_per_token: round(r.timings.msPerToken),
            tokens_per_s: round(r.timings.tokensPerS),
          },
          stages,
        };
        process.stdout.write(JSON.stringify(out) + '\n');
      } else {
        // onToken saw all text but the tail released at the end (decoder flush, held-back text)
        process.stdout.write(r.text.slice(streamed) + '\n');
        const t = r.timings;
        process.stderr.write(
          `\n[odsi] ${r.tokens.length} tokens, finish: ${r.finishReason}, seed ${r.seed}; load ${round(loadMs)} ms, ` +
            `prompt ${promptIds.length} tokens in ${round(t.prefillMs)} ms, decode ${round(t.msPerToken)} ms/token ` +
            `(${round(t.tokensPerS)} tokens/s)\n` +
            stages
              .map(
                (s) =>
                  `[odsi]   stage [${s.start},${s.end})${s.embed ? ' +embed' : ''}${s.head ? ' +head' : ''} ${s.profile}: ${s.compute_ms_per_token} ms/token`,
              )
              .join('\n') +
            '\n',
        );
      }
    } finally {
      process.removeListener('SIGINT', onSigint);
      await disposePipeline(pipeline);
    }
  } finally {
    src.close();
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
