// odsi's engines (ort; odsi-llama = the llama engine, llama.cpp's libllama as a layer-range
// stage) versus llama.cpp itself (node-llama-cpp, CPU prebuilt) on synthetic models of real shapes.
//
//   node dist/bench/engine.js [--shapes smollm2-135m,llama-3.2-1b] [--weights f32,q4] [--threads 2]
//                             [--engines ort,odsi-llama,llama] [--reps N] [--quick]
//                             [--attention auto|gqa|std] [--spin] [--batch 16] [--batch-ctx 64,1024]
//                             [--kv-budget-mb N] [--out FILE]
//
// What is compared: decoder layers only, in every engine. ORT and odsi-llama run one stage over
// all layers (no embedding, no head: exactly what a node serving the whole range computes; the
// llama stage stops llama.cpp's graph after the last layer); llama.cpp runs
// the whole model with evaluateWithoutGeneratingNewTokens, which requests no logits, so its
// output rows (final norm + LM head) are empty and its embedding is a row lookup. Same GGUF
// file, same thread count, runs interleaved (ORT step, llama.cpp step, ...). Figures are
// best-of-N with the median beside it: the machine is shared.
//
// Decode: ms for one token appended at context 128 / 1024. Prefill: ms for 128 tokens from an
// empty cache, as a route's last stage computes a prompt: only the last row comes out
// (StageInput.lastRow; llama.cpp's own run asks for no output row at all). Bound: bytes a decode step must read (weights as the engine stores them + the
// fp32 KV cache) ÷ the read bandwidth measured here on the same thread count.

import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { openModel } from '../src/model/load.js';
import { SHAPES, writeSyntheticGguf } from '../src/model/synth.js';
import type { ModelConfig } from '../src/model/types.js';
import { createOrtStage, type OrtStage } from '../src/engine/ort/index.js';
import { createLlamaStage, type LlamaStage } from '../src/engine/llama/index.js';
import { measureReadBandwidth } from './lib/bandwidth.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';
import { fmt, stats, type Stats } from './lib/stats.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

const { values: args } = parseArgs({
  options: {
    shapes: { type: 'string', default: 'smollm2-135m,llama-3.2-1b' },
    weights: { type: 'string', default: 'f32,q4' },
    threads: { type: 'string' },
    reps: { type: 'string' },
    ctx: { type: 'string', default: '128,1024' },
    quick: { type: 'boolean', default: false },
    attention: { type: 'string', default: 'auto' },
    spin: { type: 'boolean', default: false },
    batch: { type: 'string', default: '16' },
    'batch-ctx': { type: 'string', default: '64' },
    /** the ORT stage's KV budget, as a node gives it (a fifth bounds the batch's lanes); default none */
    'kv-budget-mb': { type: 'string' },
    engines: { type: 'string', default: 'ort,odsi-llama,llama' },
    out: { type: 'string' },
  },
});

const quick = args.quick!;
const shapes = (quick && args.shapes === 'smollm2-135m,llama-3.2-1b' ? 'smollm2-135m' : args.shapes!).split(',');
const weightsList = args.weights!.split(',') as ('f32' | 'q4')[];
const threads = Number(args.threads ?? 2);
const reps = Number(args.reps ?? (quick ? 3 : 7));
const ctxs = (quick ? '128' : args.ctx!).split(',').map(Number);
const engines = args.engines!.split(',');
const PREFILL = 128;
/** continuous batching: this many sessions (--batch-ctx cached positions each) decode one token each */
const BATCH = Number(args.batch);
const batchCtxs = args['batch-ctx']!.split(',').map(Number);
const outFile = args.out ?? resolve(ROOT, quick ? 'bench/results/engine-quick.json' : 'bench/results/engine.json');

interface Row {
  shape: string;
  weights: string;
  threads: number;
  attention?: string;
  decode: Record<string, { ort?: Stats; odsiLlama?: Stats; llama?: Stats; boundMs: number }>;
  /** odsiLlamaAllRows: the same prefill with every row out (a stage that is not the last), for what lastRow saves */
  prefill128: { ort?: Stats; odsiLlama?: Stats; odsiLlamaAllRows?: Stats; llama?: Stats };
  ortLoad?: { buildMs: number; createMs: number; rssBeforeMiB: number; rssAfterMiB: number };
  odsiLlamaLoad?: { sliceMs: number; createMs: number; kvType: string };
  /** ms for BATCH sessions' decode steps: one forwardBatch vs BATCH forward calls in turn; keyed
   *  by engine (context 64) or engine@context */
  batchDecode?: Record<string, { batched: Stats; oneByOne: Stats; speedup: number }>;
  weightBytes: { ort: number; llama: number };
}

function decoderParams(c: ModelConfig): number {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  return c.nLayers * (c.dim * (q + 2 * kv) + q * c.dim + 3 * c.dim * c.ffnDim);
}
const kvBytesPerPos = (c: ModelConfig) => 2 * c.nLayers * c.nKvHeads * c.headDim * 4;
const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);

async function ensureModel(shape: string, dtype: 'f32' | 'q4_0'): Promise<string> {
  const dir = resolve(ROOT, 'bench/tmp');
  mkdirSync(dir, { recursive: true });
  const f = resolve(dir, `${shape}-${dtype}.gguf`);
  if (!existsSync(f)) {
    console.error(`writing ${f} ...`);
    await writeSyntheticGguf({ shape, dtype, seed: 1234, out: f });
  }
  return f;
}

/** deterministic hidden states of a plausible scale */
function hiddenFor(c: ModelConfig, n: number, seed: number): Float32Array {
  const h = new Float32Array(n * c.dim);
  for (let i = 0; i < h.length; i++) h[i] = Math.sin((i + 1) * 0.7 + seed) * 0.5;
  return h;
}

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(machineLine(machine));
  const bw = await measureReadBandwidth(threads);
  console.log(`read bandwidth (ORT ReduceSum, ${threads} threads): ${bw.gbPerS.toFixed(1)} GB/s`);

  type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;
  let llama: Llama | undefined;
  if (engines.includes('llama')) {
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  }

  const rows: Row[] = [];
  for (const shape of shapes) {
    if (!SHAPES[shape]) throw new Error(`unknown shape ${shape}`);
    for (const w of weightsList) {
      const file = await ensureModel(shape, w === 'q4' ? 'q4_0' : 'f32');
      const src = openModel(file);
      const c = src.config;
      const np = decoderParams(c);
      const row: Row = {
        shape,
        weights: w,
        threads,
        decode: {},
        prefill128: {},
        weightBytes: { ort: w === 'q4' ? np * (0.5 + 4 / 32) : np * 4, llama: w === 'q4' ? np * (18 / 32) : np * 4 },
      };
      console.log(`\n== ${shape} ${w}, ${threads} threads (${(np / 1e6).toFixed(0)} M decoder params) ==`);

      let ort: OrtStage | undefined;
      if (engines.includes('ort')) {
        global.gc?.();
        const before = rssMiB();
        ort = await createOrtStage(
          src,
          { start: 0, end: c.nLayers, embed: false, head: false },
          {
            threads,
            weights: w,
            maxContext: 2048,
            attention: args.attention as 'auto',
            allowSpinning: args.spin,
            kvBudgetBytes: args['kv-budget-mb'] === undefined ? undefined : Number(args['kv-budget-mb']) * 2 ** 20,
          },
        );
        global.gc?.();
        row.attention = ort.attention;
        row.ortLoad = {
          buildMs: Math.round(ort.loadInfo.buildMs),
          createMs: Math.round(ort.loadInfo.createMs),
          rssBeforeMiB: before,
          rssAfterMiB: rssMiB(),
        };
        console.log(
          `ort: ${ort.attention} attention, build ${row.ortLoad.buildMs} ms, session ${row.ortLoad.createMs} ms, RSS ${before} → ${row.ortLoad.rssAfterMiB} MiB`,
        );
      }
      let ol: LlamaStage | undefined;
      if (engines.includes('odsi-llama')) {
        ol = await createLlamaStage(
          src,
          { start: 0, end: c.nLayers, embed: false, head: false },
          { threads, maxSessions: BATCH, kvCells: Math.max(2048, BATCH * (Math.max(...batchCtxs) + 2 * reps + 8)) },
        );
        row.odsiLlamaLoad = {
          sliceMs: Math.round(ol.loadInfo.sliceMs),
          createMs: Math.round(ol.loadInfo.createMs),
          kvType: ol.loadInfo.kvType,
        };
        console.log(
          `odsi-llama: ${ol.profile}, slice ${row.odsiLlamaLoad.sliceMs} ms, context ${row.odsiLlamaLoad.createMs} ms, KV ${ol.loadInfo.kvType}`,
        );
      }
      let seq: import('node-llama-cpp').LlamaContextSequence | undefined;
      let lctx: import('node-llama-cpp').LlamaContext | undefined;
      let lmodel: import('node-llama-cpp').LlamaModel | undefined;
      if (llama) {
        lmodel = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
        lctx = await lmodel.createContext({ contextSize: 2048, threads, batchSize: 512, sequences: 1 });
        seq = lctx.getSequence();
      }
      const toks = (n: number, seed: number) => Array.from({ length: n }, (_, i) => ((i + 1) * 7919 + seed * 104729) % c.vocabSize);

      // prefill: 128 tokens into an empty cache
      const pre = { ort: [] as number[], odsiLlama: [] as number[], odsiLlamaAllRows: [] as number[], llama: [] as number[] };
      for (let r = -1; r < reps; r++) {
        if (ort) {
          const h = hiddenFor(c, PREFILL, r);
          const t0 = performance.now();
          await ort.forward({ sessionId: `p${r}`, pos: 0, nTokens: PREFILL, hidden: h, lastRow: true });
          if (r >= 0) pre.ort.push(performance.now() - t0);
          ort.closeSession(`p${r}`);
        }
        if (ol) {
          // last row out (as a route's last stage runs a prompt) and every row out, which goes
          // first turning each repetition
          for (const lastRow of r % 2 ? [false, true] : [true, false]) {
            const sid = `${lastRow ? 'p' : 'a'}${r}`;
            const h = hiddenFor(c, PREFILL, r);
            const t0 = performance.now();
            await ol.forward({ sessionId: sid, pos: 0, nTokens: PREFILL, hidden: h, lastRow });
            if (r >= 0) (lastRow ? pre.odsiLlama : pre.odsiLlamaAllRows).push(performance.now() - t0);
            ol.closeSession(sid);
          }
        }
        if (seq) {
          await seq.clearHistory();
          const t = toks(PREFILL, r + 2) as import('node-llama-cpp').Token[];
          const t0 = performance.now();
          await seq.evaluateWithoutGeneratingNewTokens(t);
          if (r >= 0) pre.llama.push(performance.now() - t0);
        }
      }
      row.prefill128 = {
        ort: ort ? stats(pre.ort) : undefined,
        odsiLlama: ol ? stats(pre.odsiLlama) : undefined,
        odsiLlamaAllRows: ol ? stats(pre.odsiLlamaAllRows) : undefined,
        llama: seq ? stats(pre.llama) : undefined,
      };
      console.log(
        `prefill ${PREFILL}: ort ${fmt(row.prefill128.ort)}  odsi-llama ${fmt(row.prefill128.odsiLlama)} (every row out: ${fmt(row.prefill128.odsiLlamaAllRows)})  llama.cpp ${fmt(row.prefill128.llama)} ms`,
      );

      for (const ctx of ctxs) {
        const d = { ort: [] as number[], odsiLlama: [] as number[], llama: [] as number[] };
        if (ort) {
          for (let p = 0; p < ctx; p += 256) {
            const n = Math.min(256, ctx - p);
            await ort.forward({ sessionId: 'd', pos: p, nTokens: n, hidden: hiddenFor(c, n, p) });
          }
        }
        if (ol) {
          for (let p = 0; p < ctx; p += 256) {
            const n = Math.min(256, ctx - p);
            await ol.forward({ sessionId: 'd', pos: p, nTokens: n, hidden: hiddenFor(c, n, p) });
          }
        }
        if (seq) {
          await seq.clearHistory();
          await seq.evaluateWithoutGeneratingNewTokens(toks(ctx, 3) as import('node-llama-cpp').Token[]);
        }
        for (let r = -2; r < reps; r++) {
          if (ort) {
            const h = hiddenFor(c, 1, r);
            const t0 = performance.now();
            await ort.forward({ sessionId: 'd', pos: ort.sessionLength('d'), nTokens: 1, hidden: h });
            if (r >= 0) d.ort.push(performance.now() - t0);
          }
          if (ol) {
            const h = hiddenFor(c, 1, r);
            const t0 = performance.now();
            await ol.forward({ sessionId: 'd', pos: ol.sessionLength('d'), nTokens: 1, hidden: h });
            if (r >= 0) d.odsiLlama.push(performance.now() - t0);
          }
          if (seq) {
            const t0 = performance.now();
            await seq.evaluateWithoutGeneratingNewTokens([((r + 3) * 31) % c.vocabSize] as import('node-llama-cpp').Token[]);
            if (r >= 0) d.llama.push(performance.now() - t0);
          }
        }
        ort?.closeSession('d');
        ol?.closeSession('d');
        const boundMs = ((row.weightBytes.ort + kvBytesPerPos(c) * ctx) / (bw.gbPerS * 1e9)) * 1000;
        row.decode[String(ctx)] = {
          ort: ort ? stats(d.ort) : undefined,
          odsiLlama: ol ? stats(d.odsiLlama) : undefined,
          llama: seq ? stats(d.llama) : undefined,
          boundMs,
        };
        const dd = row.decode[String(ctx)]!;
        console.log(
          `decode @${ctx}: ort ${fmt(dd.ort)}  odsi-llama ${fmt(dd.odsiLlama)}  llama.cpp ${fmt(dd.llama)} ms/token  (bound ${boundMs.toFixed(1)})`,
        );
      }
      // continuous batching: BATCH sessions at each --batch-ctx positions, one token each per step
      row.batchDecode = {};
      for (const bctx of batchCtxs)
        for (const [name, st] of [
          ['ort', ort],
          ['odsiLlama', ol],
        ] as const) {
          if (!st?.forwardBatch) continue;
          const ids = Array.from({ length: BATCH }, (_, i) => `b${i}`);
          for (const id of ids)
            for (let p = 0; p < bctx; p += 256) {
              const n = Math.min(256, bctx - p);
              await st.forward({ sessionId: id, pos: p, nTokens: n, hidden: hiddenFor(c, n, id.length + p) });
            }
          const tb: number[] = [];
          const t1: number[] = [];
          for (let r = -1; r < reps; r++) {
            const pos = bctx + 2 * (r + 1);
            let t0 = performance.now();
            await st.forwardBatch(ids.map((id, i) => ({ sessionId: id, pos, nTokens: 1, hidden: hiddenFor(c, 1, i + r) })));
            if (r >= 0) tb.push(performance.now() - t0);
            t0 = performance.now();
            for (let i = 0; i < BATCH; i++)
              await st.forward({ sessionId: ids[i]!, pos: pos + 1, nTokens: 1, hidden: hiddenFor(c, 1, i - r) });
            if (r >= 0) t1.push(performance.now() - t0);
          }
          for (const id of ids) st.closeSession(id);
          const b = stats(tb);
          const o = stats(t1);
          row.batchDecode[bctx === 64 ? name : `${name}@${bctx}`] = { batched: b, oneByOne: o, speedup: +(o.median / b.median).toFixed(2) };
          console.log(
            `${BATCH} sessions' decode steps (ctx ${bctx}): ${name} one batch ${fmt(b)} ms, one by one ${fmt(o)} ms (${(o.median / b.median).toFixed(2)}x)`,
          );
        }
      await ort?.dispose();
      await ol?.dispose();
      await lctx?.dispose();
      await lmodel?.dispose();
      src.close();
      rows.push(row);
    }
  }

  // summary against the targets: ratios of medians (the "done when"), bests beside them
  const ratio = (a?: Stats, b?: Stats) => (a?.n && b?.n ? a.median / b.median : NaN);
  const ratioBest = (a?: Stats, b?: Stats) => (a?.n && b?.n ? a.min / b.min : NaN);
  const r2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '—');
  const header = [
    'shape / weights',
    'engine',
    'decode@128',
    'bound',
    '÷llama.cpp',
    'decode@1024',
    '÷llama.cpp',
    '1024/128',
    'prefill 128',
    '÷llama.cpp',
  ];
  const lines = rows.flatMap((r) => {
    const a = r.decode['128'];
    const b = r.decode['1024'];
    return (['ort', 'odsiLlama', 'llama'] as const)
      .filter((e) => r.prefill128[e])
      .map((e) => [
        `${r.shape} ${r.weights}`,
        e === 'odsiLlama' ? 'odsi-llama' : e === 'llama' ? 'llama.cpp' : e,
        fmt(a?.[e]),
        a ? a.boundMs.toFixed(1) : '—',
        r2(ratio(a?.[e], a?.llama)),
        fmt(b?.[e]),
        r2(ratio(b?.[e], b?.llama)),
        r2(ratio(b?.[e], a?.[e])),
        fmt(r.prefill128[e], 0),
        r2(ratio(r.prefill128[e], r.prefill128.llama)),
      ]);
  });
  const targets = rows.flatMap((r) => {
    const a = r.decode['128'];
    const b = r.decode['1024'];
    const out: { what: string; value: number; best: number; target: number; met: boolean }[] = [];
    const add = (what: string, x: Stats | undefined, y: Stats | undefined, target: number) => {
      const value = ratio(x, y);
      if (Number.isFinite(value))
        out.push({
          what: `${r.shape} ${r.weights}: ${what}`,
          value: +value.toFixed(3),
          best: +ratioBest(x, y).toFixed(3),
          target,
          met: value <= target,
        });
    };
    if (r.weights === 'f32') {
      add('decode@128 ort/llama.cpp', a?.ort, a?.llama, 1.1);
      add('prefill128 ort/llama.cpp', r.prefill128.ort, r.prefill128.llama, 0.5);
    } else {
      add('decode@128 ort/llama.cpp', a?.ort, a?.llama, 1.3);
      add('decode@128 odsi-llama/llama.cpp', a?.odsiLlama, a?.llama, 1.3);
      add('prefill128 odsi-llama/llama.cpp', r.prefill128.odsiLlama, r.prefill128.llama, 1.0);
      add('odsi-llama decode@1024 / decode@128', b?.odsiLlama, a?.odsiLlama, 1.25);
      add('llama.cpp decode@1024 / decode@128 (for comparison)', b?.llama, a?.llama, 1.25);
    }
    add('ort decode@1024 / decode@128', b?.ort, a?.ort, 1.25);
    return out;
  });
  console.log(`\n${machineLine(machine)}; read bandwidth ${bw.gbPerS.toFixed(1)} GB/s on ${threads} threads`);
  console.log('decoder layers only; decode ms/token and prefill ms (128 tokens): best (median); ratios of medians\n');
  console.log(table(header, lines));
  console.log('\ntargets:');
  for (const t of targets) console.log(`  ${t.met ? 'met   ' : 'MISSED'} ${t.what} = ${t.value} (best ${t.best}; target ≤ ${t.target})`);
  writeResult(outFile, {
    what: 'odsi engines (ort, odsi-llama) vs llama.cpp (node-llama-cpp), decoder layers only, synthetic weights, interleaved; decode ms/token at context N, prefill ms for 128 tokens; target ratios are of medians',
    loadAvgAtEnd: describeMachine().loadAvg,
    machine,
    threads,
    reps,
    readBandwidthGBs: +bw.gbPerS.toFixed(2),
    options: {
      attention: args.attention,
      allowSpinning: args.spin,
      quick,
      batch: BATCH,
      kvBudgetMb: args['kv-budget-mb'] === undefined ? null : Number(args['kv-budget-mb']),
    },
    rows,
    targets,
  });
  console.log(`\nwrote ${outFile}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
