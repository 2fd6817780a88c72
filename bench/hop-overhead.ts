// Per-hop overhead of the token path on loopback, from the gateway's per-token timelines, with
// accountability on and off side by side (issue 13, item 3: target ≤ 0.5 ms median and ≤ 2 ms
// p99 per hop with accountability on).
//
//   node --import ./dist/src/util/polyfill.js dist/bench/hop-overhead.js [--model FILE] [--engine reference|ort|llama]
//        [--rounds 6] [--warmup 16] [--hops 3] [--compute-thread worker|main] [--pin] [--b-env K=V,…] [--b-compute-thread main] [--tokens 48] [--profile [--profile-dir DIR]] [--out FILE]
//
// Two identical 3-node (--hops) swarms of real `odsi node` processes on 127.0.0.1 (default stories260K,
// where compute is ~0.1 ms per hop, so what is left is overhead): one with receipts signed per
// step per hop and checked at the gateway, one with ODSI_ACCOUNTABILITY=0 and no checks. No
// audits (rate 0): this is the per-step cost, not the auditing. Each swarm is driven by its own
// production Gateway, and the accountable swarm also by a second one that releases serially
// (pipelineDepth 0: each step goes out only once the previous step's RECEIPTS verified, as
// before the gateway pipelined receipts); greedy generations rotate among the three so load
// drift hits all. They first run --warmup generations each, unmeasured (the first kept as the
// cold figure): a freshly started swarm is about twice as slow per hop for its first ~2000 steps
// per node, and a node serves for hours, so the rounds measure the steady state.
//
// Per decode step: overhead = (step wall time at the gateway − Σ compute of every stage, the
// gateway's embed and head included) / (k + 1) transfers; the step wall time is the time
// between two tokens released to the caller, and with accountability on a token is released
// once the last hop's RECEIPTS for its step (act 1.3.0, sent after the RESULT) verified; by
// default the gateway sends the next steps meanwhile (up to PIPELINE_DEPTH tokens held).
// Also the same over the step's own round trip on the route (timeline routeMs: STEP sent →
// RESULT in, less the hops' compute, / (k + 1)), which leaves out the gateway's embed, head and
// sampling and the wait for the token's release; the hops' own queue time (receive → compute
// start: decoding, the commitment, waiting for the CPU) and send time (serialising the output),
// summed over the hops; the CPU the three node processes spent per step (/proc, all their
// threads), per swarm; and how many cores the nodes and this process (the gateway) kept busy
// while decoding (their CPU from a generation's first token until it returned, over that wall
// time): near the machine's core count, a hop's message waits for a CPU as well as for the wire.
//
// --compute-thread worker|main: where every swarm's nodes and gateway head compute (default: the
// worker, as `odsi node`); main shows what the calling thread saves with accountability off too.
//
// --pin gives the gateway (this process) and each hop's node cores of their own (taskset(1); the
// swarms take turns, so node i of every swarm shares block i), the machine's cores split evenly,
// and each node that many engine threads: processes that share no core, as on separate machines
// (their caches beyond a core's own still shared). Needs hops + 1 cores.
//
// --b-env K=V,… replaces 'serial' with 'on-b': another accountable swarm whose nodes get these
// environment variables (e.g. ODSI_CRYPTO_WORKER=1), interleaved with the others: an A/B of a
// node setting within one run. --b-compute-thread main|worker does the same for where the nodes'
// engine and the gateway's LM head compute (`--compute-thread`); the two may be combined.
//
// --profile runs the nodes of the 'on' swarm under V8's CPU profiler from the end of the warm-up
// (bench/lib/cpu-profile-preload.ts) and reports where their non-idle time goes, by source file,
// and odsi's own functions by self time; --profile-dir keeps the .cpuprofile files there.

import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { splitLayers } from '../src/engine/create.js';
import type { ComputeThread } from '../src/engine/types.js';
import { NodeProcess } from '../src/node/process.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';
import { dist, stepSample, type StepSample } from './lib/timeline.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    engine: { type: 'string', default: 'reference' },
    rounds: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '16' },
    hops: { type: 'string', default: '3' },
    'b-env': { type: 'string' },
    'compute-thread': { type: 'string' },
    pin: { type: 'boolean', default: false },
    'b-compute-thread': { type: 'string' },
    tokens: { type: 'string', default: '48' },
    profile: { type: 'boolean', default: false },
    'profile-dir': { type: 'string' },
    out: { type: 'string' },
  },
});
/** --b-env K=V,…: variant 'on-b' (in place of 'serial'), an accountable swarm whose nodes get these environment variables (an A/B of a node setting) */
const B_ENV: Record<string, string> | undefined = args['b-env']
  ? Object.fromEntries(
      args['b-env'].split(',').map((kv) => {
        const i = kv.indexOf('=');
        if (i < 1) throw new Error(`--b-env: KEY=VALUE[,KEY=VALUE], got ${kv}`);
        return [kv.slice(0, i), kv.slice(i + 1)];
      }),
    )
  : undefined;
const threadArg = (flag: string): ComputeThread | undefined => {
  const v = args[flag as 'compute-thread' | 'b-compute-thread'];
  if (v !== undefined && v !== 'worker' && v !== 'main') throw new Error(`--${flag}: worker or main, got ${v}`);
  return v;
};
/** --compute-thread worker|main: where the nodes' engine and the gateway's LM head compute in every swarm (StageOptions.computeThread) */
const THREAD = threadArg('compute-thread');
/** --b-compute-thread worker|main: variant 'on-b', an accountable swarm whose nodes and gateway head compute on that thread (StageOptions.computeThread) */
const B_THREAD = threadArg('b-compute-thread');
const B = !!B_ENV || !!B_THREAD;
type Variant = 'on' | 'serial' | 'off' | 'on-b';
/**
 * accountability on (the gateway pipelines receipts, its default), on with each step sent only
 * after the last one verified, off; with --b-env, on-b instead of serial (serial's gateway drives
 * the 'on' swarm's nodes too, which then warm up twice as fast as on-b's: no fair A/B)
 */
const VARIANTS: readonly Variant[] = B ? ['on', 'on-b', 'off'] : ['on', 'serial', 'off'];
const LABELS: Record<Variant, string> = {
  on: 'accountability on',
  serial: 'on, serial release',
  off: 'off',
  'on-b': `on, ${[args['b-env'], B_THREAD && `compute thread ${B_THREAD}`].filter(Boolean).join(', ')}`,
};
/** a record with one entry per variant */
const perVariant = <T>(f: (v: Variant) => T): Record<Variant, T> =>
  Object.fromEntries(VARIANTS.map((v) => [v, f(v)])) as Record<Variant, T>;
const MODEL = resolve(args.model ?? join(ROOT, '../shared/models/stories260K/stories260K.gguf'));
const ENGINE = args.engine as 'reference' | 'ort' | 'llama';
if (ENGINE !== 'reference' && ENGINE !== 'ort' && ENGINE !== 'llama')
  throw new Error(`--engine: reference, ort or llama, got ${String(ENGINE)}`);
const ROUNDS = Number(args.rounds);
/** unmeasured generations per gateway before the rounds, rotated like them (V8 and the heap reach their steady state) */
const WARMUP = Number(args.warmup);
if (!Number.isInteger(WARMUP) || WARMUP < 1) throw new Error(`--warmup: a positive integer, got ${args.warmup}`);
const TOKENS = Number(args.tokens);
/** nodes in the route (each its own process; the gateway runs in this one) */
const HOPS = Number(args.hops);
if (!Number.isInteger(HOPS) || HOPS < 1) throw new Error(`--hops: a positive integer, got ${args.hops}`);
/** --pin: the cores of this process (the gateway) and of each hop's node, `per` each */
const PIN = args.pin ? pinLayout(HOPS, availableParallelism()) : undefined;
function pinLayout(hops: number, cores: number): { per: number; gateway: string; nodes: string[] } {
  const per = Math.floor(cores / (hops + 1));
  if (per < 1) throw new Error(`--pin: the gateway and ${hops} nodes need ${hops + 1} cores, this machine has ${cores}`);
  const block = (i: number) => (per === 1 ? `${i}` : `${i * per}-${i * per + per - 1}`);
  return { per, gateway: block(0), nodes: Array.from({ length: hops }, (_, i) => block(i + 1)) };
}
/** the CPUs a process may run on, as the kernel reports them */
const cpusOf = (pid: number): string => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
const OUT = args.out ?? join(ROOT, `bench/results/hop-overhead${args.profile ? '-profiled' : ''}.json`);

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

/** self time of a V8 .cpuprofile by source file (package name for node_modules), ms; odsi's own functions by self time into `fns` */
function profileByFile(file: string, fns: Map<string, number>): Map<string, number> {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const out = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const { functionName, url } = n.callFrame;
    const own = url.includes('/node_modules/') ? null : /\/dist\/(src\/.*)$/.exec(url);
    if (own) {
      const k = `${functionName || '(anonymous)'} ${own[1]}`;
      fns.set(k, (fns.get(k) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
    }
    let key: string;
    if (functionName === '(idle)' || functionName === '(program)' || functionName === '(garbage collector)') key = functionName;
    else if (!url) key = `(native) ${functionName}`;
    else {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
      key = m ? m[1]! : url.startsWith('node:') ? url : basename(url);
    }
    out.set(key, (out.get(key) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  }
  return out;
}

/** user + system CPU ms of a process so far (Linux /proc; NaN elsewhere or once it is gone) */
function cpuMsOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in clock ticks of 1/100 s
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(machineLine(machine));
  // every thread of this process now, and those it starts later (engines, workers), on the gateway's cores
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', PIN.gateway, String(process.pid)], { stdio: 'ignore' });
  const src = openModel(MODEL);
  const c = src.config;
  const { modelId } = modelIdentity(src);
  src.close();
  const ranges = splitLayers(c.nLayers, HOPS);
  const dir = mkdtempSync(join(tmpdir(), 'odsi-hop-'));
  const profDir = join(dir, 'prof');
  mkdirSync(profDir);
  const nodes: NodeProcess[] = [];
  const gateways: Gateway[] = [];
  try {
    /** the next swarm started runs its nodes under the profiler (only the first, the 'on' one) */
    let profiled = !!args.profile;
    /** a swarm of HOPS node processes and its gateway; the node pids go with it */
    const swarm = async (
      on: boolean,
      extraEnv: Record<string, string> = {},
      computeThread: ComputeThread | undefined = THREAD,
    ): Promise<{ gw: Gateway; pids: number[] }> => {
      const ns = await Promise.all(
        ranges.map((range, i) =>
          NodeProcess.start({
            model: MODEL,
            range,
            modelId,
            engine: ENGINE,
            announceIntervalMs: 600_000,
            cpus: PIN?.nodes[i],
            extraArgs: [...(computeThread ? ['--compute-thread', computeThread] : []), ...(PIN ? ['--threads', String(PIN.per)] : [])],
            env: {
              ODSI_ACCOUNTABILITY: on ? '1' : '0',
              // --cpu-prof is refused in NODE_OPTIONS: a preloaded module runs the inspector's profiler
              NODE_OPTIONS: profiled ? `--import ${join(ROOT, 'dist/bench/lib/cpu-profile-preload.js')}` : undefined,
              ODSI_CPU_PROF_DIR: profiled ? profDir : undefined,
              ...extraEnv,
            },
          }),
        ),
      );
      profiled = false; // only the first swarm (the 'on' one) runs under the profiler
      nodes.push(...ns);
      const gw = await Gateway.start({
        modelPath: MODEL,
        engine: ENGINE,
        computeThread,
        peers: ns.map((n) => n.candidate(1)),
        accountability: { enabled: on, auditRate: 0 },
      });
      gateways.push(gw);
      if (on !== !!gw.accountability) throw new Error(`accountability did not turn ${on ? 'on' : 'off'}`);
      return { gw, pids: ns.map((n) => n.info.pid) };
    };
    const onSwarm = await swarm(true);
    // the same nodes behind a gateway that sends each step only once the previous one's receipts verified (pipelineDepth 0)
    const serial = B
      ? undefined
      : await Gateway.start({
          modelPath: MODEL,
          engine: ENGINE,
          computeThread: THREAD,
          peers: nodes.slice(0, HOPS).map((n) => n.candidate(1)),
          accountability: { enabled: true, auditRate: 0 },
          pipelineDepth: 0,
        });
    if (serial) gateways.push(serial);
    const offSwarm = await swarm(false);
    const bSwarm = B ? await swarm(true, B_ENV ?? {}, B_THREAD ?? THREAD) : undefined;
    if (PIN)
      console.log(`pinned (Cpus_allowed_list): gateway ${cpusOf(process.pid)}, nodes ${nodes.map((n) => cpusOf(n.info.pid)).join(' ')}`);
    // each variant's gateway, and its node processes (CPU of all their threads: main, crypto worker, engine)
    const of = {
      on: onSwarm,
      off: offSwarm,
      ...(serial ? { serial: { gw: serial, pids: onSwarm.pids } } : {}),
      ...(bSwarm ? { 'on-b': bSwarm } : {}),
    } as Record<Variant, { gw: Gateway; pids: number[] }>;
    const on = onSwarm.gw;
    const nodeCpu = perVariant(() => ({ ms: 0, steps: 0 }));
    /** CPU of the nodes and of this process (the gateway, and the bench's own bookkeeping) while decoding, and the decode's wall time */
    const decodeLoad = perVariant(() => ({ nodeMs: 0, gatewayMs: 0, wallMs: 0 }));
    const ownCpuMs = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    const cpuOf = (pids: number[]) => pids.reduce((a, pid) => a + cpuMsOf(pid), 0);
    const prompt = on.tokenizer.encode('Once upon a time, there was a little', { addBos: on.addBos });
    /** one greedy generation; with `load`, the CPU and wall time from its first token until it returned are added there */
    const run = async (
      gw: Gateway,
      load?: { pids: number[]; into: { nodeMs: number; gatewayMs: number; wallMs: number } },
    ): Promise<StepSample[]> => {
      const steps: StepSample[] = [];
      const mark = () => ({ nodeMs: load ? cpuOf(load.pids) : 0, gatewayMs: ownCpuMs(), at: performance.now() });
      let from: ReturnType<typeof mark> | undefined;
      await gw.run({
        promptIds: prompt,
        maxTokens: TOKENS,
        sampling: { temperature: 0 },
        onToken: (t) => {
          if (t.step > 0) steps.push(stepSample(t.timeline));
          if (load && !from) from = mark();
        },
      });
      if (load && from) {
        const to = mark();
        load.into.nodeMs += to.nodeMs - from.nodeMs;
        load.into.gatewayMs += to.gatewayMs - from.gatewayMs;
        load.into.wallMs += to.at - from.at;
      }
      return steps;
    };
    // warm-up: the first generations after start-up are about twice as slow per hop: V8 has not
    // optimised the hot path yet, and the accountable part of it, run once per step, takes some 500
    // steps (bench/README.md, session 18); a node serves for hours, so the rounds measure the steady
    // state. The first warm-up round is kept as the cold figure.
    const cold = perVariant(() => NaN);
    const warmupCurve: ({ round: number } & Record<Variant, number>)[] = [];
    /** per warm-up generation, the CPU a decode step cost the nodes and the gateway: whether a cold step costs more work, or waits longer */
    const warmupCpu: ({ round: number } & Record<Variant, { nodeMsPerStep: number; gatewayMsPerStep: number }>)[] = [];
    for (let r = 0; r < WARMUP; r++) {
      const med: Record<string, number> = {};
      const cpu: Record<string, { nodeMsPerStep: number; gatewayMsPerStep: number }> = {};
      for (let i = 0; i < VARIANTS.length; i++) {
        const which = VARIANTS[(i + r) % VARIANTS.length]!;
        const into = { nodeMs: 0, gatewayMs: 0, wallMs: 0 };
        const s = await run(of[which].gw, { pids: of[which].pids, into });
        med[which] = dist(s.map((x) => (x.stepMs - x.computeMs) / (x.hops + 1))).p50;
        const per = (ms: number) => Math.round((ms / Math.max(1, s.length)) * 1000) / 1000;
        cpu[which] = { nodeMsPerStep: per(into.nodeMs), gatewayMsPerStep: per(into.gatewayMs) };
      }
      warmupCurve.push({ round: r, ...perVariant((v) => med[v]!) });
      warmupCpu.push({ round: r, ...perVariant((v) => cpu[v]!) });
      if (r === 0) Object.assign(cold, med);
    }
    console.log(
      `warm-up, ${WARMUP} generations per gateway: per-hop overhead median on ${cold.on.toFixed(3)} → ${warmupCurve.at(-1)!.on.toFixed(3)} ms, off ${cold.off.toFixed(3)} → ${warmupCurve.at(-1)!.off.toFixed(3)} ms (first → last)`,
    );
    // profile the steady state only: the preloaded profiler starts on SIGUSR2
    if (args.profile) for (const n of nodes.slice(0, HOPS)) process.kill(n.info.pid, 'SIGUSR2');
    const got = perVariant((): StepSample[] => []);
    const perRound: ({ round: number } & Record<Variant, number>)[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const med: Record<string, number> = {};
      for (let i = 0; i < VARIANTS.length; i++) {
        const which = VARIANTS[(i + r) % VARIANTS.length]!;
        const pids = of[which].pids;
        const cpu0 = cpuOf(pids);
        const s = await run(of[which].gw, { pids, into: decodeLoad[which] });
        nodeCpu[which].ms += cpuOf(pids) - cpu0;
        nodeCpu[which].steps += s.length + 1; // the decode steps and the prefill
        got[which].push(...s);
        med[which] = dist(s.map((x) => (x.stepMs - x.computeMs) / (x.hops + 1))).p50;
      }
      perRound.push({ round: r, ...perVariant((v) => med[v]!) });
      console.log(`round ${r + 1}/${ROUNDS}: per-hop overhead median ${VARIANTS.map((v) => `${v} ${med[v]!.toFixed(3)}`).join(', ')} ms`);
    }
    const summary = (xs: StepSample[]) => {
      const k = xs[0]?.hops ?? 3;
      return {
        steps: xs.length,
        hops: k,
        perHopOverheadMs: dist(xs.map((x) => (x.stepMs - x.computeMs) / (x.hops + 1))),
        stepMs: dist(xs.map((x) => x.stepMs)),
        computeMs: dist(xs.map((x) => x.computeMs)),
        hopQueueMsPerHop: dist(xs.map((x) => x.hopQueueMs / x.hops)),
        hopSendMsPerHop: dist(xs.map((x) => x.hopSendMs / x.hops)),
        // what is left per transfer after the hops' own queue and send time: the wire (encode,
        // Noise, Yamux, loopback TCP, decode) and the gateway's receipt check and sampling
        restPerTransferMs: dist(xs.map((x) => (x.stepMs - x.computeMs - x.hopQueueMs - x.hopSendMs) / (x.hops + 1))),
        // the same over the step's own round trip on the route (STEP sent → RESULT in): without the
        // gateway's embed, head and sampling and without the wait for the token's release (its receipts)
        perHopOverRouteMs: dist(xs.filter((x) => x.routeMs !== undefined).map((x) => (x.routeMs! - x.hopComputeMs) / (x.hops + 1))),
      };
    };
    const res = perVariant((v) => summary(got[v]));
    const nodeCpuMsPerStep = perVariant((v) => Math.round((nodeCpu[v].ms / nodeCpu[v].steps) * 1000) / 1000);
    // while decoding, how many of the machine's cores the swarm kept busy (nodes' and gateway's CPU over wall time)
    const decodeCoresBusy = perVariant(
      (v) => Math.round(((decodeLoad[v].nodeMs + decodeLoad[v].gatewayMs) / decodeLoad[v].wallMs) * 100) / 100,
    );
    const decodeGatewayShare = perVariant((v) => Math.round((decodeLoad[v].gatewayMs / decodeLoad[v].wallMs) * 100) / 100);
    const targets = [
      {
        what: 'per-hop overhead median, accountability on (ms)',
        target: 0.5,
        value: res.on.perHopOverheadMs.p50,
        met: res.on.perHopOverheadMs.p50 <= 0.5,
      },
      {
        what: 'per-hop overhead p99, accountability on (ms)',
        target: 2,
        value: res.on.perHopOverheadMs.p99,
        met: res.on.perHopOverheadMs.p99 <= 2,
      },
    ];
    let profile: { file: string; selfMs: number; share: number }[] | undefined;
    let ownFunctions: { fn: string; selfMs: number; share: number }[] | undefined;
    for (const g of gateways) await g.close();
    gateways.length = 0;
    if (args.profile) {
      // profiles are written when the node processes exit (SIGTERM → clean exit)
      await Promise.all(nodes.map((n) => n.stop(10_000)));
      const total = new Map<string, number>();
      const fns = new Map<string, number>();
      for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
        for (const [k, v] of profileByFile(join(profDir, f), fns)) total.set(k, (total.get(k) ?? 0) + v);
        if (args['profile-dir']) {
          mkdirSync(args['profile-dir'], { recursive: true });
          copyFileSync(join(profDir, f), join(args['profile-dir'], f));
        }
      }
      const busy = [...total].filter(([k]) => k !== '(idle)').reduce((a, [, v]) => a + v, 0);
      profile = [...total]
        .filter(([k]) => k !== '(idle)')
        .sort((a, b) => b[1] - a[1])
        .slice(0, 25)
        .map(([file, ms]) => ({ file, selfMs: Math.round(ms), share: Math.round((ms / busy) * 1000) / 1000 }));
      ownFunctions = [...fns]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 25)
        .map(([fn, ms]) => ({ fn, selfMs: Math.round(ms * 10) / 10, share: Math.round((ms / busy) * 10000) / 10000 }));
    }
    const machineAfter = describeMachine();
    console.log(`\nload average at end: ${machineAfter.loadAvg.join('/')}`);
    const row = (name: string, f: (s: typeof res.on) => { p50: number; p99: number }) => [
      name,
      ...VARIANTS.map((v) => `${f(res[v]).p50.toFixed(3)} / ${f(res[v]).p99.toFixed(3)}`),
    ];
    console.log(
      table(
        ['ms, median / p99', ...VARIANTS.map((v) => LABELS[v])],
        [
          row('per-hop overhead', (s) => s.perHopOverheadMs),
          row('step wall time', (s) => s.stepMs),
          row('Σ compute (all stages)', (s) => s.computeMs),
          row('hop queue, per hop', (s) => s.hopQueueMsPerHop),
          row('hop send, per hop', (s) => s.hopSendMsPerHop),
          row('rest per transfer', (s) => s.restPerTransferMs),
          row('per hop, route round trip only', (s) => s.perHopOverRouteMs),
        ],
      ),
    );
    console.log(
      `node CPU per step (${HOPS} node processes, all threads, /proc): ${VARIANTS.map((v) => `${v} ${nodeCpuMsPerStep[v]}`).join(', ')} ms`,
    );
    console.log(
      `cores kept busy while decoding (nodes' + gateway's CPU / wall, of ${machine.cores}): ${VARIANTS.map((v) => `${v} ${decodeCoresBusy[v]} (gateway ${decodeGatewayShare[v]})`).join(', ')}`,
    );
    for (const t of targets) console.log(`target ${t.what} ≤ ${t.target}: ${t.value} ${t.met ? 'met' : 'MISSED'}`);
    if (profile) {
      console.log('\nnode CPU (accountability on), self time by file, top entries:');
      for (const p of profile.slice(0, 15)) console.log(`  ${(p.share * 100).toFixed(1).padStart(5)} %  ${p.selfMs} ms  ${p.file}`);
      console.log(`\nodsi's own functions, self time, top entries:`);
      for (const p of ownFunctions!.slice(0, 15)) console.log(`  ${(p.share * 100).toFixed(2).padStart(5)} %  ${p.selfMs} ms  ${p.fn}`);
    }
    writeResult(OUT, {
      what: `per-hop overhead of a decode step ((step wall − Σ compute) / (k+1)) on a ${HOPS}-node loopback swarm, from the gateway per-token timelines, accountability on (receipts pipelined, the gateway default), on with serial release (pipelineDepth 0: each step sent once the previous one receipts verified) and off${THREAD ? `, nodes and gateway head computing on the ${THREAD} thread` : ''}${B_ENV ? `, and on with the nodes' environment ${args['b-env']} (on-b)` : ''}${B_THREAD ? `, and on with the nodes' engine and the gateway's head computing on the ${B_THREAD} thread (on-b)` : ''}, interleaved, no audits`,
      note: `real odsi node processes on 127.0.0.1 sharing this machine's ${machine.cores} cores with the gateway and with other jobs (see loadAvg)`,
      machine,
      loadAvgAtEnd: machineAfter.loadAvg,
      options: {
        // inside the checkout: relative to it (bench/tmp/…); else to its parent (shared/models/…)
        model: relative(MODEL.startsWith(`${ROOT}/`) ? ROOT : resolve(ROOT, '..'), MODEL),
        engine: ENGINE,
        ranges,
        rounds: ROUNDS,
        warmup: WARMUP,
        hops: HOPS,
        computeThread: THREAD ?? 'worker',
        pin: PIN,
        bEnv: B_ENV,
        bComputeThread: B_THREAD,
        tokens: TOKENS,
        profiled: args.profile,
      },
      ...res,
      nodeCpuMsPerStep,
      decodeCoresBusy,
      decodeGatewayCoresBusy: decodeGatewayShare,
      perRoundMedianPerHopMs: perRound,
      coldMedianPerHopMs: cold,
      warmupMedianPerHopMs: warmupCurve,
      warmupCpuPerStepMs: warmupCpu,
      nodeCpuProfile: profile,
      nodeOwnFunctions: ownFunctions,
      targets,
    });
    console.log(`\nwrote ${OUT}`);
  } finally {
    for (const g of gateways) await g.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
