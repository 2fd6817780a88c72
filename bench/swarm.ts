// A 3-node swarm on this machine against the same engine in one process.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/swarm.js [--shape llama-3.2-1b] [--dtype f32]
//        [--engine ort] [--threads N] [--tokens N] [--rounds N] [--prefill N] [--nodes 3] [--layers N]
//        [--single auto|whole|shared-ends] [--quick] [--out FILE]
//
// Pipeline: k real `odsi node` processes on 127.0.0.1 (LocalSwarm), layers split evenly, driven
// through RouteClient.open by the engine's generation loop, with the gateway's embed-only and head-only
// stages in this process: [embed] → route(n1 → n2 → n3) → [head]. Single: buildLocalPipeline with
// one stage (embed + every layer + head) in this process. Same synthetic GGUF, same engine, same
// prompt, greedy, stop tokens disabled so every run decodes exactly --tokens tokens. Runs are
// interleaved (pipeline, single, pipeline, single, …) so load noise hits both.
//
// Memory: ORT holds about twice the f32 weights (our buffers + its prepacked copy). When the
// whole single-process model does not fit beside the nodes and the gateway's ends, the single
// configuration reuses the gateway's embed/head stages around one local all-layers stage
// ('shared-ends': identical end work in both, only the middle differs). --layers N writes the
// shape with fewer layers (same per-layer sizes); the ratio at full depth is then extrapolated
// from the measured per-layer compute and overhead, and reported as such.
//
// Threads: every process runs its engine on --threads intra-op threads. One sequence's decode
// visits the nodes one after another, so exactly one engine computes at any moment in either
// configuration: the busy thread count is --threads in both (ORT spinning is off, idle nodes'
// pools sleep). All processes share this machine's cores, so this measures the protocol's
// overhead, not a distributed speedup.
//
// Reported: decode tokens/s of both and their ratio; per-hop overhead of a decode step
// (route round trip − Σ hop compute) / (k + 1 transfers), from the route's per-hop timeline;
// prefill transfer MB/s (activation bytes moved / (round trip − Σ hop compute)) for one long
// prefill through the route. The overhead is everything that is not layer compute: tensor
// encode/decode, the upstream receipt check (shows as a node's queue time), receipt signing,
// libp2p (Noise + Yamux) and waiting for a core. Gateway embed/head run with the same weight
// profile as the single process (q4_0/q8_0 files are named explicitly, see below).

import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { availableParallelism, freemem } from 'node:os';
import { buildLocalPipeline, createStage, disposePipeline, splitLayers, type EngineKind } from '../src/engine/create.js';
import { generate, type GenTokenizer } from '../src/engine/generate.js';
import type { Stage } from '../src/engine/types.js';
import { generateIdentity } from '../src/identity/identity.js';
import { openModel } from '../src/model/load.js';
import { SHAPES, type SynthDtype, writeSyntheticGguf } from '../src/model/synth.js';
import type { ModelConfig } from '../src/model/types.js';
import { createHost, type OdsiHost } from '../src/p2p/host.js';
import { type HopTiming, type RouteStage } from '../src/route/route-stage.js';
import { RouteClient } from '../src/route/route-client.js';
import { LocalSwarm } from '../src/node/local-swarm.js';
import { createTokenizer } from '../src/tokenizer/index.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';
import { fmt, stats, type Stats } from './lib/stats.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

const { values: args } = parseArgs({
  options: {
    shape: { type: 'string' },
    dtype: { type: 'string', default: 'f32' },
    engine: { type: 'string', default: 'ort' },
    threads: { type: 'string' },
    tokens: { type: 'string' },
    rounds: { type: 'string' },
    prefill: { type: 'string' },
    nodes: { type: 'string', default: '3' },
    layers: { type: 'string' },
    single: { type: 'string', default: 'auto' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});

const quick = args.quick!;
const shape = args.shape ?? (quick ? 'smollm2-135m' : 'llama-3.2-1b');
const dtype = args.dtype as SynthDtype;
const engine = args.engine as EngineKind;
const threads = Number(args.threads ?? availableParallelism());
const nTokens = Number(args.tokens ?? (quick ? 16 : 32));
const rounds = Number(args.rounds ?? (quick ? 2 : 3));
const prefillTokens = Number(args.prefill ?? (quick ? 256 : 512));
const nNodes = Number(args.nodes);
const nLayersArg = args.layers === undefined ? undefined : Number(args.layers);
const singleMode = args.single!;
const PROMPT_TOKENS = 16;
const outFile = args.out ?? resolve(ROOT, quick ? 'bench/results/swarm-quick.json' : 'bench/results/swarm.json');

function check(): void {
  if (!SHAPES[shape]) throw new Error(`unknown --shape ${shape} (have: ${Object.keys(SHAPES).join(', ')})`);
  if (!['f32', 'f16', 'q8_0', 'q4_0'].includes(dtype)) throw new Error(`--dtype must be f32, f16, q8_0 or q4_0, got ${dtype}`);
  if (engine !== 'ort' && engine !== 'reference') throw new Error(`--engine must be ort or reference, got ${engine}`);
  if (!['auto', 'whole', 'shared-ends'].includes(singleMode))
    throw new Error(`--single must be auto, whole or shared-ends, got ${singleMode}`);
  if (nLayersArg !== undefined && (!Number.isInteger(nLayersArg) || nLayersArg < nNodes || nLayersArg > SHAPES[shape]!.nLayers)) {
    throw new Error(`--layers must be an integer in [${nNodes}, ${SHAPES[shape]!.nLayers}], got ${args.layers}`);
  }
  for (const [name, v, min] of [
    ['--threads', threads, 1],
    ['--tokens', nTokens, 2],
    ['--rounds', rounds, 1],
    ['--prefill', prefillTokens, 1],
    ['--nodes', nNodes, 1],
  ] as const) {
    if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

/** synthetic model cached under bench/tmp/ (git-ignored); written atomically */
async function ensureModel(): Promise<string> {
  const dir = resolve(ROOT, 'bench/tmp');
  mkdirSync(dir, { recursive: true });
  const f = resolve(
    dir,
    `${shape}${nLayersArg !== undefined && nLayersArg !== SHAPES[shape]!.nLayers ? `-l${nLayersArg}` : ''}-${dtype}.gguf`,
  );
  if (!existsSync(f)) {
    console.error(`writing ${f} ...`);
    const tmp = `${f}.tmp-${process.pid}`;
    await writeSyntheticGguf({ shape, dtype, seed: 1234, out: tmp, nLayers: nLayersArg });
    renameSync(tmp, f);
  }
  return f;
}

/** "best (median)" where higher is better */
const fmtHi = (s: Stats, d: number) => (s.n ? `${s.max.toFixed(d)} (${s.median.toFixed(d)})` : '—');
const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** weight bytes the engine holds: decoder layers (ORT keeps q8_0/q4_0 files quantized, F16 as
 *  f32), embedding (+ untied head), the ends counted at f32 to stay on the safe side */
function weightBytes(c: ModelConfig): { layers: number; ends: number } {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  const perWeight = dtype === 'q4_0' ? 18 / 32 : dtype === 'q8_0' ? 34 / 32 : 4;
  const layers = c.nLayers * (c.dim * (q + 2 * kv) + q * c.dim + 3 * c.dim * c.ffnDim) * perWeight;
  const ends = c.vocabSize * c.dim * 4 * (c.tiedEmbeddings ? 1 : 2);
  return { layers, ends };
}

interface DecodeRun {
  config: 'pipeline' | 'single';
  round: number;
  tokensPerS: number;
  msPerToken: number;
  prefillMs: number;
  /** mean compute ms per decode forward of each stage (pipeline: embed, route = Σ hops, head) */
  stageDecodeMs: number[];
}

interface HopSample {
  roundTripMs: number;
  computeMs: number;
  perHop: HopTiming[];
}

async function main(): Promise<void> {
  check();
  const machine = describeMachine();
  console.log(machineLine(machine));
  const file = await ensureModel();
  const src = openModel(file);
  const c = src.config;
  if (!src.tokenizer) throw new Error(`${file} has no tokenizer`);
  const tokenizer = createTokenizer(src.tokenizer);
  // stop tokens disabled: every run decodes exactly nTokens (random weights may emit EOS early)
  const genTok: GenTokenizer = { stopIds: [], createStreamDecoder: () => tokenizer.createStreamDecoder() };
  const prompt = tokenizer.encode('Once upon a time, in a small village by the sea, there lived an old fisherman', {
    addBos: src.tokenizer.addBos,
  });
  const promptIds = Array.from({ length: PROMPT_TOKENS }, (_, i) => prompt[i % prompt.length]!);

  // memory (ORT ≈ 2× the weights it holds): the nodes hold the layers once, this process the layers once
  // more plus embed and head (an untied-in-ORT head is a second vocab × dim matrix) once or twice
  const need = weightBytes(c);
  const gib = (b: number) => (2 * b) / 2 ** 30;
  const needWhole = gib(2 * need.layers + 4 * need.ends);
  const needShared = gib(2 * need.layers + 2 * need.ends);
  const freeGiB = freemem() / 2 ** 30;
  const fits = (g: number) => g < freeGiB * 0.8;
  const mode: 'whole' | 'shared-ends' =
    singleMode === 'auto' ? (fits(needWhole) ? 'whole' : 'shared-ends') : (singleMode as 'whole' | 'shared-ends');
  const needGiB = mode === 'whole' ? needWhole : needShared;
  console.log(
    `${shape} ${dtype}: ${c.nLayers}${c.nLayers !== SHAPES[shape]!.nLayers ? ` of ${SHAPES[shape]!.nLayers}` : ''} layers, dim ${c.dim}; single = ${mode}; estimated memory ${needGiB.toFixed(1)} GiB (whole ${needWhole.toFixed(1)}, shared ends ${needShared.toFixed(1)}; available ${freeGiB.toFixed(1)} GiB)`,
  );
  if (!fits(needGiB)) {
    throw new Error(
      `not enough free memory: ~${needGiB.toFixed(1)} GiB needed, ${freeGiB.toFixed(1)} GiB available: try --layers ${Math.max(nNodes, Math.floor(c.nLayers / 3))} or --shape smollm2-135m`,
    );
  }

  const ranges = splitLayers(c.nLayers, nNodes);
  const modelId = `bench-swarm:${shape}-${dtype}`; // nodes trust it (--model-id): no hashing of the file
  let swarm: LocalSwarm | undefined;
  let host: OdsiHost | undefined;
  const stages: Stage[] = [];
  let single: Stage[] = [];
  const onSignal = () => void swarm?.stop().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let t0 = performance.now();
    swarm = await LocalSwarm.start({
      model: file,
      ranges,
      engine,
      modelId,
      readyTimeoutMs: 600_000,
      // the prefill transfer below is one STEP of --prefill tokens: the nodes must take a step that
      // long (a node's default, 128 tokens, bounds what a peer makes it buffer per stream)
      extraArgs: ['--threads', String(threads), '--bench-tokens', '0', '--max-step-tokens', String(Math.max(prefillTokens, PROMPT_TOKENS))],
    });
    const swarmStartMs = performance.now() - t0;
    console.log(
      `swarm: ${swarm.nodes.map((n) => `[${n.start}:${n.end}] pid ${n.pid}`).join(', ')} up in ${(swarmStartMs / 1000).toFixed(1)} s`,
    );

    t0 = performance.now();
    // name the weight profile: the ORT head-only stage otherwise runs a q4_0/q8_0 file's head in
    // f32 while the whole-model stage runs it quantized, which would charge the pipeline for it
    const weights = dtype === 'q4_0' ? ('q4' as const) : dtype === 'q8_0' ? ('q8' as const) : undefined;
    const sopts = { threads, weights };
    const embed = await createStage(engine, src, { start: 0, end: 0, embed: true, head: false }, sopts);
    stages.push(embed);
    const head = await createStage(engine, src, { start: c.nLayers, end: c.nLayers, embed: false, head: true }, sopts);
    stages.push(head);
    if (mode === 'whole') single = await buildLocalPipeline(engine, src, 1, sopts);
    else single = [embed, await createStage(engine, src, { start: 0, end: c.nLayers, embed: false, head: false }, sopts), head];
    const profiles = { gatewayEmbed: embed.profile, gatewayHead: head.profile, single: single.map((x) => x.profile) };
    console.log(
      `local stages (gateway ends + single-process model) loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s, RSS ${rssMiB()} MiB`,
    );
    host = await createHost({ identity: generateIdentity() });
    const routes = await RouteClient.start(host);
    const hops = swarm.nodes.map((n) => ({ peerId: n.peerId, addrs: n.addrs, start: n.start, end: n.end }));
    let nextSession = 0;
    const open = (maxTokens: number): Promise<RouteStage> =>
      routes.open({
        modelId,
        config: c,
        hops,
        sessionId: `bench-${process.pid}-${nextSession++}`,
        maxTokens,
        openTimeoutMs: 60_000,
        stepTimeoutMs: 600_000,
      });

    // warm-up: one short run through each (first ORT runs pay allocation)
    {
      const route = await open(PROMPT_TOKENS + 4);
      await generate([embed, route, head], genTok, promptIds, { maxTokens: 3, sampling: { temperature: 0 } });
      await generate(single, genTok, promptIds, { maxTokens: 3, sampling: { temperature: 0 } });
    }

    const runs: DecodeRun[] = [];
    const hopSamples: HopSample[] = [];
    let sameTokens = true;
    for (let r = 0; r < rounds; r++) {
      const route = await open(PROMPT_TOKENS + nTokens + 4);
      const samples: HopSample[] = [];
      const p = await generate([embed, route, head], genTok, promptIds, {
        maxTokens: nTokens,
        sampling: { temperature: 0 },
        // step 0's forward is the prefill's; later steps are single-token decodes
        onToken: (t) =>
          t.step > 0 &&
          samples.push({
            roundTripMs: route.lastRoundTripMs,
            computeMs: route.lastTimeline.reduce((a, h) => a + h.computeMs, 0),
            perHop: route.lastTimeline,
          }),
      });
      hopSamples.push(...samples);
      runs.push({
        config: 'pipeline',
        round: r,
        tokensPerS: p.timings.tokensPerS,
        msPerToken: p.timings.msPerToken,
        prefillMs: p.timings.prefillMs,
        stageDecodeMs: p.stages.map((x) => r3(x.decodeMsPerToken)),
      });
      const s = await generate(single, genTok, promptIds, { maxTokens: nTokens, sampling: { temperature: 0 } });
      runs.push({
        config: 'single',
        round: r,
        tokensPerS: s.timings.tokensPerS,
        msPerToken: s.timings.msPerToken,
        prefillMs: s.timings.prefillMs,
        stageDecodeMs: s.stages.map((x) => r3(x.decodeMsPerToken)),
      });
      if (p.tokens.join() !== s.tokens.join()) sameTokens = false;
      console.log(
        `round ${r + 1}/${rounds}: pipeline ${p.timings.tokensPerS.toFixed(2)} tok/s (${p.timings.msPerToken.toFixed(1)} ms/token; embed/route/head ${p.stages.map((x) => x.decodeMsPerToken.toFixed(1)).join('/')} ms), single ${s.timings.tokensPerS.toFixed(2)} tok/s (${s.timings.msPerToken.toFixed(1)} ms/token; compute ${s.stages.map((x) => x.decodeMsPerToken.toFixed(1)).join('/')} ms)`,
      );
    }

    // prefill transfer: one long prefill through the route, hidden states from the embedding
    const ids = Int32Array.from({ length: prefillTokens }, (_, i) => (i * 7919 + 13) % c.vocabSize);
    const hidden = (await embed.forward({ sessionId: 'prefill', pos: 0, nTokens: prefillTokens, tokens: ids })).hidden!;
    embed.closeSession('prefill');
    const route = await open(prefillTokens + 4);
    const bytesPerTransfer = prefillTokens * c.dim * 4; // f32 on the wire
    const transfers = hops.length + 1;
    const prefill: { roundTripMs: number; computeMs: number; transferMs: number; mbPerS: number }[] = [];
    for (let i = 0; i < (quick ? 2 : 3); i++) {
      await route.forward({ sessionId: route.sessionId, pos: 0, nTokens: prefillTokens, hidden }); // pos 0 truncates the KV: same work each time
      const computeMs = route.lastTimeline.reduce((a, h) => a + h.computeMs, 0);
      const transferMs = route.lastRoundTripMs - computeMs;
      prefill.push({
        roundTripMs: r3(route.lastRoundTripMs),
        computeMs: r3(computeMs),
        transferMs: r3(transferMs),
        mbPerS: r3((bytesPerTransfer * transfers) / 1e6 / (transferMs / 1000)),
      });
    }
    await route.dispose();

    // ---- summary ----
    const pTps = stats(runs.filter((x) => x.config === 'pipeline').map((x) => x.tokensPerS));
    const sTps = stats(runs.filter((x) => x.config === 'single').map((x) => x.tokensPerS));
    // per round ratio (adjacent runs share the load), then median over rounds
    const ratios = Array.from(
      { length: rounds },
      (_, r) =>
        runs.find((x) => x.round === r && x.config === 'pipeline')!.tokensPerS /
        runs.find((x) => x.round === r && x.config === 'single')!.tokensPerS,
    );
    const ratio = stats(ratios);
    const overheadUs = stats(hopSamples.map((h) => ((h.roundTripMs - h.computeMs) / transfers) * 1000));
    const perNode = hops.map((h, i) => ({
      layers: [h.start, h.end],
      computeMs: stats(hopSamples.map((s) => s.perHop[i]?.computeMs ?? NaN).filter(Number.isFinite)),
      queueMs: stats(hopSamples.map((s) => s.perHop[i]?.queueMs ?? NaN).filter(Number.isFinite)),
      sendMs: stats(hopSamples.map((s) => s.perHop[i]?.sendMs ?? NaN).filter(Number.isFinite)),
    }));
    const pMs = stats(runs.filter((x) => x.config === 'pipeline').map((x) => x.msPerToken));
    const sMs = stats(runs.filter((x) => x.config === 'single').map((x) => x.msPerToken));
    const endToEndOverheadUs = ((pMs.median - sMs.median) / transfers) * 1000;
    const mbps = stats(prefill.map((p) => p.mbPerS));
    const machineAfter = describeMachine();

    console.log(`\n${machineLine(machine)}`);
    console.log(`load average at end: ${machineAfter.loadAvg.join('/')}`);
    console.log(
      `${shape} ${dtype}, engine ${engine}, ${threads} threads per process, ${nNodes} nodes [${ranges.map((r) => r.join(':')).join(' ')}], ${nTokens} decode tokens after a ${PROMPT_TOKENS}-token prompt, ${rounds} interleaved rounds`,
    );
    console.log(
      `NOTE: all ${nNodes} node processes and the single process share the same ${machine.cores} cores: this measures protocol overhead, not a distributed speedup.\n`,
    );
    console.log('figures: best (median); ratio: median of per-round ratios');
    console.log(
      table(
        ['', 'pipeline', 'single', 'pipeline/single'],
        [
          ['decode tokens/s', fmtHi(pTps, 2), fmtHi(sTps, 2), `${ratio.median.toFixed(3)} (best ${ratio.max.toFixed(3)})`],
          ['decode ms/token', fmt(pMs, 1), fmt(sMs, 1), ''],
        ],
      ),
    );
    console.log(
      `\nper-hop overhead of a decode step ((route round trip − Σ hop compute) / ${transfers} transfers): ${fmt(overheadUs, 0)} µs (${overheadUs.n} steps)`,
    );
    console.log(`  end-to-end estimate ((pipeline − single ms/token) / ${transfers}): ${endToEndOverheadUs.toFixed(0)} µs`);
    for (const [i, n] of perNode.entries())
      console.log(
        `  node ${i + 1} [${n.layers.join(':')}]: compute ${fmt(n.computeMs, 2)} ms, queue ${fmt(n.queueMs, 3)} ms, send ${fmt(n.sendMs, 3)} ms`,
      );
    console.log(
      `prefill transfer (${prefillTokens} tokens, ${(bytesPerTransfer / 1e6).toFixed(2)} MB × ${transfers} transfers): ${fmtHi(mbps, 0)} MB/s; ${prefill.map((p) => `rt ${p.roundTripMs.toFixed(0)} ms = compute ${p.computeMs.toFixed(0)} + transfer ${p.transferMs.toFixed(0)}`).join('; ')}`,
    );
    console.log(`greedy tokens identical in both configurations: ${sameTokens}`);
    // fewer layers than the real shape: scale the layer compute to full depth, keep the overhead
    const fullLayers = SHAPES[shape]!.nLayers;
    let fullDepth: { layers: number; singleMsPerToken: number; overheadMsPerToken: number; ratio: number } | undefined;
    if (c.nLayers !== fullLayers) {
      const layersMs = stats(hopSamples.map((h) => h.computeMs)).median;
      const sFull = sMs.median + layersMs * (fullLayers / c.nLayers - 1);
      const over = Math.max(0, pMs.median - sMs.median);
      fullDepth = { layers: fullLayers, singleMsPerToken: r3(sFull), overheadMsPerToken: r3(over), ratio: r3(sFull / (sFull + over)) };
      console.log(
        `full depth (${fullLayers} layers), extrapolated: single ${sFull.toFixed(1)} ms/token + measured overhead ${over.toFixed(1)} ms/token → pipeline/single ${fullDepth.ratio.toFixed(3)}`,
      );
    }
    const name = `pipeline/single decode tokens/s, ${shape} ${dtype}${fullDepth ? ` (extrapolated from ${c.nLayers} to ${fullLayers} layers)` : ''}`;
    const value = fullDepth ? fullDepth.ratio : r3(ratio.median);
    // the issue's target is for the llama-3.2-1b shape at fp32; other dtypes are shown against it for reference
    const target = shape === 'llama-3.2-1b' ? { what: name, target: 0.9, value, met: value >= 0.9, applies: dtype === 'f32' } : undefined;
    if (target)
      console.log(
        `target: ${target.met ? 'met' : 'MISSED'} ${target.what} = ${target.value} (target ≥ 0.9${target.applies ? '' : ', set for f32: reference only'})`,
      );

    writeResult(outFile, {
      what: '3-node pipeline (real odsi node processes on 127.0.0.1) vs the same engine in one process, synthetic weights; decode tokens/s, per-hop overhead, prefill transfer MB/s',
      note: `all node processes and the single process share this machine's ${machine.cores} cores: protocol overhead, not a distributed speedup. Every process runs ${threads} engine threads; one sequence's decode visits the nodes one after another, so ${threads} threads compute at any moment in both configurations. The machine is shared with other jobs: see loadAvg.`,
      machine,
      loadAvgAtEnd: machineAfter.loadAvg,
      options: {
        shape,
        dtype,
        layers: c.nLayers,
        fullLayers: SHAPES[shape]!.nLayers,
        single: mode,
        engine,
        threads,
        nodes: nNodes,
        ranges,
        promptTokens: PROMPT_TOKENS,
        decodeTokens: nTokens,
        rounds,
        prefillTokens,
        quick,
        wireDtype: 'f32',
      },
      swarmStartMs: Math.round(swarmStartMs),
      rssMiB: rssMiB(),
      decode: {
        pipeline: { tokensPerS: pTps, msPerToken: pMs },
        single: { tokensPerS: sTps, msPerToken: sMs },
        ratio,
        ratioPerRound: ratios.map(r3),
      },
      perHopOverheadUs: { fromTimeline: overheadUs, endToEndEstimate: r3(endToEndOverheadUs), transfersPerStep: transfers, perNode },
      prefillTransfer: { tokens: prefillTokens, bytesPerTransfer, transfers, mbPerS: mbps, samples: prefill },
      fullDepth,
      singleMode: mode,
      profiles,
      greedyTokensIdentical: sameTokens,
      runs: runs.map((x) => ({ ...x, tokensPerS: r3(x.tokensPerS), msPerToken: r3(x.msPerToken), prefillMs: r3(x.prefillMs) })),
      targets: target ? [target] : [],
    });
    console.log(`\nwrote ${outFile}`);
  } finally {
    await disposePipeline([...new Set([...stages, ...single])]).catch(() => undefined);
    await host?.stop().catch(() => undefined);
    await swarm?.stop().catch(() => undefined);
    src.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
