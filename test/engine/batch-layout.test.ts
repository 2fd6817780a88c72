// The ORT engine's attention layout (src/engine/ort/batch-layout.ts): lanes, and the mask and
// indices that keep every row to its own session.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { laneFeeds, lanePerSession, oneLane } from '../../src/engine/ort/batch-layout.js';

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

it('a decode batch: a lane per session, as wide as the longest cache, so attention is linear in the batch', () => {
  const steps = Array.from({ length: 16 }, (_, i) => ({ pos: 1000 + i, nTokens: 1 }));
  assert.deepEqual(lanePerSession(steps), { L: 16, C: 1015, R: 1 });
});

it('lanes per session: rows padded, each row sees only its own session, padding only itself', () => {
  const steps = [
    { pos: 2, nTokens: 1 },
    { pos: 0, nTokens: 3 },
    { pos: 4, nTokens: 2 },
  ];
  const l = lanePerSession(steps);
  assert.deepEqual(l, { L: 3, C: 4, R: 3 });
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
  const l = lanePerSession(steps);
  const one = laneFeeds(l, steps).mask;
  const three = laneFeeds(l, steps, 3).mask;
  const W = l.C + l.R;
  const lane = (m: Float32Array, b: number, G: number) => [...m.subarray(b * G * l.R * W, (b + 1) * G * l.R * W)];
  for (const b of [0, 1]) {
    const rows = lane(one, b, 1);
    assert.deepEqual(lane(three, b, 3), [...rows, ...rows, ...rows]);
  }
});
