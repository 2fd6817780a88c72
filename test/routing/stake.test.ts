// Stake in routing (CostPlanner with a StakeView): the real planner never routes to ineligible,
// slashed or excluded identities; among comparable candidates of one layer range it draws one
// with probability proportional to its stake weight (the ledger rules' routingWeight, linear in
// stake), so splitting a stake over ten identities wins no more work or pay (Sybil test);
// cost still rules over weight for candidates that are not comparable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import { CostPlanner, StaticCandidates } from '../../src/routing/planner.js';
import { NoRouteError, type RouteCandidate } from '../../src/routing/router.js';
import { StaticStakeView, addressOfPeerId, limitWeight, pickByWeight } from '../../src/routing/stake.js';
import { DEFAULT_PARAMS, UNITS_PER_LAYER, routingWeight, splitPayments } from '../../src/ledger/rules.js';

const P = DEFAULT_PARAMS;
const newPeer = () => generateIdentity().peerId.toString();
const cand = (peerId: string, start: number, end: number, msPerToken = 1): RouteCandidate => ({
  peerId,
  addrs: [],
  start,
  end,
  msPerToken,
  load: 0,
  freeKvTokens: 1e6,
});
/** the rules' weight of an identity past probation with reputation 0.9, as a number */
const weightOf = (stake: bigint, slashed = false) =>
  Number(routingWeight({ stake, slashed, reputationPpm: 900_000, layerSteps: P.probationSteps }, P)) / 1e18;

test('Sybil: ten identities sharing stake S get the work and pay of one identity with S (20,000 routes, |share − ½| < 0.02)', () => {
  const big = newPeer();
  const small = Array.from({ length: 10 }, newPeer);
  const S = 10n * P.minStake;
  const view = new StaticStakeView([
    [addressOfPeerId(big)!, { weight: weightOf(S) }],
    ...small.map((p) => [addressOfPeerId(p)!, { weight: weightOf(S / 10n) }] as [string, { weight: number }]),
  ]);
  // two ranges: [0,2) contested by the big identity and the ten small ones; [2,5) one node
  const tail = newPeer();
  view.set(addressOfPeerId(tail)!, { weight: weightOf(P.minStake) });
  const planner = new CostPlanner(new StaticCandidates([cand(big, 0, 2), ...small.map((p) => cand(p, 0, 2)), cand(tail, 2, 5)]), {
    nLayers: 5,
    stake: view,
    seed: 12345,
  });
  const N = 20_000;
  const steps = new Map<string, number>();
  for (let i = 0; i < N; i++)
    for (const h of planner.route().hops) steps.set(h.peerId, (steps.get(h.peerId) ?? 0) + (h.end - h.start));
  const bigShare = (steps.get(big) ?? 0) / 2 / N;
  // binomial: σ = √(¼/N) ≈ 0.0035, so 0.02 is 5.6σ (false-failure probability < 1e-7)
  assert.ok(Math.abs(bigShare - 0.5) < 0.02, `big identity's share of [0,2) routes: ${bigShare}`);
  for (const p of small) assert.ok((steps.get(p) ?? 0) > 0, 'every small identity gets some work');
  // pay: one epoch's charge split by the rules over layer-steps (units), as the ledger settles it
  const ids = [big, ...small];
  const split = splitPayments(10n ** 18n, ids.map((p) => ({ units: BigInt(steps.get(p) ?? 0) * UNITS_PER_LAYER, forfeited: false })), P);
  const bigPay = Number(split.paid[0]!);
  const smallPay = split.paid.slice(1).reduce((s, x) => s + Number(x), 0);
  assert.ok(Math.abs(bigPay / (bigPay + smallPay) - 0.5) < 0.02, `big identity's share of pay: ${bigPay / (bigPay + smallPay)}`);
});

test('never routed: below the minimum stake, slashed, excluded or unknown; only ineligible ones for a range: NoRouteError', () => {
  const ok = newPeer();
  const [poor, slashed, excluded, unknown] = [newPeer(), newPeer(), newPeer(), newPeer()];
  const view = new StaticStakeView([
    [addressOfPeerId(ok)!, { weight: weightOf(P.minStake) }],
    [addressOfPeerId(poor)!, { weight: weightOf(P.minStake - 1n) }],
    [addressOfPeerId(slashed)!, { weight: weightOf(100n * P.minStake, true), excluded: true }],
    [addressOfPeerId(excluded)!, { weight: weightOf(100n * P.minStake) }],
  ]);
  view.exclude(addressOfPeerId(excluded)!);
  assert.equal(weightOf(P.minStake - 1n), 0, 'the rules give no weight below the minimum stake');
  const all = [ok, poor, slashed, excluded, unknown];
  const planner = new CostPlanner(new StaticCandidates(all.map((p) => cand(p, 0, 5))), { nLayers: 5, stake: view, seed: 7 });
  for (let i = 0; i < 500; i++) assert.deepEqual(planner.route().hops.map((h) => h.peerId), [ok]);
  assert.throws(() => planner.route({ exclude: new Set([ok]) }), NoRouteError);
  // a node refuses an excluded identity's sessions (weight 0); others keep their share
  assert.equal(limitWeight(view, excluded), 0);
  assert.equal(limitWeight(view, ok), 2);
  assert.equal(limitWeight(view, unknown), 1, 'a gateway needs no stake to be served');
});

test('weight picks among comparable candidates only: a much slower node with a large stake gets no work', () => {
  const [fast, slow] = [newPeer(), newPeer()];
  const view = new StaticStakeView([
    [addressOfPeerId(fast)!, { weight: 1 }],
    [addressOfPeerId(slow)!, { weight: 1000 }],
  ]);
  const planner = new CostPlanner(new StaticCandidates([cand(fast, 0, 5, 10), cand(slow, 0, 5, 200)]), { nLayers: 5, stake: view, seed: 3 });
  for (let i = 0; i < 200; i++) assert.deepEqual(planner.route().hops.map((h) => h.peerId), [fast]);
});

test('pickByWeight: proportional, zero weights never, all-zero uniform', () => {
  const items = ['a', 'b', 'c'];
  const w = (x: string) => ({ a: 1, b: 3, c: 0 })[x]!;
  assert.equal(pickByWeight(items, w, 0), 'a');
  assert.equal(pickByWeight(items, w, 0.2499), 'a');
  assert.equal(pickByWeight(items, w, 0.25), 'b');
  assert.equal(pickByWeight(items, w, 0.9999), 'b');
  assert.equal(pickByWeight(items, () => 0, 0.7), 'c');
});
