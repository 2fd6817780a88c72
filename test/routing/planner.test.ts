// CostPlanner: the router's cost model over a candidate source, minus bans, unavailable and
// excluded peers; StaticCandidates as the fixed-list source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BanList } from '../../src/routing/bans.js';
import { CostPlanner, StaticCandidates, type CandidateSource } from '../../src/routing/planner.js';
import type { RouteCandidate } from '../../src/routing/router.js';

const cand = (peerId: string, start: number, end: number, msPerToken: number): RouteCandidate => ({
  peerId,
  addrs: [],
  start,
  end,
  msPerToken,
  load: 0,
  freeKvTokens: 1e6,
});
const peersOf = (p: CostPlanner, exclude?: Set<string>) => p.route({ exclude }).hops.map((h) => h.peerId);

test('the planner skips peers while the ban list has them, and uses them again after', () => {
  const bans = new BanList({ baseMs: 50 });
  const planner = new CostPlanner(new StaticCandidates([cand('fast', 0, 4, 1), cand('slow', 0, 4, 9)]), { nLayers: 4, bans, tieJitter: 0 });
  assert.deepEqual(peersOf(planner), ['fast']);
  bans.ban('fast', 'test', Date.now());
  assert.deepEqual(peersOf(planner), ['slow']);
  bans.clear('fast');
  assert.deepEqual(peersOf(planner), ['fast']);
});

test('unavailable and excluded peers are skipped; nothing left is a NoRouteError', () => {
  const source: CandidateSource = {
    candidates: () => [cand('a', 0, 2, 1), cand('b', 2, 4, 1), cand('b2', 2, 4, 5)],
    rttMs: () => new Map(),
    unavailable: () => new Set(['b']),
  };
  const planner = new CostPlanner(source, { nLayers: 4, tieJitter: 0 });
  assert.deepEqual(peersOf(planner), ['a', 'b2']);
  assert.throws(() => planner.route({ exclude: new Set(['b2']) }), { name: 'NoRouteError' });
});

test('a seeded planner is reproducible', () => {
  const list = [cand('x', 0, 4, 1), cand('y', 0, 4, 1), cand('z', 0, 4, 1)];
  const picks = (seed: number) => {
    const p = new CostPlanner(new StaticCandidates(list), { nLayers: 4, seed });
    return Array.from({ length: 8 }, () => peersOf(p)[0]);
  };
  assert.deepEqual(picks(7), picks(7));
});

test('doubted peers are avoided while a route without them exists: all, else all but one, else none', () => {
  const doubts = new BanList();
  const list = [cand('a1', 0, 2, 1), cand('a2', 0, 2, 5), cand('sole', 2, 4, 1)];
  const planner = new CostPlanner(new StaticCandidates(list), { nLayers: 4, doubts, tieJitter: 0 });
  assert.deepEqual(peersOf(planner), ['a1', 'sole']);
  // a1 and the only node of [2,4) in a dispute: a1 is avoided, sole is let back in
  doubts.ban('a1');
  doubts.ban('sole');
  assert.deepEqual(peersOf(planner), ['a2', 'sole']);
  // every node doubted: no route avoids them, so none is avoided
  doubts.ban('a2');
  assert.deepEqual(peersOf(planner), ['a1', 'sole']);
  // doubts never override bans or exclusions
  assert.deepEqual(peersOf(planner, new Set(['a1'])), ['a2', 'sole']);
});
