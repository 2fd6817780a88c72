// Time to first token for long prompts through the production Gateway: the prompt sent to the
// route as pipelined steps of PROMPT_CHUNK tokens (the default, route/chunked-steps.ts) vs as
// one step (promptChunk 0), two gateways over the same 3 `odsi node` processes on 127.0.0.1,
// accountability on, interleaved with their order turning each repetition.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/prompt.js [--model FILE] [--engine ort|reference]
//        [--lengths 64,256] [--reps 5] [--out FILE]
//
// Default model: the synthetic SmolLM2-135M f32 of bench/engine (bench/tmp), 10 layers a node.
// Reported per prompt length: median / p90 ms from the request to its first token (route open,
// the prompt through the 3 hops, the gateway's head and sampling).

import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { splitLayers } from '../src/engine/create.js';
import { writeSyntheticGguf } from '../src/model/synth.js';
import { NodeProcess } from '../src/node/process.js';
import { PROMPT_CHUNK } from '../src/route/resilient-route.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';
import { dist } from './lib/timeline.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    engine: { type: 'string', default: 'ort' },
    lengths: { type: 'string', default: '64,256' },
    reps: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
});
const ENGINE = args.engine as 'ort' | 'reference';
const LENGTHS = args.lengths!.split(',').map(Number);
const REPS = Number(args.reps);
const OUT = args.out ?? join(ROOT, 'bench/results/prompt.json');

async function defaultModel(): Promise<string> {
  const file = join(ROOT, 'bench/tmp/smollm2-135m-f32.gguf');
  if (!existsSync(file)) {
    mkdirSync(join(ROOT, 'bench/tmp'), { recursive: true });
    await writeSyntheticGguf({ shape: 'smollm2-135m', dtype: 'f32', seed: 1234, out: file });
  }
  return file;
}

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(machineLine(machine));
  const model = resolve(args.model ?? (await defaultModel()));
  const src = openModel(model);
  const c = src.config;
  const { modelId } = modelIdentity(src);
  src.close();
  const nodes: NodeProcess[] = [];
  const gateways: Gateway[] = [];
  try {
    nodes.push(
      ...(await Promise.all(
        splitLayers(c.nLayers, 3).map((range) => NodeProcess.start({ model, range, modelId, engine: ENGINE, announceIntervalMs: 600_000 })),
      )),
    );
    const start = (promptChunk?: number) =>
      Gateway.start({
        modelPath: model,
        engine: ENGINE,
        peers: nodes.map((n) => n.candidate(1)),
        accountability: { enabled: true, auditRate: 0 },
        promptChunk,
      });
    const ways = { chunked: await start(), oneStep: await start(0) };
    gateways.push(ways.chunked, ways.oneStep);
    const names = Object.keys(ways) as (keyof typeof ways)[];
    const prompt = (n: number, seed: number) => Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + seed * 104729) % (c.vocabSize - 1)));
    const ttft = async (gw: Gateway, ids: number[]) => {
      const t0 = performance.now();
      let first = NaN;
      await gw.run({ promptIds: ids, maxTokens: 1, sampling: { temperature: 0 }, onToken: () => void (first ||= performance.now() - t0) });
      return first;
    };
    // warm-up: links dialled, workers and caches warm, both ways
    for (const name of names) await ttft(ways[name], prompt(LENGTHS[0]!, 99));
    const got: Record<string, Record<string, number[]>> = {};
    for (const n of LENGTHS) {
      got[n] = { chunked: [], oneStep: [] };
      for (let r = 0; r < REPS; r++) {
        for (const name of r % 2 ? [...names].reverse() : names) got[n]![name]!.push(await ttft(ways[name], prompt(n, r)));
      }
      console.log(`prompt ${n}: first token ${names.map((w) => `${w} ${dist(got[n]![w]!).p50.toFixed(1)} ms`).join(', ')}`);
    }
    const rows = LENGTHS.map((n) => {
      const a = dist(got[n]!.chunked!);
      const b = dist(got[n]!.oneStep!);
      return { tokens: n, chunkedMs: a, oneStepMs: b, ratio: Math.round((a.p50 / b.p50) * 1000) / 1000 };
    });
    console.log(
      '\n' +
        table(
          ['prompt tokens', `chunks of ${PROMPT_CHUNK}, median / p90 ms`, 'one step, median / p90 ms', 'chunks ÷ one step'],
          rows.map((r) => [
            String(r.tokens),
            `${r.chunkedMs.p50} / ${r.chunkedMs.p90}`,
            `${r.oneStepMs.p50} / ${r.oneStepMs.p90}`,
            r.ratio.toFixed(2),
          ]),
        ),
    );
    writeResult(OUT, {
      what: `time to first token through the production Gateway (3 odsi node processes on 127.0.0.1, accountability on): the prompt as pipelined steps of ${PROMPT_CHUNK} tokens vs as one step, interleaved`,
      note: "the gateway and the three nodes share this machine's cores: the hops' overlap is bounded by them",
      machine,
      loadAvgAtEnd: describeMachine().loadAvg,
      options: { model, engine: ENGINE, lengths: LENGTHS, reps: REPS, promptChunk: PROMPT_CHUNK },
      rows,
      samples: got,
    });
    console.log(`wrote ${OUT}`);
  } finally {
    for (const g of gateways) await g.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  }
}

await main();
