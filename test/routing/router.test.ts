import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectRoute, NoRouteError, uncoveredRanges, type RouteCandidate } from '../../src/routing/router.js';

function cand(peerId: string, start: number, end: number, msPerToken = 10, extra: Partial<RouteCandidate> = {}): RouteCandidate {
  return { peerId, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${peerId}`], start, end, msPerToken, load: 0, freeKvTokens: 1e6, ...extra };
}
const ids = (r: { hops: { peerId: string }[] }) => r.hops.map((h) => h.peerId);

test('single node covering everything', () => {
  const r = selectRoute([cand('a', 0, 5)], { nLayers: 5, tieJitter: 0 });
  assert.deepEqual(ids(r), ['a']);
  assert.deepEqual([r.hops[0]!.start, r.hops[0]!.end], [0, 5]);
  // unknown RTT defaults to 150 ms: 75 in + 10 compute + 75 out
  assert.equal(r.estimatedMs, 160);
});

test('chains whole ranges and prefers fewer, faster hops', () => {
  const rtt = new Map([
    ['a', 2],
    ['b', 2],
    ['c', 2],
    ['d', 2],
  ]);
  const cs = [cand('a', 0, 2, 10), cand('b', 2, 4, 10), cand('c', 4, 5, 5), cand('d', 2, 5, 12)];
  const r = selectRoute(cs, { nLayers: 5, rttMs: rtt, tieJitter: 0 });
  // one-way links are RTT/2 = 1 ms: a→d = 1+10+1+12+1 = 25 ; a→b→c = 1+10+1+10+1+5+1 = 29
  assert.deepEqual(ids(r), ['a', 'd']);
  assert.equal(r.estimatedMs, 25);
  // d banned: falls back to the 3-hop chain
  const r2 = selectRoute(cs, { nLayers: 5, rttMs: rtt, tieJitter: 0, exclude: new Set(['d']) });
  assert.deepEqual(ids(r2), ['a', 'b', 'c']);
  assert.deepEqual(
    r2.hops.map((h) => [h.start, h.end]),
    [
      [0, 2],
      [2, 4],
      [4, 5],
    ],
  );
});

test('RTT matters: a slow link loses against a slightly slower node', () => {
  const cs = [cand('near', 0, 4, 20), cand('far', 0, 4, 10)];
  const r = selectRoute(cs, {
    nLayers: 4,
    rttMs: new Map([
      ['near', 2],
      ['far', 100],
    ]),
    tieJitter: 0,
  });
  assert.deepEqual(ids(r), ['near']);
});

test('load and full cache penalties steer away', () => {
  const cs = [cand('busy', 0, 3, 10, { load: 4 }), cand('idle', 0, 3, 14)];
  assert.deepEqual(ids(selectRoute(cs, { nLayers: 3, tieJitter: 0 })), ['idle']);
  const cs2 = [cand('full', 0, 3, 10, { freeKvTokens: 100 }), cand('roomy', 0, 3, 50)];
  assert.deepEqual(ids(selectRoute(cs2, { nLayers: 3, tieJitter: 0, needKvTokens: 512 })), ['roomy']);
  assert.deepEqual(ids(selectRoute(cs2, { nLayers: 3, tieJitter: 0, needKvTokens: 64 })), ['full']);
});

test('sub-ranges only when allowed', () => {
  const cs = [cand('a', 0, 3, 30), cand('b', 2, 5, 3)];
  assert.throws(
    () => selectRoute(cs, { nLayers: 5, tieJitter: 0 }),
    (e: unknown) => {
      assert.ok(e instanceof NoRouteError);
      assert.match(e.message, /no chain of whole advertised ranges/);
      return true;
    },
  );
  const r = selectRoute(cs, {
    nLayers: 5,
    tieJitter: 0,
    allowSubRange: true,
    rttMs: new Map([
      ['a', 0],
      ['b', 0],
    ]),
  });
  assert.deepEqual(ids(r), ['a', 'b']);
  // a is slow per layer (10 ms), b fast (1 ms): a serves only layers 0-1
  assert.deepEqual(
    r.hops.map((h) => [h.start, h.end]),
    [
      [0, 2],
      [2, 5],
    ],
  );
  assert.equal(r.estimatedMs, 20 + 3);
});

test('NoRouteError names the uncovered layers', () => {
  const cs = [cand('a', 0, 2), cand('b', 3, 4), cand('c', 4, 8)];
  assert.deepEqual(uncoveredRanges(cs, 10), [
    [2, 3],
    [8, 10],
  ]);
  assert.throws(
    () => selectRoute(cs, { nLayers: 10 }),
    (e: unknown) => {
      assert.ok(e instanceof NoRouteError);
      assert.deepEqual(e.uncovered, [
        [2, 3],
        [8, 10],
      ]);
      assert.match(e.message, /layers 2, 8-9 of 10/);
      return true;
    },
  );
  // excluding the only holder of a range uncovers it
  assert.throws(() => selectRoute([cand('a', 0, 4)], { nLayers: 4, exclude: new Set(['a']) }), /layers 0-3 of 4 \(1 peer\(s\) excluded\)/);
  assert.throws(() => selectRoute([], { nLayers: 4 }), NoRouteError);
});

test('near-ties spread across equal nodes; seeded choice is reproducible', () => {
  const cs = [cand('x', 0, 4, 10), cand('y', 0, 4, 10), cand('z', 0, 4, 10)];
  const counts = new Map<string, number>();
  for (let seed = 0; seed < 300; seed++) {
    const r = selectRoute(cs, { nLayers: 4, seed });
    counts.set(r.hops[0]!.peerId, (counts.get(r.hops[0]!.peerId) ?? 0) + 1);
    assert.deepEqual(ids(selectRoute(cs, { nLayers: 4, seed })), ids(r));
  }
  for (const p of ['x', 'y', 'z']) assert.ok((counts.get(p) ?? 0) > 50, `peer ${p} picked ${counts.get(p)} of 300`);
  // a clearly better node always wins despite jitter
  const cs2 = [...cs, cand('fast', 0, 4, 5)];
  for (let seed = 0; seed < 50; seed++) assert.deepEqual(ids(selectRoute(cs2, { nLayers: 4, seed })), ['fast']);
});

test('rejects nonsense adverts instead of routing through them', () => {
  const cs = [cand('bad', 0, 9), cand('neg', -1, 2), cand('nan', 0, 4, Number.NaN), cand('ok', 0, 4)];
  assert.deepEqual(ids(selectRoute(cs, { nLayers: 4 })), ['ok']);
});
