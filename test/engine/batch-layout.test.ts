// The ORT engine's attention layout (src/engine/ort/batch-layout.ts): lanes, and the mask and
// indices that keep every row to its own session.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { fitLanes, laneBudget, laneBytes, laneFeeds, longOutliers, oneLane } from '../../src/engine/ort/batch-layout.js';
import { LaneBuffers, laneWidth, type LaneCache } from '../../src/engine/ort/lane-buffers.js';

/** row r of a mask as a string: 1 where it may attend */
const opened = (mask: Float32Array, W: number, r: number) => [...mask.subarray(r * W, (r + 1) * W)].map((x) => (x === 0 ? 1 : 0)).join('');

it('a lone step is one lane of the capacity given, its unused slots masked', () => {
  const steps = [{ pos: 3, nTokens: 2 }];
  const l = oneLane(steps[0]!, 8);
  assert.deepEqual(l, { L: 1, C: 8, R: 2 });
  const f = laneFeeds(l, steps);
  assert.equal(opened(f.mask, 10, 0), '1110000010'); // slots 0..2, then itself
  assert.equal(opened(f.mask, 10, 1), '1110000011'); // and the row before it
  assert.deepEqual([...f.rowIndex], [0n, 1n]);
  assert.deepEqual([...f.outIndex], [0n, 1n]);
});

it('lanes per session: rows padded, each row sees only its own session, padding only itself', () => {
  const steps = [
    { pos: 2, nTokens: 1 },
    { pos: 0, nTokens: 3 },
    { pos: 4, nTokens: 2 },
  ];
  const l = { L: 3, C: 4, R: 3 };
  const f = laneFeeds(l, steps);
  const W = l.C + l.R;
  // hidden rows: session 0 → row 0; session 1 → rows 1..3; session 2 → rows 4..5
  assert.deepEqual([...f.rowIndex], [0n, 0n, 0n, 1n, 2n, 3n, 4n, 5n, 4n]);
  assert.deepEqual([...f.outIndex], [0n, 3n, 4n, 5n, 6n, 7n]);
  const rows = (from: number) => [from, from + 1, from + 2].map((r) => opened(f.mask, W, r));
  assert.deepEqual(rows(0), ['1100100', '0000010', '0000001']); // lane 0: one row, two padding
  assert.deepEqual(rows(3), ['0000100', '0000110', '0000111']); // lane 1: no cache yet
  assert.deepEqual(rows(6), ['1111100', '1111110', '0000001']); // lane 2: one padding row
});

it('refuses a layout that does not give every step a lane', () => {
  assert.throws(() => laneFeeds({ L: 2, C: 1, R: 1 }, [{ pos: 0, nTokens: 1 }]), /1 steps for 2 lanes/);
});

it("the mask repeats a lane's rows once per query head of a KV head's group", () => {
  const steps = [
    { pos: 1, nTokens: 2 },
    { pos: 2, nTokens: 1 },
  ];
  const l = { L: 2, C: 2, R: 2 };
  const one = laneFeeds(l, steps).mask;
  const three = laneFeeds(l, steps, 3).mask;
  const W = l.C + l.R;
  const lane = (m: Float32Array, b: number, G: number) => [...m.subarray(b * G * l.R * W, (b + 1) * G * l.R * W)];
  for (const b of [0, 1]) {
    const rows = lane(one, b, 1);
    assert.deepEqual(lane(three, b, 3), [...rows, ...rows, ...rows]);
  }
});

it("steps in permuted lanes: each step's rows and mask go to its own lane", () => {
  const steps = [
    { pos: 1, nTokens: 1 },
    { pos: 2, nTokens: 1 },
  ];
  const f = laneFeeds({ L: 2, C: 2, R: 1 }, steps, 1, [1, 0]);
  assert.deepEqual([...f.rowIndex], [1n, 0n]);
  assert.deepEqual([...f.outIndex], [1n, 0n]);
  assert.deepEqual(
    [0, 1].map((r) => opened(f.mask, 3, r)),
    ['111', '101'],
  );
});

// LaneBuffers against the caches they copy: K [KVH, D, cap], V [KVH, cap, D] per layer, with
// every value naming its session, layer, head, dim and position
const dims = { layers: 2, kvHeads: 2, headDim: 3 };
function cache(id: number, cap: number, len: number): LaneCache & { len: number } {
  const { layers, kvHeads: KVH, headDim: D } = dims;
  const val = (l: number, h: number, d: number, p: number) => (p < len ? id * 1e4 + l * 1e3 + h * 100 + d * 10 + p + 1 : 0);
  const k = Array.from({ length: layers }, (_, l) =>
    Float32Array.from({ length: KVH * D * cap }, (_, i) => val(l, Math.floor(i / (D * cap)), Math.floor(i / cap) % D, i % cap)),
  );
  const v = Array.from({ length: layers }, (_, l) =>
    Float32Array.from({ length: KVH * cap * D }, (_, i) => val(l, Math.floor(i / (cap * D)), i % D, Math.floor(i / D) % cap)),
  );
  return { cap, k, v, len };
}
/** appends position p to a test cache, as a step would */
function grow(c: LaneCache & { len: number }, id: number): void {
  const { layers, kvHeads: KVH, headDim: D } = dims;
  const p = c.len++;
  for (let l = 0; l < layers; l++)
    for (let h = 0; h < KVH; h++)
      for (let d = 0; d < D; d++) {
        const x = id * 1e4 + l * 1e3 + h * 100 + d * 10 + p + 1;
        c.k[l]![(h * D + d) * c.cap + p] = x;
        c.v[l]![(h * c.cap + p) * D + d] = x;
      }
}
/** lane j as [layer][h][d][slot] values from the K buffer, and checks V holds the same */
function laneOf(f: ReturnType<LaneBuffers['fill']>, L: number, j: number, upTo: number): number[] {
  const { layers, kvHeads: KVH, headDim: D } = dims;
  const out: number[] = [];
  for (let l = 0; l < layers; l++)
    for (let h = 0; h < KVH; h++)
      for (let d = 0; d < D; d++)
        for (let p = 0; p < upTo; p++) {
          const k = f.k[l]![((h * L + j) * D + d) * f.C + p]!;
          assert.equal(f.v[l]![((h * L + j) * f.C + p) * D + d], k, 'V and K lanes agree');
          out.push(k);
        }
  return out;
}
function expected(c: LaneCache & { len: number }, upTo: number): number[] {
  const { layers, kvHeads: KVH, headDim: D } = dims;
  const out: number[] = [];
  for (let l = 0; l < layers; l++)
    for (let h = 0; h < KVH; h++)
      for (let d = 0; d < D; d++) for (let p = 0; p < upTo; p++) out.push(p < c.len ? c.k[l]![(h * D + d) * c.cap + p]! : 0);
  return out;
}

it('lane buffers: laid out with headroom, then only new positions copied while the batch keeps its sessions', () => {
  const lb = new LaneBuffers(dims);
  const a = cache(1, 8, 5);
  const b = cache(2, 16, 9);
  let f = lb.fill([a, b], [5, 9]);
  assert.equal(f.C, 32); // 9 + 16 headroom, rounded up to 32
  assert.deepEqual(f.laneOf, [0, 1]);
  assert.equal(f.copied, 14);
  assert.deepEqual(laneOf(f, 2, 0, f.C), expected(a, f.C), 'lane 0 = a, zeros after');
  assert.deepEqual(laneOf(f, 2, 1, f.C), expected(b, f.C));
  // a decode step each, the batch in the other order: one position each, lanes kept
  grow(a, 1);
  grow(b, 2);
  f = lb.fill([b, a], [10, 6]);
  assert.deepEqual(f.laneOf, [1, 0]);
  assert.equal(f.copied, 2);
  assert.deepEqual(laneOf(f, 2, 0, 6), expected(a, 6));
  assert.deepEqual(laneOf(f, 2, 1, 10), expected(b, 10));
  // b truncated to 4 and rewritten: its lane takes the rewritten positions again
  lb.forget(b, 4);
  b.len = 4;
  for (let i = 0; i < 3; i++) grow(b, 7);
  f = lb.fill([a, b], [6, 7]);
  assert.equal(f.copied, 3);
  assert.deepEqual(laneOf(f, 2, 1, 7), expected(b, 7));
});

it('lane buffers: another session set, or a cache past the lanes, lays them out anew, zeroing what another session left', () => {
  const lb = new LaneBuffers(dims);
  const a = cache(1, 64, 40);
  const b = cache(2, 64, 3);
  const c = cache(3, 64, 2);
  let f = lb.fill([a, b], [40, 3]);
  assert.equal(f.C, 64);
  // c takes lane 1 after b: nothing of b's may stay in it
  f = lb.fill([a, c], [40, 2]);
  assert.equal(f.copied, 42);
  assert.deepEqual(laneOf(f, 2, 1, f.C), expected(c, f.C));
  // a grows past the lanes' slots
  const big = cache(1, 128, 60);
  f = lb.fill([big, c], [60, 2]);
  assert.equal(f.C, 96);
  assert.deepEqual(laneOf(f, 2, 0, f.C), expected(big, f.C));
  // a closed session: the lanes let go of its cache, and the same set is laid out anew
  lb.drop(c);
  f = lb.fill([big, c], [60, 2]);
  assert.equal(f.copied, 62);
  // fewer sessions: anew as well
  f = lb.fill([c], [2]);
  assert.equal(f.k[0]!.length, 2 * 1 * 3 * f.C);
  assert.deepEqual(laneOf(f, 1, 0, f.C), expected(c, f.C));
});

it("long outliers step alone, so lanes hold at most twice the batch's positions", () => {
  const w = laneWidth; // 16+ slots of headroom, rounded up to 32
  // one long session among fifteen short ones: the long one alone
  const steps = [{ pos: 2048, nTokens: 1 }, ...Array.from({ length: 15 }, () => ({ pos: 64, nTokens: 1 }))];
  assert.deepEqual(longOutliers(steps, w), [0]);
  // equal lengths, or short contexts where padding is small anyway: nobody
  assert.deepEqual(
    longOutliers(
      Array.from({ length: 16 }, () => ({ pos: 1024, nTokens: 1 })),
      w,
    ),
    [],
  );
  assert.deepEqual(longOutliers([{ pos: 40, nTokens: 1 }, ...Array.from({ length: 15 }, () => ({ pos: 2, nTokens: 1 }))], w), []);
  // lengths doubling: the longest ones peel off until the rest fit the rule
  const doubling = [32, 64, 128, 256, 512, 1024, 2048].map((pos) => ({ pos, nTokens: 1 }));
  const alone = longOutliers(doubling, w);
  assert.deepEqual(alone, [6, 5, 4]);
  const rest = doubling.filter((_, i) => !alone.includes(i));
  const total = rest.reduce((a, s) => a + s.pos, 0);
  assert.ok(rest.length * w(256) <= 2 * total + 64 * rest.length);
});

it('a batch whose lanes exceed the lane budget: the shortest caches that fit share lanes, the others step alone', () => {
  // SmolLM2-135M's attention over 10 layers: 15,360 bytes per lane slot
  const bytes = laneBytes({ layers: 10, heads: 9, kvHeads: 3, headDim: 64 });
  assert.equal(bytes(1, 1, 0), 15_360);
  const steps = [
    { pos: 100, nTokens: 1 },
    { pos: 1000, nTokens: 1 },
    { pos: 900, nTokens: 1 },
    { pos: 120, nTokens: 1 },
    { pos: 0, nTokens: 32 },
    { pos: 950, nTokens: 1 },
  ];
  // no bound: all of them, shortest first
  assert.deepEqual(fitLanes(steps, laneWidth, bytes, Infinity), [4, 0, 3, 2, 5, 1]);
  // room for four lanes of 928 slots: the three short sessions and the shortest long one share
  // lanes as wide as its cache, the two longer ones step alone
  const max = bytes(4, laneWidth(900), 32);
  const part = fitLanes(steps, laneWidth, bytes, max);
  assert.deepEqual(part, [4, 0, 3, 2]);
  assert.ok(bytes(5, laneWidth(950), 32) > max);
  // room for one short lane only: the shortest alone fits, so nobody shares lanes
  assert.deepEqual(fitLanes(steps, laneWidth, bytes, bytes(1, laneWidth(120), 32)), [4]);
});

it('lane buffers never hold more slots than the lane budget, also when it shrinks', () => {
  const lb = new LaneBuffers(dims);
  const caches = [cache(1, 64, 40), cache(2, 64, 10)];
  const f = lb.fill(caches, [40, 10], 200);
  // 2 lanes of 64 slots: 128 ≤ 200, allocated with slack but not past the budget (2·3·200 floats a buffer)
  assert.equal(f.C, 64);
  assert.ok(f.k[0]!.buffer.byteLength / 4 <= 2 * 3 * 200);
  // 3 lanes of 64: the usual 25 % slack would pass the budget, so the buffers stop at it
  const three = [...caches, cache(3, 64, 40)];
  const g = lb.fill(three, [40, 10, 40], 200);
  assert.equal(g.k[0]!.buffer.byteLength / 4, 2 * 3 * 200);
  assert.equal(g.v[1]!.buffer.byteLength / 4, 2 * 3 * 200);
  // the same sessions while the budget shrank (the caches grew): the kept buffers are let go,
  // and the lanes are laid out anew in buffers within the new budget
  three.forEach((c, i) => grow(c, i + 1));
  const h = lb.fill(three, [41, 11, 41], 192);
  assert.equal(h.copied, 93);
  assert.ok(h.k[0]!.buffer.byteLength / 4 <= 2 * 3 * 192);
  assert.deepEqual(laneOf(h, 3, 2, h.C), expected(three[2]!, h.C));
  // 4 lanes of 64 do not fit at all: the runner splits such a batch first (fitLanes)
  assert.throws(() => lb.fill([...three, cache(4, 64, 40)], [40, 10, 40, 40], 200), /lane budget of 200 slots/);
});

it('the lanes may take what the caches leave of the KV budget, and never less than their share', () => {
  assert.equal(laneBudget(1000, 0, 0.2), 1000);
  assert.equal(laneBudget(1000, 300, 0.2), 700);
  assert.equal(laneBudget(1000, 800, 0.2), 200);
  // caches over their four fifths (rounded up to whole chunks): the lanes keep their fifth
  assert.equal(laneBudget(1000, 850, 0.2), 200);
});
