// Hostile-peer soak: a legitimate greedy generation through 3 real `odsi node` processes
// (stories260K split 2/2/1) while several attacker peers (src/testing/attacker.ts, in this
// process, each with its own key) run every resource attack in parallel against all three
// nodes: sessions up to and over the per-peer caps, idle streams, unfinished chunked messages,
// oversize lengths, STEP floods, re-execution requests and bulk stream opens.
//
// Phases: unattacked baseline → attacked (same requests, attackers running) → attackers leave,
// settle → after. Reported: the greedy text of every phase (must equal the baseline), per-token
// decode latency p50/p95 baseline vs attacked (target: p95 ≤ 2×), node RSS (VmRSS) before /
// peak during / after (target: after within 10 % of before), the refusals the attackers got.
//
// Run: npx tsc -p tsconfig.json && node --import ./dist/src/util/polyfill.js dist/bench/hostile-soak.js [--out]
// (--out writes bench/results/hostile-soak.json; --attackers N, --attack-s S, --rounds N)

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
    'attack-s': { type: 'string', default: '45' },
    rounds: { type: 'string', default: '3' },
    'settle-s': { type: 'string', default: '15' },
  },
});

/** the limits every node runs with (docs/threat-model.md, "Limits per peer") */
const NODE_ARGS = ['--kv-budget-mb', '4', '--max-sessions-per-peer', '16', '--max-streams-per-peer', '128', '--stream-idle-timeout', '5000'];

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
      NodeProcess.start({ model: MODEL, range, identityFile: join(dir, `n${i}.key`), modelId, announceIntervalMs: 600_000, extraArgs: NODE_ARGS }),
    ),
  );
  const gw = await Gateway.start({ modelPath: MODEL, peers: nodes.map((n) => n.candidate(1)) });
  const rss = () => nodes.map((n) => rssMb(n.info.pid));
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

    // attacked: the same passes while the attackers run
    const nAttackers = Number(args.attackers);
    const attackers = await Promise.all(Array.from({ length: nAttackers }, () => Attacker.start({ modelId, hidden })));
    const targets: AttackTarget[] = nodes.map((n) => ({ peerId: n.peerId, addrs: n.info.addrs, start: n.info.start, end: n.info.end }));
    const deadline = Date.now() + Number(args['attack-s']) * 1000;
    const reports: AttackReport[] = [];
    const attacks = Promise.all(attackers.map((a) => attackLoop(a, targets, deadline, reports)));
    const rssPeak = rss();
    const sampler = setInterval(() => rss().forEach((v, i) => (rssPeak[i] = Math.max(rssPeak[i]!, v))), 500);
    await sleep(2000); // the attacks are under way
    const attacked = { tokens: [] as number[][][], stepMs: [] as number[], nodeMs: [] as number[] };
    let passes = 0;
    while (Date.now() < deadline - 2000 && passes < 50) {
      const p = await legitimatePass(gw, cases, `attacked${passes}`);
      attacked.tokens.push(p.tokens);
      attacked.stepMs.push(...p.stepMs);
      attacked.nodeMs.push(...p.nodeMs);
      passes++;
    }
    await attacks;
    clearInterval(sampler);
    await Promise.all(attackers.map((a) => a.stop()));

    // the attackers have left: let the nodes free what they held, then measure again
    await sleep(Number(args['settle-s']) * 1000);
    const after = await legitimatePass(gw, cases, 'after');
    const rssAfter = rss();

    const same = (ts: number[][]) => ts.every((t, i) => JSON.stringify(t) === JSON.stringify(base.tokens[i]));
    const golden = base.tokens.every((t, i) => JSON.stringify(t) === JSON.stringify(cases[i]!.generated_tokens));
    const lat = (xs: number[]) => ({ n: xs.length, p50: round(pct(xs, 50)), p95: round(pct(xs, 95)), max: round(Math.max(...xs)) });
    const result = {
      bench: 'hostile-soak',
      machine: describeMachine(),
      model: 'stories260K',
      nodeArgs: NODE_ARGS,
      attackers: nAttackers,
      attackSeconds: Number(args['attack-s']),
      text: {
        baselineEqualsGolden: golden,
        attackedEqualsBaseline: attacked.tokens.every(same),
        attackedPasses: passes,
        afterEqualsBaseline: same(after.tokens),
      },
      latencyMs: {
        baseline: lat(base.stepMs),
        attacked: lat(attacked.stepMs),
        after: lat(after.stepMs),
        p95Ratio: round(pct(attacked.stepMs, 95) / pct(base.stepMs, 95)),
        target: 'attacked p95 ≤ 2 × baseline p95',
        // what bounds it: the nodes' queue + compute per token, vs the rest (gateway event loop, links)
        nodeShare: { baseline: lat(base.nodeMs), attacked: lat(attacked.nodeMs), after: lat(after.nodeMs) },
      },
      rssMb: {
        before: rssBefore.map(round),
        peakDuring: rssPeak.map(round),
        after: rssAfter.map(round),
        afterVsBefore: rssAfter.map((v, i) => round(v / rssBefore[i]!)),
        target: 'after ≤ 1.10 × before',
      },
      refusals: summarize(reports),
      wallSeconds: round((Date.now() - t0) / 1000),
    };
    console.log(machineLine(result.machine));
    console.log(
      table(
        ['phase', 'decode steps', 'p50 ms', 'p95 ms', 'nodes p50', 'nodes p95', 'text'],
        [
          ['baseline', String(base.stepMs.length), String(result.latencyMs.baseline.p50), String(result.latencyMs.baseline.p95), String(result.latencyMs.nodeShare.baseline.p50), String(result.latencyMs.nodeShare.baseline.p95), golden ? 'golden' : 'NOT golden'],
          ['attacked', String(attacked.stepMs.length), String(result.latencyMs.attacked.p50), String(result.latencyMs.attacked.p95), String(result.latencyMs.nodeShare.attacked.p50), String(result.latencyMs.nodeShare.attacked.p95), result.text.attackedEqualsBaseline ? 'same' : 'DIFFERENT'],
          ['after', String(after.stepMs.length), String(result.latencyMs.after.p50), String(result.latencyMs.after.p95), String(result.latencyMs.nodeShare.after.p50), String(result.latencyMs.nodeShare.after.p95), result.text.afterEqualsBaseline ? 'same' : 'DIFFERENT'],
        ],
      ),
    );
    console.log(
      table(
        ['node', 'RSS before MB', 'peak MB', 'after MB', 'after/before'],
        nodes.map((n, i) => [`${n.info.start}:${n.info.end}`, String(result.rssMb.before[i]), String(result.rssMb.peakDuring[i]), String(result.rssMb.after[i]), String(result.rssMb.afterVsBefore[i])]),
      ),
    );
    console.log(JSON.stringify(result.refusals, null, 1));
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

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(e);
    process.exit(1);
  },
);
