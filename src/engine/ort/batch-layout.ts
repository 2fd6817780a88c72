// How a step's attention is laid out for the std graph (./graph.ts): caches go into L lanes of
// C slots each, and each lane's R query rows attend to that lane's slots and rows only.
//  - A lone step is one lane: the session's capacity-sized cache exactly as it is stored (no
//    copy), the slots past its positions masked (`oneLane`).
//  - A batch gives every session a lane of its own (./lane-buffers.ts fills them): C = the
//    longest cache (plus headroom), R = the most rows any session adds, shorter ones padded.
//    Attention then costs sessions × the longest cache: linear in the batch. (Laying all caches
//    side by side in one lane cost every row × every session's positions, so a 16-session
//    decode batch at 1024 positions ran slower than the same steps one by one.)
// Lanes are as wide as the longest cache, so one long session among short ones would make every
// lane long: memory and attention for nothing. Such sessions step alone (`longOutliers`).
// A lane holds one session only. That is isolation, not just speed: a −∞ mask does not stop a
// NaN (NaN + −∞ = NaN, 0 × NaN = NaN), so a neighbour's non-finite cache, say one imported
// from a hostile peer, would have spread into every session that shared its lane.

import { kvBytesPerPosition } from '../kv-bytes.js';

/** one session's step: its cached positions and the rows it adds */
export interface LaneStep {
  pos: number;
  nTokens: number;
}

export interface LaneLayout {
  /** lanes */
  L: number;
  /** cache slots per lane (≥ 1) */
  C: number;
  /** query rows per lane (the last ones of a lane may be padding) */
  R: number;
}

/** a lone step: one lane of `cap` slots (at least its positions), as its cache is stored */
export function oneLane(step: LaneStep, cap: number): LaneLayout {
  return { L: 1, C: Math.max(1, cap, step.pos), R: step.nTokens };
}

export interface LaneFeeds {
  /** [L*R]: the hidden row each lane row reads (padding repeats its lane's first row) */
  rowIndex: BigInt64Array;
  /** [N]: the lane row each hidden row's output comes from */
  outIndex: BigInt64Array;
  /** [L, groups·R, C + R]: 0 where a row may attend, −∞ elsewhere; the lane's R rows
   *  repeated once per query head of a KV head's group (the graph's score rows) */
  mask: Float32Array;
}

/**
 * The index and mask inputs of a layout where step b has lane laneOf[b] (default: lane b).
 * Hidden rows are the steps' rows stacked in order. A row attends to its session's cached
 * slots and to its session's new rows up to itself; a padding row only to itself, so its
 * softmax stays finite (its output is dropped).
 */
export function laneFeeds(layout: LaneLayout, steps: LaneStep[], groups = 1, laneOf?: number[]): LaneFeeds {
  const { L, C, R } = layout;
  if (steps.length !== L) throw new Error(`${steps.length} steps for ${L} lanes`);
  const W = C + R;
  const N = steps.reduce((a, s) => a + s.nTokens, 0);
  const rowIndex = new BigInt64Array(L * R);
  const outIndex = new BigInt64Array(N);
  const mask = new Float32Array(L * groups * R * W).fill(-Infinity);
  let h = 0;
  steps.forEach((s, b) => {
    const at = laneOf?.[b] ?? b;
    const lane = mask.subarray(at * groups * R * W, (at + 1) * groups * R * W);
    for (let j = 0; j < R; j++) {
      const lr = at * R + j;
      const m = lane.subarray(j * W, (j + 1) * W);
      if (j >= s.nTokens) {
        rowIndex[lr] = BigInt(h);
        m[C + j] = 0;
        continue;
      }
      rowIndex[lr] = BigInt(h + j);
      outIndex[h + j] = BigInt(lr);
      m.fill(0, 0, s.pos); // its own cached positions
      m.fill(0, C, C + j + 1); // its own new rows up to this one
    }
    for (let g = 1; g < groups; g++) lane.copyWithin(g * R * W, 0, R * W);
    h += s.nTokens;
  });
  return { rowIndex, outIndex, mask };
}

/**
 * Which steps of a batch to run alone so that its lanes, all `width(longest)` slots wide, hold
 * at most twice the positions the batch's caches really have (plus 64 slots a lane): the
 * longest first, while the rule fails. Bounds the lane buffers' memory (else one long session
 * could make a node hold its length times the batch size) and the padded attention.
 */
export function longOutliers(steps: LaneStep[], width: (need: number) => number): number[] {
  const order = steps.map((_, i) => i).sort((a, b) => steps[b]!.pos - steps[a]!.pos);
  let total = steps.reduce((a, s) => a + s.pos, 0);
  const alone: number[] = [];
  while (order.length >= 2) {
    const L = order.length;
    if (L * width(steps[order[0]!]!.pos) <= 2 * total + 64 * L) break;
    const i = order.shift()!;
    alone.push(i);
    total -= steps[i]!.pos;
  }
  return alone;
}

/** a stage's attention shape, as far as the lanes' memory goes */
export interface LaneShape {
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/**
 * Bytes L lanes of C slots with R rows each take on this shape: the lanes (f32 K and V of every
 * layer), plus one layer's mask [L, G·R, C+R] and its scores and probabilities [KVH, L, G·R, C+R].
 */
export function laneBytes(s: LaneShape): (L: number, C: number, R: number) => number {
  const slot = kvBytesPerPosition({ nKvHeads: s.kvHeads, headDim: s.headDim }, s.layers);
  const G = s.heads / s.kvHeads;
  return (L, C, R) => L * C * slot + 4 * L * R * (C + R) * (G + 2 * s.heads);
}

/**
 * What a batch's lanes may take of a stage's KV budget: all that the sessions' caches leave,
 * and at least `share` of it (the caches are admitted against the rest, so they never leave
 * less). Lanes are scratch, laid out per batch, so they can give memory back as caches grow.
 */
export function laneBudget(kvBudget: number, cacheBytes: number, share: number): number {
  return Math.max(kvBudget * share, kvBudget - cacheBytes);
}

/**
 * The steps of a batch that share lanes when not all of them fit a memory bound: `bytes(L, C, R)`
 * is what L lanes of C slots with R rows each take (lanes, mask, scores), `max` the most one
 * batch may take. The shortest caches first, as many as fit; the others step alone, on their
 * stored caches. (Splitting the batch into several parts that fit was measured worse: every
 * part lays its lanes out anew, copying whole caches, and at 1024 positions with 4-bit weights
 * that cost more than the weight reads it saved, 0.86–0.93× the one-by-one time. One part of
 * the shortest copies least, and keeps its lanes while the batch keeps its sessions.)
 * Indices in order of position, shortest first; fewer than 2 means no lanes at all.
 */
export function fitLanes(
  steps: LaneStep[],
  width: (need: number) => number,
  bytes: (L: number, C: number, R: number) => number,
  max: number,
): number[] {
  const order = steps.map((_, i) => i).sort((a, b) => steps[a]!.pos - steps[b]!.pos);
  let R = 0;
  let n = 0;
  for (const i of order) {
    const s = steps[i]!;
    if (bytes(n + 1, width(s.pos), Math.max(R, s.nTokens)) > max) break;
    R = Math.max(R, s.nTokens);
    n++;
  }
  return order.slice(0, n);
}
