// Concurrency: many streaming requests at once through the OpenAI API of a 3-node loopback
// swarm, against llama.cpp's own continuous batching in one process.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/concurrency.js [--dtypes f32,q4_0]
//        [--levels 1,4,16] [--tokens 32] [--reps 3] [--warmup 3] [--threads N] [--demo-tokens 48] [--no-llama]
//        [--llama-threads 1,N] [--no-accountability] [--ecdsa native,libsecp256k1 | --swarm-env 'K=V;K=V' | --swarm-args 'ARGS;ARGS']
//        [--quick] [--out FILE]
//
// Swarm: the real `odsi demo --serve --engine ort|llama (--engine) --model M --json` process (3 `odsi node`
// processes on 127.0.0.1, layers split evenly, and the gateway with its API), on a synthetic
// SmolLM2-135M-shaped GGUF per dtype (bench/tmp/, written once). At each level c, c streaming
// /v1/completions requests (distinct prompts, temperature 0, max_tokens --tokens) go out at once
// through the official openai client; aggregate tokens/s = all streamed tokens / wall time of
// the batch; inter-token latency = gaps between consecutive chunks of one stream, p50/p95 over
// all streams. llama.cpp: node-llama-cpp with the same GGUF, one context holding 16 sequences,
// c sequences generating greedily at once (node-llama-cpp batches the sequences' evaluations
// that are pending in the same event-loop cycle into one llama_decode), same counts, at each of
// --llama-threads (default 1 and --threads): ggml's worker threads spin on barriers, so with 2
// threads on a 2-core machine that other processes also load, one descheduled thread stalls
// every op of the graph (measured 1.5 tok/s for one sequence at 2 threads vs 10.6 at 1 thread
// at load average ~9); the best thread count at each level is llama.cpp's figure. Levels and
// the two sides are interleaved per repetition; medians over --reps.
//
// CPU accounting (where end-to-end throughput goes): CPU time (user + system, from
// /proc/PID/stat) of the gateway process, each node process and this client during each odsi
// run, per generated token, and the cores in use (all CPU ÷ wall). When the swarm is CPU-bound
// (cores in use ≈ cores of the machine), the aggregate at c streams can be at most
// (CPU per token at 1 stream ÷ CPU per token at c) × (cores ÷ cores in use at 1 stream) times
// the 1-stream figure: the bench reports that bound beside the measured ratio.
//
// Each run also reads the nodes' Prometheus metrics (the demo's --node-metrics) before and after:
// each node's mean sessions per scheduler iteration (its batch) during the run.
//
// Node compute alone (in this process): 16 sessions' decode steps on a 10-layer ORT stage, one
// by one vs one forwardBatch — what batching saves where it happens.
//
// --ecdsa A,B: one demo swarm per signature backend (ODSI_ECDSA for the gateway and its nodes);
// --swarm-env 'K=V;K=V': one per environment (any setting of the demo and its nodes), likewise;
// --swarm-args 'ARGS;ARGS': one per set of extra `odsi demo` arguments (e.g. ';--no-waves'), likewise;
// all started before the runs; at each level of each repetition the swarms run one after the
// other, in an order rotated every repetition (the first swarm is the one the summary and demo
// check use, whatever its place in the order); each other backend's aggregate
// and CPU per token are reported beside the first's, as medians and as the median of per-run
// ratios.
//
// Demo check (the issue's "concurrency reaches users"): on the same demo process, 8 concurrent
// streaming requests of --demo-tokens tokens vs one such request, aggregate tokens/s ratio
// (target ≥ 3×), interleaved over --reps.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { availableParallelism, cpus } from 'node:os';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';
import { createStage } from '../src/engine/create.js';
import { openModel } from '../src/model/load.js';
import { writeSyntheticGguf, type SynthDtype } from '../src/model/synth.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

const { values: args } = parseArgs({
  options: {
    dtypes: { type: 'string' },
    levels: { type: 'string' },
    tokens: { type: 'string' },
    reps: { type: 'string' },
    threads: { type: 'string' },
    'demo-tokens': { type: 'string' },
    'no-llama': { type: 'boolean', default: false },
    'llama-threads': { type: 'string' },
    'no-accountability': { type: 'boolean', default: false },
    engine: { type: 'string' },
    ecdsa: { type: 'string' },
    'swarm-env': { type: 'string' },
    'swarm-args': { type: 'string' },
    warmup: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const quick = args.quick!;
const dtypes = (args.dtypes ?? (quick ? 'f32' : 'f32,q4_0')).split(',') as SynthDtype[];
const levels = (args.levels ?? '1,4,16').split(',').map(Number);
const nTokens = Number(args.tokens ?? (quick ? 12 : 32));
const reps = Number(args.reps ?? (quick ? 1 : 3));
const threads = Number(args.threads ?? availableParallelism());
const demoTokens = Number(args['demo-tokens'] ?? (quick ? 16 : 48));
/** unmeasured rounds of 16 concurrent requests per swarm (and one llama.cpp run each) before the measured ones */
const warmup = Number(args.warmup ?? (quick ? 0 : 3));
const engine = (args.engine ?? 'ort') as 'ort' | 'llama';
if (engine !== 'ort' && engine !== 'llama') throw new Error(`--engine: ort or llama, got ${String(args.engine)}`);
/** ODSI_ECDSA per swarm; undefined: the environment's (auto) */
/** one demo swarm per entry: --ecdsa A,B (ODSI_ECDSA=A, …), --swarm-env 'K=V,K=V;K=V' or --swarm-args 'ARGS;ARGS' (swarms split by ';') */
const swarmEnvs: { name: string; env: Record<string, string>; args?: string[] }[] = args.ecdsa
  ? args.ecdsa.split(',').map((c) => ({ name: `ODSI_ECDSA=${c}`, env: { ODSI_ECDSA: c } }))
  : args['swarm-args'] !== undefined
    ? args['swarm-args'].split(';').map((one) => ({ name: one.trim() || 'default', env: {}, args: one.split(' ').filter((a) => a !== '') }))
    : args['swarm-env']
      ? args['swarm-env'].split(';').map((one) => ({
          name: one,
          env: Object.fromEntries(
            one
              .split(',')
              .filter((kv) => kv !== '')
              .map((kv) => {
                const i = kv.indexOf('=');
                if (i < 1) throw new Error(`--swarm-env: K=V,K=V;K=V, got ${kv}`);
                return [kv.slice(0, i), kv.slice(i + 1)];
              }),
          ),
        }))
      : [{ name: 'default', env: {} }];
const llamaThreads = [...new Set((args['llama-threads'] ?? `1,${threads}`).split(',').map(Number))];

interface LevelResult {
  tokens: number;
  wallMs: number;
  tokPerS: number;
  itlP50: number;
  itlP95: number;
  /** odsi: CPU ms per generated token, by process, and all CPU ÷ wall */
  cpu?: CpuShare;
  /** llama.cpp: the thread count */
  threads?: number;
  /** odsi: each node's mean sessions per scheduler iteration during the run (its odsi_node_batch_sessions metric) */
  meanBatch?: number[];
}

interface CpuShare {
  gatewayMsPerToken: number;
  nodesMsPerToken: number[];
  clientMsPerToken: number;
  totalMsPerToken: number;
  coresInUse: number;
}

/** user + system CPU ms of a process so far (Linux /proc; undefined once it is gone) */
function cpuMsOf(pid: number): number | undefined {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}
const CLK_TCK = 100;

/** the demo's node processes: its children that run `odsi node` */
function nodePids(demoPid: number): number[] {
  const out: number[] = [];
  if (!existsSync('/proc')) return out; // CPU accounting is Linux-only; figures read NaN elsewhere
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.split(') ')[1]!.split(' ')[1]) !== demoPid) continue;
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes('node')) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out.sort((a, b) => a - b);
}

/** a node's odsi_node_batch_sessions histogram so far: sessions' steps and iterations, summed over its layer ranges */
async function batchesOf(metricsUrl: string): Promise<{ sessions: number; iterations: number }> {
  const text = await (await fetch(metricsUrl)).text();
  const total = (name: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { sessions: total('odsi_node_batch_sessions_sum'), iterations: total('odsi_node_batch_sessions_count') };
}

/** runs fn while counting the CPU the swarm's processes and this client spend, and the nodes' batches */
async function withCpu(
  pids: { gateway: number; nodes: number[]; metrics: string[] },
  fn: () => Promise<LevelResult>,
): Promise<LevelResult> {
  const all = [pids.gateway, ...pids.nodes];
  const b0 = await Promise.all(pids.metrics.map(batchesOf));
  const before = all.map((p) => cpuMsOf(p) ?? NaN);
  const c0 = process.cpuUsage();
  const r = await fn();
  const c = process.cpuUsage(c0);
  const b1 = await Promise.all(pids.metrics.map(batchesOf));
  r.meanBatch = b1.map((b, i) => (b.sessions - b0[i]!.sessions) / Math.max(1, b.iterations - b0[i]!.iterations));
  const used = all.map((p, i) => (cpuMsOf(p) ?? NaN) - before[i]!);
  const client = (c.user + c.system) / 1000;
  const total = used.reduce((a, x) => a + x, 0) + client;
  r.cpu = {
    gatewayMsPerToken: used[0]! / r.tokens,
    nodesMsPerToken: used.slice(1).map((u) => u / r.tokens),
    clientMsPerToken: client / r.tokens,
    totalMsPerToken: total / r.tokens,
    coresInUse: total / r.wallMs,
  };
  return r;
}

const NAMES = ['Ada', 'Bo', 'Cy', 'Di', 'Ed', 'Flo', 'Gus', 'Hal', 'Ivy', 'Jo', 'Kit', 'Lu', 'Mo', 'Ned', 'Oz', 'Pam'];
const prompt = (i: number) => `${NAMES[i % NAMES.length]} went to the market number ${i} and`;

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const median = (xs: number[]) => pct(xs, 50);

function summarize(streams: number[][], wallMs: number): LevelResult {
  const tokens = streams.reduce((a, s) => a + s.length, 0);
  const gaps = streams.flatMap((s) => s.slice(1).map((t, i) => t - s[i]!));
  return { tokens, wallMs, tokPerS: (tokens / wallMs) * 1000, itlP50: pct(gaps, 50), itlP95: pct(gaps, 95) };
}

/** c streaming completions at once through the OpenAI API */
async function viaApi(client: OpenAI, model: string, c: number, maxTokens: number): Promise<LevelResult> {
  const t0 = performance.now();
  const streams = await Promise.all(
    Array.from({ length: c }, async (_, i) => {
      const s = await client.completions.create({ model, prompt: prompt(i), max_tokens: maxTokens, temperature: 0, stream: true });
      const at: number[] = [];
      for await (const ch of s) if (ch.choices[0]?.text !== undefined) at.push(performance.now());
      return at;
    }),
  );
  return summarize(streams, performance.now() - t0);
}

/** the real demo process; resolves once it serves */
async function startDemo(
  model: string,
  swarmEnv: Record<string, string> = {},
  demoArgs: string[] = [],
): Promise<{ proc: ChildProcess; url: string; model: string; metrics: string[] }> {
  const proc = spawn(
    process.execPath,
    [
      resolve(ROOT, 'bin/odsi.js'),
      'demo',
      '--serve',
      '--json',
      '--engine',
      engine,
      '--model',
      model,
      '--nodes',
      '3',
      '--port',
      '0',
      '-n',
      '2',
      '--max-concurrent',
      '64',
      '--node-metrics',
      ...demoArgs,
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...(args['no-accountability'] ? { ODSI_ACCOUNTABILITY: '0' } : {}), ...swarmEnv },
    },
  );
  const lines = createInterface({ input: proc.stdout! });
  return await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error('demo did not start within 180 s')), 180_000);
    proc.on('exit', (code) => rej(new Error(`demo exited with ${code}`)));
    lines.on('line', (l) => {
      try {
        const j = JSON.parse(l) as { event?: string; url?: string; model?: string; nodes?: { metrics?: string }[] };
        if (j.event === 'serving') {
          clearTimeout(timer);
          res({ proc, url: j.url!, model: j.model!, metrics: (j.nodes ?? []).flatMap((n) => (n.metrics ? [n.metrics] : [])) });
        }
      } catch {
        /* the first prompt's output */
      }
    });
  });
}

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;

/** node-llama-cpp: one context, 16 sequences; c of them generate greedily at once */
async function llamaRunner(llama: Llama, file: string, nThreads: number) {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: 16 * 256, sequences: 16, threads: nThreads, batchSize: 512 });
  const seqs = Array.from({ length: 16 }, () => ctx.getSequence());
  return {
    async run(c: number, maxTokens: number): Promise<LevelResult> {
      const t0 = performance.now();
      const streams = await Promise.all(
        seqs.slice(0, c).map(async (seq, i) => {
          await seq.clearHistory();
          const at: number[] = [];
          const toks = model.tokenize(prompt(i));
          for await (const _t of seq.evaluate(toks, { temperature: 0 })) {
            at.push(performance.now());
            if (at.length >= maxTokens) break;
          }
          return at;
        }),
      );
      return { ...summarize(streams, performance.now() - t0), threads: nThreads };
    },
    async dispose() {
      await ctx.dispose();
      await model.dispose();
    },
  };
}

/** one node's compute alone: 16 sessions' decode steps one by one vs one forwardBatch (ORT, 10 layers) */
async function nodeCompute(file: string): Promise<{ sequentialMs: number[]; batchMs: number[]; ratioMedian: number }> {
  const src = openModel(file);
  const st = await createStage(engine, src, { start: 0, end: 10, embed: false, head: false }, engine === 'ort' ? { threads } : {});
  const dim = src.config.dim;
  const B = 16;
  const h = (n: number) => new Float32Array(n * dim).fill(0.01);
  const sequentialMs: number[] = [];
  const batchMs: number[] = [];
  try {
    for (let i = 0; i < B; i++) await st.forward({ sessionId: `s${i}`, pos: 0, nTokens: 32, hidden: h(32) });
    let pos = 32;
    for (let r = 0; r < Math.max(3, reps); r++) {
      let t = performance.now();
      for (let i = 0; i < B; i++) await st.forward({ sessionId: `s${i}`, pos, nTokens: 1, hidden: h(1) });
      sequentialMs.push(performance.now() - t);
      pos++;
      t = performance.now();
      await st.forwardBatch!(Array.from({ length: B }, (_, i) => ({ sessionId: `s${i}`, pos, nTokens: 1, hidden: h(1) })));
      batchMs.push(performance.now() - t);
      pos++;
    }
  } finally {
    await st.dispose();
    src.close();
  }
  return { sequentialMs, batchMs, ratioMedian: median(sequentialMs.map((s, i) => s / batchMs[i]!)) };
}

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(`concurrency: ${machineLine(machine)}; threads ${threads}; levels ${levels.join(',')}; ${nTokens} tokens; reps ${reps}`);
  const tmp = resolve(ROOT, 'bench/tmp');
  mkdirSync(tmp, { recursive: true });
  let llama: Llama | undefined;
  if (!args['no-llama']) {
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  }
  const out: Record<string, unknown> = {
    machine,
    engine,
    accountability: !args['no-accountability'],
    threads,
    llamaThreads,
    levels,
    tokens: nTokens,
    reps,
    demoTokens,
    warmup,
    results: {},
  };
  for (const dtype of dtypes) {
    const file = resolve(tmp, `smollm2-135m-${dtype === 'q4_0' ? 'q4' : dtype}.gguf`);
    if (!existsSync(file)) await writeSyntheticGguf({ shape: 'smollm2-135m', dtype, seed: 1, out: file, progress: false });
    const compute = await nodeCompute(file);
    console.log(
      `${dtype}: one node (10 layers), 16 sessions' decode: one by one ${fmt(median(compute.sequentialMs))} ms, one batch ${fmt(median(compute.batchMs))} ms = ${fmt(compute.ratioMedian, 2)}×`,
    );
    const demos: Awaited<ReturnType<typeof startDemo>>[] = [];
    for (const e of swarmEnvs) demos.push(await startDemo(file, e.env, e.args));
    const demo = demos[0]!;
    const pids = { gateway: demo.proc.pid!, nodes: nodePids(demo.proc.pid!), metrics: demo.metrics };
    /** the other swarms (backends, settings), run beside the first at each level */
    const others = demos.slice(1).map((d, i) => ({
      name: swarmEnvs[i + 1]!.name,
      demo: d,
      pids: { gateway: d.proc.pid!, nodes: nodePids(d.proc.pid!), metrics: d.metrics },
    }));
    const otherRuns: Record<string, Record<string, LevelResult[]>> = {};
    const lrs = llama ? await Promise.all(llamaThreads.map((t) => llamaRunner(llama!, file, t))) : [];
    const runs: Record<string, { odsi: LevelResult[]; llama: LevelResult[] }> = {};
    const demoRuns: { one: LevelResult[]; eight: LevelResult[] } = { one: [], eight: [] };
    try {
      const client = new OpenAI({ baseURL: `${demo.url}/v1`, apiKey: 'none', timeout: 600_000, maxRetries: 0 });
      const otherClients = others.map((o) => new OpenAI({ baseURL: `${o.demo.url}/v1`, apiKey: 'none', timeout: 600_000, maxRetries: 0 }));
      // warm-up: a fresh swarm is slower per hop for its first thousand or so steps per node
      // (bench/README.md, session 11); --warmup rounds of 16 streams, unmeasured
      for (const [c, model] of [[client, demo.model] as const, ...others.map((o, i) => [otherClients[i]!, o.demo.model] as const)]) {
        await viaApi(c, model, 2, 4);
        for (let w = 0; w < warmup; w++) await viaApi(c, model, 16, nTokens);
      }
      if (warmup > 0) for (const lr of lrs) await lr.run(16, nTokens);
      for (let r = 0; r < reps; r++) {
        for (const c of levels) {
          const k = String(c);
          runs[k] ??= { odsi: [], llama: [] };
          // the swarms in an order rotated every repetition (repetition r starts with swarm r mod
          // n), so that none always runs first, right after the previous level's heavier runs
          let o: LevelResult | undefined;
          for (let j = 0; j < demos.length; j++) {
            const at = (j + r) % demos.length;
            if (at === 0) {
              o = await withCpu(pids, () => viaApi(client, demo.model, c, nTokens));
              runs[k].odsi.push(o);
              continue;
            }
            const x = others[at - 1]!;
            const r2 = await withCpu(x.pids, () => viaApi(otherClients[at - 1]!, x.demo.model, c, nTokens));
            ((otherRuns[x.name] ??= {})[k] ??= []).push(r2);
            console.log(
              `  ${dtype} rep ${r} c=${c}: odsi (${x.name}) ${fmt(r2.tokPerS)} tok/s, CPU ${fmt(r2.cpu!.totalMsPerToken)} ms/token, ` +
                `mean batch ${r2.meanBatch!.map((b) => fmt(b, 2)).join('/')}`,
            );
          }
          o = o!;
          for (const lr of lrs) runs[k].llama.push(await lr.run(c, nTokens));
          const ll = runs[k].llama.slice(-lrs.length).map((x) => `${fmt(x.tokPerS)} (${x.threads} thr)`);
          console.log(
            `  ${dtype} rep ${r} c=${c}: odsi ${fmt(o.tokPerS)} tok/s, CPU ${fmt(o.cpu!.totalMsPerToken)} ms/token ` +
              `(gateway ${fmt(o.cpu!.gatewayMsPerToken)}, nodes ${o.cpu!.nodesMsPerToken.map((x) => fmt(x)).join('/')}, client ${fmt(o.cpu!.clientMsPerToken)}), ` +
              `${fmt(o.cpu!.coresInUse, 2)} cores, mean batch ${o.meanBatch!.map((b) => fmt(b, 2)).join('/')} sessions` +
              `${ll.length ? `; llama.cpp ${ll.join(', ')} tok/s` : ''}`,
          );
        }
        demoRuns.one.push(await withCpu(pids, () => viaApi(client, demo.model, 1, demoTokens)));
        demoRuns.eight.push(await withCpu(pids, () => viaApi(client, demo.model, 8, demoTokens)));
        console.log(
          `  ${dtype} rep ${r} demo check: 8 concurrent ${fmt(demoRuns.eight.at(-1)!.tokPerS)} tok/s vs one ${fmt(demoRuns.one.at(-1)!.tokPerS)} tok/s`,
        );
      }
    } finally {
      for (const d of demos) d.proc.kill('SIGTERM');
      for (const lr of lrs) await lr.dispose();
    }
    const med = (xs: LevelResult[], f: keyof LevelResult) => median(xs.map((x) => x[f] as number));
    const medCpu = (xs: LevelResult[], f: 'totalMsPerToken' | 'gatewayMsPerToken' | 'coresInUse') => median(xs.map((x) => x.cpu![f]));
    /** llama.cpp at its best thread count for this level (by median aggregate) */
    const bestLlama = (xs: LevelResult[]): LevelResult[] => {
      let best: LevelResult[] = [];
      for (const t of llamaThreads) {
        const mine = xs.filter((x) => x.threads === t);
        if (mine.length && (!best.length || med(mine, 'tokPerS') > med(best, 'tokPerS'))) best = mine;
      }
      return best;
    };
    const rows = levels.map((c) => {
      const x = runs[String(c)]!;
      const l = bestLlama(x.llama);
      return [
        String(c),
        fmt(med(x.odsi, 'tokPerS')),
        fmt(med(x.odsi, 'itlP50')),
        fmt(med(x.odsi, 'itlP95')),
        fmt(medCpu(x.odsi, 'totalMsPerToken')),
        fmt(medCpu(x.odsi, 'gatewayMsPerToken')),
        fmt(medCpu(x.odsi, 'coresInUse'), 2),
        // each node's mean batch (sessions per iteration), median over the runs
        x.odsi[0]?.meanBatch?.map((_, i) => fmt(median(x.odsi.map((r) => r.meanBatch![i]!)), 1)).join('/') ?? '—',
        ...llamaThreads.map((t) =>
          fmt(
            med(
              x.llama.filter((y) => y.threads === t),
              'tokPerS',
            ),
          ),
        ),
        fmt(med(l, 'itlP50')),
        fmt(med(l, 'itlP95')),
      ];
    });
    console.log(
      `\n${dtype}: aggregate tokens/s, inter-token latency (ms) and CPU (ms per token, all processes / the gateway's), medians of ${reps}`,
    );
    console.log(
      table(
        [
          'streams',
          'odsi tok/s',
          'p50',
          'p95',
          'CPU/tok',
          'gw CPU/tok',
          'cores',
          'batch',
          ...llamaThreads.map((t) => `llama.cpp ${t} thr`),
          'p50',
          'p95',
        ],
        rows,
      ),
    );
    const one = med(demoRuns.one, 'tokPerS');
    const eight = med(demoRuns.eight, 'tokPerS');
    const ratios = demoRuns.eight.map((e, i) => e.tokPerS / demoRuns.one[i]!.tokPerS);
    const first = runs[String(levels[0])]!;
    const last = runs[String(levels.at(-1))]!;
    const cores = Math.min(threads, cpus().length);
    // CPU-bound ceiling of the ratio: what the CPU per token at each end allows on this many cores
    const ceiling = (a: LevelResult[], b: LevelResult[]) =>
      (medCpu(a, 'totalMsPerToken') / medCpu(b, 'totalMsPerToken')) * (cores / Math.min(cores, medCpu(a, 'coresInUse')));
    // aggregate = cores in use ÷ CPU per token, so the ratio of two levels is exactly (CPU per token
    // gained) × (cores gained); the ceiling is that ratio had the higher level all the cores
    const summary = {
      scaling: med(last.odsi, 'tokPerS') / med(first.odsi, 'tokPerS'),
      cpuPerTokenGain: medCpu(first.odsi, 'totalMsPerToken') / medCpu(last.odsi, 'totalMsPerToken'),
      coresGain: medCpu(last.odsi, 'coresInUse') / medCpu(first.odsi, 'coresInUse'),
      scalingCpuBound: ceiling(first.odsi, last.odsi),
      vsLlamaAtMax: lrs.length ? med(last.odsi, 'tokPerS') / med(bestLlama(last.llama), 'tokPerS') : undefined,
      llamaThreadsAtMax: lrs.length ? bestLlama(last.llama)[0]?.threads : undefined,
      demo: {
        oneTokPerS: one,
        eightTokPerS: eight,
        ratioMedian: median(ratios),
        ratios,
        ratioCpuBound: ceiling(demoRuns.one, demoRuns.eight),
      },
    };
    console.log(
      `${dtype}: ${levels.at(-1)} streams = ${fmt(summary.scaling, 2)}× the ${levels[0]}-stream aggregate ` +
        `(CPU per token ${fmt(summary.cpuPerTokenGain, 2)}× less, ${fmt(summary.coresGain, 2)}× the cores; ceiling with all ${cores} cores ${fmt(summary.scalingCpuBound, 2)}×)` +
        (summary.vsLlamaAtMax !== undefined
          ? `, ${fmt(summary.vsLlamaAtMax, 2)}× llama.cpp's best (${summary.llamaThreadsAtMax} threads)`
          : '') +
        `; demo check: 8 concurrent ${fmt(eight)} tok/s vs one ${fmt(one)} tok/s = ${fmt(summary.demo.ratioMedian, 2)}× (target ≥ 3×; CPU-bound ceiling ${fmt(summary.demo.ratioCpuBound, 2)}×)`,
    );
    // the other backends against the first, level by level: medians, and the median of per-run ratios
    const backends = Object.fromEntries(
      Object.entries(otherRuns).map(([name, byLevel]) => [
        name,
        Object.fromEntries(
          levels.map((c) => {
            const mine = byLevel[String(c)]!;
            const base = runs[String(c)]!.odsi;
            const row = {
              tokPerS: med(mine, 'tokPerS'),
              cpuMsPerToken: medCpu(mine, 'totalMsPerToken'),
              firstTokPerS: med(base, 'tokPerS'),
              firstCpuMsPerToken: medCpu(base, 'totalMsPerToken'),
              tokPerSRatio: median(mine.map((m, i) => base[i]!.tokPerS / m.tokPerS)),
              cpuRatio: median(mine.map((m, i) => m.cpu!.totalMsPerToken / base[i]!.cpu!.totalMsPerToken)),
            };
            console.log(
              `${dtype} c=${c}: ${swarmEnvs[0]!.name} ${fmt(row.firstTokPerS)} tok/s, ${fmt(row.firstCpuMsPerToken)} ms CPU/token vs ` +
                `${name} ${fmt(row.tokPerS)} tok/s, ${fmt(row.cpuMsPerToken)} ms: ${fmt(row.tokPerSRatio, 2)}× the aggregate, ${fmt(row.cpuRatio, 2)}× less CPU per token`,
            );
            return [String(c), { runs: mine, ...row }];
          }),
        ),
      ]),
    );
    (out.results as Record<string, unknown>)[dtype] = {
      nodeCompute: compute,
      runs,
      demo: demoRuns,
      summary,
      ...(others.length ? { swarms: swarmEnvs.map((e) => e.name), backends } : {}),
    };
  }
  out.loadAvgAfter = describeMachine().loadAvg;
  const dest = args.out ?? resolve(ROOT, `bench/results/concurrency${quick ? '-quick' : ''}.json`);
  writeResult(dest, out);
  console.log(`\nwrote ${dest}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
