// What a gateway's route choice costs (CostPlanner.route over a fixed candidate list), with and
// without doubted peers (routing/disputes.ts): the planner leaves doubted peers out while a
// route without them exists, else all but one of them, else none, so a doubt can cost it
// extra passes of the router's cost model.
//
//   node dist/bench/planner.js [--rounds 9] [--calls 2000] [--ranges 8] [--per-range 8] [--out FILE]
//
// Candidates: `ranges` contiguous layer ranges of 4 layers, `per-range` nodes each. Cases, one
// block of `calls` route() calls each per round, in rotated order: no doubts; half of one
// range's nodes doubted (a route avoids them all: one pass); every node of one range doubted
// (no route avoids them: a failed pass, then the first all-but-one pass succeeds); one node of
// every other range doubted as well, listed first (the all-but-one passes letting those back in
// fail too: 8 failed passes before one succeeds; the planner makes at most 1 + MAX_DOUBT_TRIES
// failed ones). Results: medians over rounds of µs per call.

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CostPlanner, StaticCandidates } from '../src/routing/planner.js';
import { BanList } from '../src/routing/bans.js';
import type { RouteCandidate } from '../src/routing/router.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { stats } from './lib/stats.js';
import { table, writeResult } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    calls: { type: 'string', default: '2000' },
    ranges: { type: 'string', default: '8' },
    'per-range': { type: 'string', default: '8' },
    out: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const CALLS = Number(args.calls);
const RANGES = Number(args.ranges);
const PER_RANGE = Number(args['per-range']);
const OUT = args.out ?? join(ROOT, 'bench/results/planner.json');

const id = (r: number, k: number) => `n${r}-${k}`;
const candidates: RouteCandidate[] = [];
for (let r = 0; r < RANGES; r++)
  for (let k = 0; k < PER_RANGE; k++)
    candidates.push({ peerId: id(r, k), addrs: [], start: 4 * r, end: 4 * r + 4, msPerToken: 1 + k, load: 0, freeKvTokens: 1e6 });

/** a doubt list holding `peers` (long enough to outlast the run) */
function doubting(peers: string[]): BanList {
  const d = new BanList({ baseMs: 3_600_000, maxMs: 3_600_000 });
  for (const p of peers) d.ban(p, 'bench');
  return d;
}

const mid = RANGES >> 1;
const wholeRange = Array.from({ length: PER_RANGE }, (_, k) => id(mid, k));
const CASES: Record<string, BanList | undefined> = {
  'no doubts': undefined,
  'half a range doubted': doubting(wholeRange.slice(0, PER_RANGE >> 1)),
  'a whole range doubted': doubting(wholeRange),
  'one per range + a whole range': doubting([
    ...Array.from({ length: RANGES }, (_, r) => id(r, 0)).filter((p) => !wholeRange.includes(p)),
    ...wholeRange,
  ]),
};
const planners = Object.fromEntries(
  Object.entries(CASES).map(([name, doubts]) => [
    name,
    new CostPlanner(new StaticCandidates(candidates), { nLayers: 4 * RANGES, doubts, seed: 1 }),
  ]),
);

const names = Object.keys(CASES);
const us: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (const n of names) for (let i = 0; i < 200; i++) planners[n]!.route(); // warm-up
for (let round = 0; round < ROUNDS; round++) {
  for (let j = 0; j < names.length; j++) {
    const n = names[(round + j) % names.length]!;
    const p = planners[n]!;
    const t0 = performance.now();
    for (let i = 0; i < CALLS; i++) p.route();
    us[n]!.push(((performance.now() - t0) * 1000) / CALLS);
  }
}

const machine = describeMachine();
const results = names.map((n) => ({ case: n, doubted: CASES[n]?.active().size ?? 0, usPerRoute: stats(us[n]!) }));
console.log(`planner: ${RANGES} ranges × ${PER_RANGE} nodes, ${ROUNDS} rounds × ${CALLS} route() calls; ${machineLine(machine)}`);
console.log(
  table(
    ['case', 'doubted', 'µs/route (median)', 'min', 'max'],
    results.map((r) => [
      r.case,
      String(r.doubted),
      r.usPerRoute.median.toFixed(1),
      r.usPerRoute.min.toFixed(1),
      r.usPerRoute.max.toFixed(1),
    ]),
  ),
);
writeResult(OUT, { machine, ranges: RANGES, perRange: PER_RANGE, rounds: ROUNDS, calls: CALLS, results });
