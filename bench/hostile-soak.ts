// Hostile-peer soak: a legitimate greedy generation through 3 real `odsi node` processes
// (stories260K split 2/2/1) while several attacker peers (src/testing/attacker.ts, in this
// process, each with its own key) run every resource attack in parallel against all three
// nodes: sessions up to and over the per-peer caps, idle streams, unfinished chunked messages,
// oversize lengths, STEP floods, re-execution requests and bulk stream opens.
//
// Phases: unattacked baseline → attacked (same requests, attackers running in this process,
// then the same attackers from a child process, off the gateway's event loop) → attackers
// leave, settle → after. Reported: the greedy text of every phase (must equal the baseline), per-token
// decode latency p50/p95 baseline vs attacked (target: p95 ≤ 2×), node RSS (VmRSS) before /
// peak during / after (target: after within 10 % of before), the refusals the attackers got.
//
// Run: npx tsc -p tsconfig.json && node --import ./dist/src/util/polyfill.js dist/bench/hostile-soak.js [--out]
// (--out writes bench/results/hostile-soak.json; --attackers N, --attack-s S, --settle-s S (default 60), --rounds N)

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { NodeProcess } from '../src/node/process.js';
import { ACT_PROTOCOL } from '../src/protocol/messages.js';
import { Attacker, type AttackReport, type AttackTarget } from '../src/testing/attacker.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { table, writeResult } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const MODEL = resolve(ROOT, '../shared/models/stories260K/stories260K.gguf');
const GOLDEN = resolve(ROOT, '../shared/models/stories260K/golden.json');

const { values: args } = parseArgs({
  options: {
    out: { type: 'boolean', default: false },
    attackers: { type: 'string', default: '3' },
    'attack-s': { type: 'string', default: '35' },
    rounds: { type: 'string', default: '3' },
    'settle-s': { type: 'string', default: '60' },
    // internal: run the attackers of this JSON AttackPlan and print their reports
    'attack-child': { type: 'string' },
  },
});

/** the limits every node runs with (docs/threat-model.md, "Limits per peer") */
// The legitimate traffic of the attacked phases (thousands of steps) leaves receipts, commitments
// and signed slots that a node keeps for auditors through the challenge window (10 min by
// default): honest state, not attack residue. A 30 s window lets it expire within the settle
// time, so that "after" compares like with like.
const AUDIT_WINDOW_MS = 30_000;
const NODE_ARGS = [
  '--kv-budget-mb', '4',
  '--max-sessions-per-peer', '16',
  '--max-streams-per-peer', '128',
  '--stream-idle-timeout', '5000',
  '--audit-window', String(AUDIT_WINDOW_MS),
];

interface Case {
  prompt: string;
  prompt_tokens: number[];
  generated_tokens: number[];
}

/** one pass over the golden prompts: tokens per prompt; per decode step the gateway's wall time and the nodes' queue + compute */
interface Pass {
  tokens: number[][];
  stepMs: number[];
  nodeMs: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface MemoryMb {
  heapUsed: number;
  heapTotal: number;
  external: number;
  /** RSS minus the V8 heap's reservation: code, native libraries, malloc arenas */
  outsideHeap: number;
}

/** The node's heap figures from its Prometheus endpoint (prom-client's default process metrics). */
async function memoryOf(metricsUrl: string | undefined, rss: number): Promise<MemoryMb | undefined> {
  if (!metricsUrl) return undefined;
  const text = await (await fetch(metricsUrl, { signal: AbortSignal.timeout(5000) })).text();
  const value = (name: string) => Number(new RegExp(`^\\w*${name} ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;
  const heapTotal = value('nodejs_heap_size_total_bytes');
  return {
    heapUsed: round(value('nodejs_heap_size_used_bytes')),
    heapTotal: round(heapTotal),
    external: round(value('nodejs_external_memory_bytes')),
    outsideHeap: round(rss - heapTotal),
  };
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** One pass over the golden prompts: the tokens of each, and every decode step's latency. */
async function legitimatePass(gw: Gateway, cases: Case[], tag: string): Promise<Pass> {
  const tokens: number[][] = [];
  const stepMs: number[] = [];
  const nodeMs: number[] = [];
  for (const [i, c] of cases.entries()) {
    let last = 0;
    const r = await gw.run({
      promptIds: c.prompt_tokens,
      maxTokens: c.generated_tokens.length,
      sampling: { temperature: 0 },
      sessionId: `soak-${tag}-${i}-${Date.now()}`,
      onToken: (t) => {
        const now = performance.now();
        if (t.step > 0) {
          // decode steps only: the prefill is one long step
          stepMs.push(now - last);
          // the nodes' own share: queueing behind other work plus compute, summed over the remote hops
          nodeMs.push(t.timeline.hops.reduce((a, h) => a + (h.queueMs !== undefined ? h.queueMs + h.computeMs : 0), 0));
        }
        last = now;
      },
    });
    tokens.push(r.tokens);
  }
  return { tokens, stepMs, nodeMs };
}

/** Runs every attack against every target, round after round, until the deadline. */
async function attackLoop(a: Attacker, targets: AttackTarget[], deadline: number, reports: AttackReport[]): Promise<void> {
  const guard = async (p: Promise<AttackReport>) => {
    try {
      reports.push(await p);
    } catch (e) {
      reports.push({ attack: 'error', tried: 1, accepted: 0, refusals: { [(e as Error).message.slice(0, 60)]: 1 }, closedByNode: 0 });
    }
  };
  while (Date.now() < deadline) {
    for (const t of targets) {
      if (Date.now() >= deadline) break;
      await Promise.all([
        guard(a.openSessions(t, 20, 64, 5000)),
        guard(a.holdIdleStreams(t, 40, 1000)),
        guard(a.unfinishedMessage(t, 512 * 1024, 32 * 1024)),
        guard(a.oversizeLength(t)),
        guard(a.floodSteps(t, 200, undefined, 5000)),
        guard(a.reexecRequests(t, 4, 8, 2, 5000)),
        guard(a.openStreamsBulk(t, 100, ACT_PROTOCOL, 500)),
      ]);
      await sleep(250);
    }
  }
}

/** What the attackers are told: the model, the nodes, how many attackers and for how long. */
interface AttackPlan {
  modelId: string;
  hidden: number;
  targets: AttackTarget[];
  attackers: number;
  seconds: number;
}

/** Runs the plan's attackers in this process until its deadline; they leave at the end. */
async function runAttacks(plan: AttackPlan): Promise<AttackReport[]> {
  const attackers = await Promise.all(Array.from({ length: plan.attackers }, () => Attacker.start({ modelId: plan.modelId, hidden: plan.hidden })));
  const deadline = Date.now() + plan.seconds * 1000;
  const reports: AttackReport[] = [];
  await Promise.all(attackers.map((a) => attackLoop(a, plan.targets, deadline, reports)));
  await Promise.all(attackers.map((a) => a.stop()));
  return reports;
}

/** The same attackers in a child process (this script with --attack-child): their CPU work is off the gateway's event loop. */
function runAttacksInChild(plan: AttackPlan): Promise<AttackReport[]> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--attack-child', JSON.stringify(plan)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const kill = setTimeout(() => child.kill('SIGKILL'), (plan.seconds + 60) * 1000);
  return new Promise((resolve, reject) =>
    child.on('exit', (code) => {
      clearTimeout(kill);
      if (code !== 0) return reject(new Error(`attacker child exited with ${code}`));
      resolve(JSON.parse(out) as AttackReport[]);
    }),
  );
}

/** Legitimate passes until the attacks end; per pass the tokens, with the latencies of every decode step. */
async function attackedPhase(gw: Gateway, cases: Case[], plan: AttackPlan, attacks: Promise<AttackReport[]>): Promise<Omit<Pass, 'tokens'> & { tokens: number[][][]; reports: AttackReport[] }> {
  const deadline = Date.now() + plan.seconds * 1000;
  let over = false;
  const reports = attacks.finally(() => (over = true));
  await sleep(2000); // the attacks are under way
  const r = { tokens: [] as number[][][], stepMs: [] as number[], nodeMs: [] as number[] };
  for (let i = 0; !over && Date.now() < deadline - 2000 && i < 50; i++) {
    const p = await legitimatePass(gw, cases, `attacked-${Date.now()}`);
    r.tokens.push(p.tokens);
    r.stepMs.push(...p.stepMs);
    r.nodeMs.push(...p.nodeMs);
  }
  return { ...r, reports: await reports };
}

function summarize(reports: AttackReport[]): Record<string, { tried: number; accepted: number; closedByNode: number; refusals: Record<string, number> }> {
  const out: Record<string, { tried: number; accepted: number; closedByNode: number; refusals: Record<string, number> }> = {};
  for (const r of reports) {
    const s = (out[r.attack] ??= { tried: 0, accepted: 0, closedByNode: 0, refusals: {} });
    s.tried += r.tried;
    s.accepted += r.accepted;
    s.closedByNode += r.closedByNode;
    for (const [k, v] of Object.entries(r.refusals)) s.refusals[k] = (s.refusals[k] ?? 0) + v;
  }
  return out;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const cases = (JSON.parse(readFileSync(GOLDEN, 'utf8')) as { cases: Case[] }).cases;
  const src = openModel(MODEL);
  const { modelId } = modelIdentity(src);
  const hidden = src.config.dim;
  src.close();
  const dir = mkdtempSync(join(tmpdir(), 'odsi-soak-'));
  const ranges: [number, number][] = [
    [0, 2],
    [2, 4],
    [4, 5],
  ];
  const nodes = await Promise.all(
    ranges.map((range, i) =>
      NodeProcess.start({ model: MODEL, range, identityFile: join(dir, `n${i}.key`), modelId, announceIntervalMs: 600_000, extraArgs: [...NODE_ARGS, '--metrics-port', '0'] }),
    ),
  );
  const gw = await Gateway.start({ modelPath: MODEL, peers: nodes.map((n) => n.candidate(1)) });
  const rss = () => nodes.map((n) => rssMb(n.info.pid));
  // where the RSS is: V8 heap (used / reserved), external (ArrayBuffers), the rest (code, native, malloc arenas)
  const memory = () => Promise.all(nodes.map((n) => memoryOf(n.info.metrics, rssMb(n.info.pid))));
  const rounds = Number(args.rounds);
  try {
    // warm-up (JIT, connections), then the unattacked baseline
    await legitimatePass(gw, cases.slice(0, 1), 'warmup');
    const base: Pass = { tokens: [], stepMs: [], nodeMs: [] };
    for (let r = 0; r < rounds; r++) {
      const p = await legitimatePass(gw, cases, `base${r}`);
      if (r === 0) base.tokens = p.tokens;
      base.stepMs.push(...p.stepMs);
      base.nodeMs.push(...p.nodeMs);
    }
    const rssBefore = rss();
    const memBefore = await memory();

    // attacked: the same passes while the attackers run, first in this process, then from a child process
    const targets: AttackTarget[] = nodes.map((n) => ({ peerId: n.peerId, addrs: n.info.addrs, start: n.info.start, end: n.info.end }));
    const plan: AttackPlan = { modelId, hidden, targets, attackers: Number(args.attackers), seconds: Number(args['attack-s']) };
    const rssPeak = rss();
    const sampler = setInterval(() => rss().forEach((v, i) => (rssPeak[i] = Math.max(rssPeak[i]!, v))), 500);
    const inProc = await attackedPhase(gw, cases, plan, runAttacks(plan));
    const outProc = await attackedPhase(gw, cases, plan, runAttacksInChild(plan));
    clearInterval(sampler);

    // the attackers have left: let the nodes free what they held, then measure again
    await sleep(Number(args['settle-s']) * 1000);
    const after = await legitimatePass(gw, cases, 'after');
    const rssAfter = rss();
    const memAfter = await memory();

    const same = (ts: number[][]) => ts.every((t, i) => JSON.stringify(t) === JSON.stringify(base.tokens[i]));
    const golden = base.tokens.every((t, i) => JSON.stringify(t) === JSON.stringify(cases[i]!.generated_tokens));
    const lat = (xs: number[]) => ({ n: xs.length, p50: round(pct(xs, 50)), p95: round(pct(xs, 95)), max: round(Math.max(...xs)) });
    const result = {
      bench: 'hostile-soak',
      machine: describeMachine(),
      model: 'stories260K',
      nodeArgs: NODE_ARGS,
      attackers: plan.attackers,
      attackSeconds: Number(args['attack-s']),
      text: {
        baselineEqualsGolden: golden,
        attackedEqualsBaseline: inProc.tokens.every(same) && outProc.tokens.every(same),
        attackedPasses: { inProcess: inProc.tokens.length, childProcess: outProc.tokens.length },
        afterEqualsBaseline: same(after.tokens),
      },
      latencyMs: {
        baseline: lat(base.stepMs),
        attackedInProcess: lat(inProc.stepMs),
        attackedFromChild: lat(outProc.stepMs),
        after: lat(after.stepMs),
        p95Ratio: { inProcess: round(pct(inProc.stepMs, 95) / pct(base.stepMs, 95)), childProcess: round(pct(outProc.stepMs, 95) / pct(base.stepMs, 95)) },
        target: 'attacked p95 ≤ 2 × baseline p95',
        // what bounds it: the nodes' queue + compute per token, vs the rest (gateway event loop, links)
        nodeShare: { baseline: lat(base.nodeMs), attackedInProcess: lat(inProc.nodeMs), attackedFromChild: lat(outProc.nodeMs), after: lat(after.nodeMs) },
      },
      rssMb: {
        before: rssBefore.map(round),
        peakDuring: rssPeak.map(round),
        after: rssAfter.map(round),
        afterVsBefore: rssAfter.map((v, i) => round(v / rssBefore[i]!)),
        target: 'after ≤ 1.10 × before',
        // per node, MB: V8 heap used and reserved, external memory, and RSS outside the V8 heap
        breakdown: { before: memBefore, after: memAfter },
      },
      refusals: { inProcess: summarize(inProc.reports), childProcess: summarize(outProc.reports) },
      wallSeconds: round((Date.now() - t0) / 1000),
    };
    const row = (name: string, p: Omit<Pass, 'tokens'>, text: string) => [
      name,
      String(p.stepMs.length),
      String(round(pct(p.stepMs, 50))),
      String(round(pct(p.stepMs, 95))),
      String(round(pct(p.nodeMs, 50))),
      String(round(pct(p.nodeMs, 95))),
      text,
    ];
    console.log(machineLine(result.machine));
    console.log(
      table(
        ['phase', 'decode steps', 'p50 ms', 'p95 ms', 'nodes p50', 'nodes p95', 'text'],
        [
          row('baseline', base, golden ? 'golden' : 'NOT golden'),
          row('attacked (in process)', inProc, inProc.tokens.every(same) ? 'same' : 'DIFFERENT'),
          row('attacked (child process)', outProc, outProc.tokens.every(same) ? 'same' : 'DIFFERENT'),
          row('after', after, result.text.afterEqualsBaseline ? 'same' : 'DIFFERENT'),
        ],
      ),
    );
    console.log(
      table(
        ['node', 'RSS before MB', 'peak MB', 'after MB', 'after/before'],
        nodes.map((n, i) => [`${n.info.start}:${n.info.end}`, String(result.rssMb.before[i]), String(result.rssMb.peakDuring[i]), String(result.rssMb.after[i]), String(result.rssMb.afterVsBefore[i])]),
      ),
    );
    console.log(JSON.stringify(result.refusals));
    if (args.out) writeResult(join(ROOT, 'bench/results/hostile-soak.json'), result);
  } finally {
    await gw.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

if (args['attack-child']) {
  runAttacks(JSON.parse(args['attack-child']) as AttackPlan).then(
    (reports) => {
      process.stdout.write(JSON.stringify(reports));
      process.exit(0);
    },
    (e: Error) => {
      console.error(e);
      process.exit(1);
    },
  );
} else main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(e);
    process.exit(1);
  },
);
