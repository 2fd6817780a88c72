// Waves (src/gateway/waves.ts): decode steps of the sessions sharing a route enter it together.
// A lone session never waits; a step waits while its route has steps in flight and goes with the
// next wave, at once when every session of the last wave is back, else after the wait bound; a
// session that ended, or that did not come back in time, is not waited for; a wave stuck in
// flight (a step in a re-route) stops holding the next one back after a few rounds' time; routes
// do not wait for each other. The steps here are promises the test settles, so the order is exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OVERDUE_ROUNDS, Waves } from '../../src/gateway/waves.js';

/** a step the test finishes by hand; `started` says whether its wave let it go */
function step(waves: Waves, id: string, route = 'r') {
  const s = { started: false, finish: () => {}, done: undefined as unknown as Promise<void> };
  s.done = waves.step(id, route, () => {
    s.started = true;
    return new Promise<void>((r) => (s.finish = r));
  });
  return s;
}
const turn = () => new Promise((r) => setImmediate(r));

test('a lone session never waits; a step waits while its route has one in flight, then both go together', async () => {
  const waves = new Waves(10_000);
  const a1 = step(waves, 'a');
  await turn();
  assert.ok(a1.started, 'alone: at once');
  const b1 = step(waves, 'b');
  await turn();
  assert.ok(!b1.started, "b waits while a's step is in flight");
  a1.finish();
  await a1.done;
  await turn();
  // a was the last wave: b waits for it (a's client is reading its token) ...
  assert.ok(!b1.started);
  const a2 = step(waves, 'a');
  await turn();
  // ... and goes with it as soon as it is back, long before the bound
  assert.ok(a2.started && b1.started, 'a and b in one wave');
  assert.deepEqual(waves.stats, { waves: 2, steps: 3, timedOut: 0, overdue: 0 });
  a2.finish();
  b1.finish();
  await Promise.all([a2.done, b1.done]);
  waves.close('a');
  waves.close('b');
  assert.equal(waves.routes, 0, 'no gate kept once its sessions ended');
});

test('a session of the last wave that does not come back is waited for at most the bound, and not again', async () => {
  const waves = new Waves(150);
  const a1 = step(waves, 'a');
  const b1 = step(waves, 'b');
  await turn();
  assert.ok(a1.started && !b1.started);
  a1.finish();
  await a1.done;
  await turn();
  assert.ok(!b1.started, 'waits for a');
  const t0 = performance.now();
  for (let i = 0; i < 100 && !b1.started; i++) await new Promise((r) => setTimeout(r, 10));
  const waited = performance.now() - t0;
  assert.ok(b1.started, 'b went without a');
  assert.ok(waited >= 100 && waited < 1000, `b waited ${waited.toFixed(0)} ms for a (bound 150)`);
  assert.equal(waves.stats.timedOut, 1);
  b1.finish();
  await b1.done;
  // the next wave is b's alone: nobody waits for a any more
  const b2 = step(waves, 'b');
  await turn();
  assert.ok(b2.started, 'b alone again: at once');
  b2.finish();
  await b2.done;
});

test('an ended session is not waited for; routes do not wait for each other', async () => {
  const waves = new Waves(10_000);
  const a1 = step(waves, 'a');
  const b1 = step(waves, 'b');
  const c1 = step(waves, 'c', 'other route');
  await turn();
  assert.ok(a1.started && !b1.started && c1.started, 'c is on another route: it goes beside a');
  a1.finish();
  await a1.done;
  await turn();
  assert.ok(!b1.started, 'waits for a to come back');
  waves.close('a'); // a's generation ended
  await turn();
  assert.ok(b1.started, 'b goes once a ended');
  b1.finish();
  c1.finish();
  await Promise.all([b1.done, c1.done]);
  // a step that fails leaves its wave all the same
  const b2 = waves.step('b', 'r', () => Promise.reject(new Error('hop failed')));
  await assert.rejects(b2, /hop failed/);
  const b3 = step(waves, 'b');
  await turn();
  assert.ok(b3.started, 'the failed step no longer counts as in flight');
  b3.finish();
  await b3.done;
  waves.close('b');
  waves.close('c');
  assert.equal(waves.routes, 0);
});

test('a wave stuck in flight holds the next one back only for OVERDUE_ROUNDS of the last round, plus the bound', async () => {
  const waves = new Waves(50);
  // one whole round of ~20 ms, to measure
  const a1 = step(waves, 'a');
  await new Promise((r) => setTimeout(r, 20));
  a1.finish();
  await a1.done;
  // a's next step gets stuck (say, its route is re-routing); b waits behind it ...
  const a2 = step(waves, 'a');
  await turn();
  const t0 = performance.now();
  const b1 = step(waves, 'b');
  await turn();
  assert.ok(a2.started && !b1.started);
  for (let i = 0; i < 200 && !b1.started; i++) await new Promise((r) => setTimeout(r, 5));
  const waited = performance.now() - t0;
  // ... until 3 × ~20 ms + 50 ms after a2 went
  assert.ok(b1.started, 'b went while a was still stuck');
  assert.ok(waited >= 80 && waited < 1000, `b waited ${waited.toFixed(0)} ms behind the stuck wave (bound ~${OVERDUE_ROUNDS * 20 + 50})`);
  assert.equal(waves.stats.overdue, 1);
  // the stuck step coming back later does not end b's wave
  a2.finish();
  await a2.done;
  const c1 = step(waves, 'c');
  await turn();
  assert.ok(!c1.started, "b's wave is still in flight");
  b1.finish();
  await b1.done;
  for (let i = 0; i < 100 && !c1.started; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(c1.started);
  c1.finish();
  await c1.done;
});
