// Unexplained failures: a step lost on a route whose hops all still answer bans nobody on its
// own; every hop is doubted (the doubts the planner reads), and a peer is banned only once it
// alone explains three such failures within the window (on all their routes, no other peer on
// all of them); a peer banned meanwhile explains the failures it was in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BanList } from '../../src/routing/bans.js';
import { UnexplainedFailures } from '../../src/routing/unexplained.js';

const T0 = 1_000_000;

function judge(o: { windowMs?: number; maxPeers?: number } = {}) {
  const bans = new BanList();
  const doubts = new BanList();
  return { bans, doubts, u: new UnexplainedFailures({ bans, doubts, ...o }) };
}

test('one unexplained failure bans nobody; every hop is doubted, doubling on a repeat', () => {
  const { bans, doubts, u } = judge();
  assert.deepEqual(u.failed(['a', 'staller', 'c'], 'no result', T0), []);
  assert.deepEqual(bans.active(T0), new Set());
  assert.deepEqual([...doubts.active(T0)].sort(), ['a', 'c', 'staller']);
  assert.ok(!doubts.isBanned('a', T0 + 5_001), 'the first doubt lasts 5 s');
  assert.match(doubts.list()[0]!.reason!, /^unexplained failure: no result/);
  // the same route again: nobody stands out, all doubted twice as long
  assert.deepEqual(u.failed(['a', 'staller', 'c'], 'no result', T0 + 6_000), []);
  assert.deepEqual(u.failed(['a', 'staller', 'c'], 'no result', T0 + 7_000), [], 'three on one route: still nobody alone');
  assert.ok(doubts.isBanned('a', T0 + 7_000 + 19_999));
  assert.deepEqual(u.stats, { failures: 3, banned: 0 });
});

test('a selective staller met through different peers is banned at its third failure; its co-hops are not', () => {
  const { bans, u } = judge();
  assert.deepEqual(u.failed(['a1', 'staller'], 'x', T0), []);
  // the staller alone on both routes, but two are not yet three
  assert.deepEqual(u.failed(['b1', 'staller'], 'x', T0 + 1_000), []);
  assert.deepEqual(u.failed(['a1', 'staller'], 'x', T0 + 2_000), ['staller']);
  assert.ok(bans.isBanned('staller', T0 + 2_000));
  assert.match(bans.list()[0]!.reason!, /alone on the routes of 3 unexplained failures/);
  assert.ok(!bans.isBanned('a1', T0 + 2_000) && !bans.isBanned('b1', T0 + 2_000));
  // a1's two failures were the staller's (banned now): they explain nothing against a1
  assert.equal(u.explainedBy('a1', T0 + 2_000), 0);
  assert.deepEqual(u.stats, { failures: 3, banned: 1 });
});

test('a node on every route (the only one of its range) is banned only if no other peer shares all its failures', () => {
  const { u } = judge();
  u.failed(['only', 'staller', 'x'], 'x', T0);
  u.failed(['only', 'staller', 'y'], 'x', T0 + 1);
  assert.deepEqual(u.failed(['only', 'staller', 'z'], 'x', T0 + 2), [], 'two peers on all three: neither alone');
  assert.equal(u.explainedBy('only', T0 + 2), 0);
  // one hop alone (one node serving every layer): three of its own failures
  const one = judge();
  one.u.failed(['solo'], 'x', T0);
  one.u.failed(['solo'], 'x', T0 + 1);
  assert.deepEqual(one.u.failed(['solo'], 'x', T0 + 2), ['solo']);
});

test('failures older than the window are forgotten; memory is bounded', () => {
  const { u } = judge({ windowMs: 60_000, maxPeers: 4 });
  u.failed(['a', 's'], 'x', T0);
  u.failed(['b', 's'], 'x', T0 + 1);
  assert.deepEqual(u.failed(['c', 's'], 'x', T0 + 60_001), [], 'the first was forgotten');
  assert.equal(u.explainedBy('s', T0 + 60_001), 2);
  u.failed(['d', 'e'], 'x', T0 + 60_002);
  u.failed(['f', 'g'], 'x', T0 + 60_003);
  assert.equal(u.explainedBy('s', T0 + 60_003), 0, 'the longest unheard of is dropped past maxPeers');
  assert.deepEqual(u.failed([], 'x', T0), [], 'an empty route is no failure');
  assert.deepEqual(u.failed(['h', 'h', 'h'], 'x', T0 + 60_004), [], 'a peer twice on a route counts once');
  assert.equal(u.explainedBy('h', T0 + 60_004), 1);
});
