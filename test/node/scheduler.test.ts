// The node's step scheduler on a real reference stage (stories260K, all layers): concurrent
// sessions' steps are computed in shared iterations (fewer passes than steps) with every
// output bit-identical to the session's solo run; a long prompt is split into chunks; a step
// that cannot meet its deadline is refused before it runs — `busy` for a new session that only
// the current load keeps from fitting, `deadline` otherwise.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createStage } from '../../src/engine/create.js';
import type { Stage } from '../../src/engine/types.js';
import { PerfMeter } from '../../src/node/perf.js';
import { StepScheduler, type StepResult, type StepWork } from '../../src/node/scheduler.js';

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function rows(n: number, dim: number, seed: number): Float32Array {
  const x = new Float32Array(n * dim);
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    x[i] = (s / 2 ** 32 - 0.5) * 0.5;
  }
  return x;
}

function hiddenOf(r: StepResult): Float32Array {
  assert.ok(!('error' in r), 'error' in r ? r.error.join(': ') : '');
  return r.out.hidden!;
}

describe('StepScheduler', () => {
  let stage: Stage;
  let solo: Stage;
  let dim = 0;
  const work = (sessionId: string, pos: number, hidden: Float32Array, extra: Partial<StepWork> = {}): StepWork => ({
    sessionId,
    pos,
    nTokens: hidden.length / dim,
    hidden,
    recvAt: performance.now(),
    deadline: Infinity,
    first: pos === 0,
    ...extra,
  });
  before(async () => {
    const src = new GgufFile(STORIES_GGUF);
    const range = { start: 0, end: src.config.nLayers, embed: false, head: false };
    stage = await createStage('reference', src, range);
    solo = await createStage('reference', src, range);
    dim = src.config.dim;
  });

  it('batches concurrent sessions and changes no bit of any output', async () => {
    const seen: [number, number][] = [];
    const sched = new StepScheduler({
      stage,
      perf: new PerfMeter({ msPerToken: 1, prefillMsPerToken: 0.1 }),
      onIteration: (n, t) => seen.push([n, t]),
    });
    const S = 16;
    for (let step = 0; step < 4; step++) {
      const n = step === 0 ? 5 : 1;
      const pos = step === 0 ? 0 : 4 + step;
      const inputs = Array.from({ length: S }, (_, i) => rows(n, dim, 100 * step + i + 1));
      const got = await Promise.all(inputs.map((h, i) => sched.submit(work(`s${i}`, pos, h))));
      for (let i = 0; i < S; i++) {
        const want = (await solo.forward({ sessionId: `s${i}`, pos, nTokens: n, hidden: inputs[i]! })).hidden!;
        assert.ok(bits(hiddenOf(got[i]!)).equals(bits(want)), `session ${i} step ${step}`);
      }
    }
    assert.ok(sched.stats.iterations < (S * 4) / 4, `${sched.stats.iterations} iterations for ${S * 4} steps`);
    assert.ok(sched.stats.sessions / sched.stats.iterations >= 4, 'mean batch of at least 4 sessions');
    // the metrics hook sees every iteration with its batch
    assert.equal(seen.length, sched.stats.iterations);
    assert.equal(
      seen.reduce((a, [n]) => a + n, 0),
      sched.stats.sessions,
    );
    assert.equal(
      seen.reduce((a, [, t]) => a + t, 0),
      S * (5 + 3),
    );
  });

  it("with several sessions open, steps that arrive in one read run in one iteration; a lone session's step starts at once", async () => {
    // three sessions' steps decoded one after the other in the same tick, as a batched upstream
    // hop's one write arrives: a message each, in successive microtasks
    const arrive = (sched: StepScheduler) =>
      Promise.all(
        [0, 1, 2].map(
          (i) =>
            new Promise<StepResult>((resolve) => {
              let p = Promise.resolve();
              for (let k = 0; k < i; k++) p = p.then(() => undefined);
              void p.then(() => resolve(sched.submit(work(`g${i}`, 0, rows(1, dim, 50 + i)))));
            }),
        ),
      );
    const batches = async (open: number) => {
      const seen: number[] = [];
      const sched = new StepScheduler({
        stage,
        perf: new PerfMeter({ msPerToken: 1, prefillMsPerToken: 0.1 }),
        onIteration: (n) => seen.push(n),
        sessions: () => open,
      });
      const got = await arrive(sched);
      for (let i = 0; i < 3; i++) stage.closeSession(`g${i}`);
      assert.equal(got.length, 3);
      return seen;
    };
    assert.deepEqual(await batches(3), [3], 'gathered: one iteration');
    // one session open (as the scheduler is told): the first step does not wait for the others
    assert.deepEqual(await batches(1), [1, 2]);
  });

  it('computes a long prompt in chunks beside other sessions, with the same bits', async () => {
    const sched = new StepScheduler({
      stage,
      perf: new PerfMeter({ msPerToken: 1, prefillMsPerToken: 0.1 }),
      chunkTokens: 16,
      tokenBudget: 20,
    });
    const long = rows(100, dim, 7);
    const a = sched.submit(work('long', 0, long));
    const others = [0, 1, 2].map((i) => sched.submit(work(`o${i}`, 0, rows(1, dim, 50 + i))));
    const [r, ...rest] = await Promise.all([a, ...others]);
    const want = (await solo.forward({ sessionId: 'long', pos: 0, nTokens: 100, hidden: long })).hidden!;
    assert.ok(bits(hiddenOf(r!)).equals(bits(want)));
    for (const o of rest) hiddenOf(o);
    // ceil(100 / 16) = 7 iterations for the prompt; the one-token steps rode along
    assert.equal(sched.stats.iterations, 7);
  });

  it('a chunked prompt that wants its last row only returns that row, every chunk cached', async () => {
    const sched = new StepScheduler({
      stage,
      perf: new PerfMeter({ msPerToken: 1, prefillMsPerToken: 0.1 }),
      chunkTokens: 16,
      tokenBudget: 20,
    });
    const long = rows(40, dim, 9);
    const r = await sched.submit(work('last', 0, long, { lastRow: true }));
    const want = (await solo.forward({ sessionId: 'last', pos: 0, nTokens: 40, hidden: long })).hidden!;
    assert.ok(bits(hiddenOf(r)).equals(bits(want.subarray(39 * dim))), 'the last row of the whole prompt');
    const next = rows(1, dim, 10);
    const d = await sched.submit(work('last', 40, next));
    const wantNext = (await solo.forward({ sessionId: 'last', pos: 40, nTokens: 1, hidden: next })).hidden!;
    assert.ok(bits(hiddenOf(d)).equals(bits(wantNext)), 'the next step reads all 40 cached rows');
  });

  it('refuses what cannot meet its deadline: busy under load, deadline when idle', async () => {
    // 20 ms per iteration, whether it holds one decode token or an 8-token prompt chunk
    const perf = new PerfMeter({ msPerToken: 20, prefillMsPerToken: 2.5 });
    const sched = new StepScheduler({ stage, perf, chunkTokens: 8, tokenBudget: 8 });
    const now = performance.now();
    // idle but too slow for the budget: deadline
    const idle = await sched.submit(work('d1', 0, rows(1, dim, 1), { deadline: now + 5 }));
    assert.ok('error' in idle && idle.error[0] === 'deadline', JSON.stringify(idle));
    // a 64-token prompt with an earlier deadline is ahead (8 iterations): a new session that
    // alone needs 20 ms of its 175 ms is refused as busy; without a deadline it is served
    const load = [sched.submit(work('l0', 0, rows(64, dim, 9), { deadline: now + 170 }))];
    const busy = await sched.submit(work('d2', 0, rows(1, dim, 2), { deadline: now + 175 }));
    assert.ok('error' in busy && busy.error[0] === 'busy', 'error' in busy ? busy.error.join(': ') : 'served');
    const served = await sched.submit(work('d3', 0, rows(1, dim, 3)));
    hiddenOf(served);
    for (const r of await Promise.all(load)) hiddenOf(r);
    assert.equal(sched.stats.refused, 2);
  });
});
