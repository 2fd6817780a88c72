// Batched forward passes (continuous batching): several sessions' steps in one forwardBatch
// give each session exactly what its own unbatched steps give — bit for bit on the reference
// engine, within kernel rounding on ORT — whatever mix of prefill chunks and decode tokens
// shares the batch.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createStage, type EngineKind } from '../../src/engine/create.js';
import { EngineError, type Stage, type StageInput } from '../../src/engine/types.js';
import { fitLanes, laneBudget, laneBytes, longOutliers } from '../../src/engine/ort/batch-layout.js';
import { LANE_SHARE, laneWidth } from '../../src/engine/ort/lane-buffers.js';

const PROMPTS = [
  [1, 403, 407, 261, 378],
  [1, 9, 30, 41],
  [1, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209],
  [1, 77],
];
const DECODE = 6;

/** every session's logits per step when it runs alone: prefill, then DECODE greedy tokens */
async function solo(stage: Stage, prompt: number[], sid: string): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  let r = await stage.forward({ sessionId: sid, pos: 0, nTokens: prompt.length, tokens: Int32Array.from(prompt) });
  out.push(r.logits!);
  for (let i = 0; i < DECODE; i++) {
    r = await stage.forward({ sessionId: sid, pos: prompt.length + i, nTokens: 1, tokens: Int32Array.of(argmax(out.at(-1)!)) });
    out.push(r.logits!);
  }
  stage.closeSession(sid);
  return out;
}

/** the same sessions, started one step apart so prefills share batches with decode steps */
async function batched(stage: Stage, sid: string): Promise<Float32Array[][]> {
  const out: Float32Array[][] = PROMPTS.map(() => []);
  for (let round = 0; round < PROMPTS.length + DECODE; round++) {
    const inputs: StageInput[] = [];
    const who: number[] = [];
    PROMPTS.forEach((p, i) => {
      const k = round - i; // session i starts at round i
      if (k < 0 || k > DECODE) return;
      who.push(i);
      if (k === 0) inputs.push({ sessionId: `${sid}${i}`, pos: 0, nTokens: p.length, tokens: Int32Array.from(p) });
      else inputs.push({ sessionId: `${sid}${i}`, pos: p.length + k - 1, nTokens: 1, tokens: Int32Array.of(argmax(out[i]!.at(-1)!)) });
    });
    const res = await stage.forwardBatch!(inputs);
    res.forEach((r, j) => out[who[j]!]!.push(r.logits!));
  }
  return out;
}

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

for (const kind of ['reference', 'ort'] as EngineKind[]) {
  describe(`forwardBatch (${kind})`, () => {
    let stage: Stage;
    before(async () => {
      const src = new GgufFile(STORIES_GGUF);
      const L = src.config.nLayers;
      stage = await createStage(kind, src, { start: 0, end: L, embed: true, head: true }, { threads: 1 });
    });

    it('gives every session what it gets alone', async () => {
      const alone = [];
      for (let i = 0; i < PROMPTS.length; i++) alone.push(await solo(stage, PROMPTS[i]!, `solo${i}`));
      const together = await batched(stage, 'b');
      for (let i = 0; i < PROMPTS.length; i++) {
        assert.equal(together[i]!.length, alone[i]!.length);
        for (let k = 0; k < alone[i]!.length; k++) {
          if (kind === 'reference') assert.ok(bits(together[i]![k]!).equals(bits(alone[i]![k]!)), `session ${i} step ${k} differs`);
          else {
            let d = 0;
            alone[i]![k]!.forEach((v, j) => (d = Math.max(d, Math.abs(v - together[i]![k]![j]!))));
            assert.ok(d < 1e-4, `session ${i} step ${k}: max |diff| ${d}`);
            assert.equal(argmax(together[i]![k]!), argmax(alone[i]![k]!));
          }
        }
      }
      for (let i = 0; i < PROMPTS.length; i++) stage.closeSession(`b${i}`);
    });

    it('refuses two steps of one session in a batch, changing nothing', async () => {
      await stage.forward({ sessionId: 'dup', pos: 0, nTokens: 2, tokens: Int32Array.of(1, 5) });
      await assert.rejects(
        stage.forwardBatch!([
          { sessionId: 'dup', pos: 2, nTokens: 1, tokens: Int32Array.of(3) },
          { sessionId: 'dup', pos: 2, nTokens: 1, tokens: Int32Array.of(4) },
        ]),
        (e: unknown) => e instanceof EngineError && e.code === 'bad_input',
      );
      assert.equal(stage.sessionLength('dup'), 2);
      stage.closeSession('dup');
    });
  });
}

// lastRow (a stage feeding the gateway's head): one row back, the last of what the full output
// holds, while every row still goes through the layers (the next step reads their cache). In a
// batch beside a step that wants every row.
for (const kind of ['reference', 'ort', 'llama'] as EngineKind[]) {
  it(`lastRow (${kind}): the last row alone, every row cached; a batch neighbour keeps all its rows`, async () => {
    const src = new GgufFile(STORIES_GGUF);
    const dim = src.config.dim;
    const stage = await createStage(kind, src, { start: 0, end: src.config.nLayers, embed: false, head: false }, { threads: 1 });
    try {
      const rows = (n: number, seed: number) => Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i * 0.37 + seed) * 0.5);
      const a = rows(7, 1);
      const b = rows(4, 2);
      const next = rows(1, 3);
      const fullA = (await stage.forward({ sessionId: 'fullA', pos: 0, nTokens: 7, hidden: a })).hidden!;
      const fullB = (await stage.forward({ sessionId: 'fullB', pos: 0, nTokens: 4, hidden: b })).hidden!;
      const [oa, ob] = await stage.forwardBatch!([
        { sessionId: 'A', pos: 0, nTokens: 7, hidden: a, lastRow: true },
        { sessionId: 'B', pos: 0, nTokens: 4, hidden: b },
      ]);
      // llama.cpp computes the last layer's tail for one row with another kernel: rounding only
      const tol = kind === 'llama' ? 1e-4 : kind === 'ort' ? 1e-5 : 0;
      const near = (x: Float32Array, y: Float32Array, what: string) => {
        assert.equal(x.length, y.length, `${what}: length`);
        let d = 0;
        x.forEach((v, i) => (d = Math.max(d, Math.abs(v - y[i]!))));
        assert.ok(d <= tol, `${what}: max |diff| ${d}`);
      };
      near(oa!.hidden!, fullA.subarray(6 * dim), 'A: the last row');
      near(ob!.hidden!, fullB, 'B: every row');
      assert.equal(stage.sessionLength('A'), 7);
      const d1 = (await stage.forward({ sessionId: 'fullA', pos: 7, nTokens: 1, hidden: next })).hidden!;
      const d2 = (await stage.forward({ sessionId: 'A', pos: 7, nTokens: 1, hidden: next })).hidden!;
      near(d2, d1, 'the decode step after a lastRow prefill');
    } finally {
      await stage.dispose();
    }
  });
}

// Isolation: a session whose cache holds NaN (imported from a hostile peer, say) shares a
// batch with a healthy one. A −∞ mask alone would not keep the NaN out of the healthy session
// (NaN + −∞ = NaN, 0 × NaN = NaN); each session attends within its own lane.
for (const kind of ['reference', 'ort'] as EngineKind[]) {
  it(`a batch neighbour's non-finite cache stays its own (${kind})`, async () => {
    const src = new GgufFile(STORIES_GGUF);
    const stage = await createStage(kind, src, { start: 0, end: src.config.nLayers, embed: true, head: true }, { threads: 1 });
    try {
      const prompt = Int32Array.from(PROMPTS[0]!);
      const next = Int32Array.of(403);
      await stage.forward({ sessionId: 'alone', pos: 0, nTokens: prompt.length, tokens: prompt });
      const alone = (await stage.forward({ sessionId: 'alone', pos: prompt.length, nTokens: 1, tokens: next })).logits!;
      // a longer neighbour, so its cache would span more slots than the healthy one's
      const other = Int32Array.from(PROMPTS[2]!);
      await stage.forward({ sessionId: 'donor', pos: 0, nTokens: other.length, tokens: other });
      const st = (await stage.exportSession!('donor'))!;
      for (const l of st.layers) {
        l.k.fill(NaN);
        l.v.fill(NaN);
      }
      await stage.importSession!('poisoned', st);
      await stage.forward({ sessionId: 'healthy', pos: 0, nTokens: prompt.length, tokens: prompt });
      const [h, p] = await stage.forwardBatch!([
        { sessionId: 'healthy', pos: prompt.length, nTokens: 1, tokens: next },
        { sessionId: 'poisoned', pos: other.length, nTokens: 1, tokens: next },
      ]);
      assert.ok(
        p!.logits!.some((x) => Number.isNaN(x)),
        'the poisoned session computes NaN',
      );
      assert.ok(
        h!.logits!.every((x) => Number.isFinite(x)),
        'the healthy session has no NaN',
      );
      let d = 0;
      alone.forEach((v, j) => (d = Math.max(d, Math.abs(v - h!.logits![j]!))));
      assert.ok(kind === 'reference' ? d === 0 : d < 1e-4, `healthy vs alone: max |diff| ${d}`);
    } finally {
      await stage.dispose();
    }
  });
}

// A step from a hostile peer gets the same refusal on every engine (src/engine/step-input.ts),
// and the session is left as it was. Until session 19 the reference engine, odsi node's default,
// computed non-finite hidden states, so its node signed a non-finite output no audit reproduces.
for (const kind of ['reference', 'ort', 'llama'] as EngineKind[]) {
  it(`the ${kind} engine refuses a hostile step, changing nothing: non-finite hidden states, a wrong size, a gap, an unknown session`, async () => {
    const src = new GgufFile(STORIES_GGUF);
    const dim = src.config.dim;
    const stage = await createStage(kind, src, { start: 0, end: 2, embed: false, head: false }, { threads: 1 });
    const refused = async (input: StageInput, code: string, message: RegExp) =>
      assert.rejects(stage.forward(input), (e: unknown) => e instanceof EngineError && e.code === code && message.test(e.message));
    try {
      await stage.forward({ sessionId: 's', pos: 0, nTokens: 2, hidden: new Float32Array(2 * dim).fill(0.1) });
      for (const bad of [NaN, Infinity, -Infinity]) {
        const h = new Float32Array(dim).fill(0.1);
        h[7] = bad;
        await refused({ sessionId: 's', pos: 2, nTokens: 1, hidden: h }, 'bad_input', /^hidden states must be finite$/);
        await refused({ sessionId: 'new', pos: 0, nTokens: 1, hidden: h }, 'bad_input', /^hidden states must be finite$/);
      }
      await refused(
        { sessionId: 's', pos: 2, nTokens: 2, hidden: new Float32Array(dim) },
        'bad_input',
        new RegExp(`^expected hidden of 2×${dim} floats, got ${dim}$`),
      );
      await refused(
        { sessionId: 's', pos: 3, nTokens: 1, hidden: new Float32Array(dim) },
        'bad_input',
        /^position 3 is beyond the session's cached length 2$/,
      );
      await refused(
        { sessionId: 'x', pos: 1, nTokens: 1, hidden: new Float32Array(dim) },
        'unknown_session',
        /^unknown session x \(first step must start at position 0, got 1\)$/,
      );
      await refused(
        { sessionId: 's', pos: 2, nTokens: 0, hidden: new Float32Array(0) },
        'bad_input',
        /^nTokens must be a positive integer, got 0$/,
      );
      assert.equal(stage.sessionLength('s'), 2);
      assert.equal(stage.sessionLength('new'), 0);
      assert.equal(stage.sessionLength('x'), 0);
      // and the session goes on from where it was
      const r = await stage.forward({ sessionId: 's', pos: 2, nTokens: 1, hidden: new Float32Array(dim).fill(0.1) });
      assert.equal(r.hidden!.length, dim);
      assert.equal(stage.sessionLength('s'), 3);
    } finally {
      await stage.dispose();
    }
  });
}

it('a long session among short ones steps alone; every output equals its solo run (ort)', async () => {
  const src = new GgufFile(STORIES_GGUF);
  const stage = await createStage('ort', src, { start: 0, end: src.config.nLayers, embed: true, head: true }, { threads: 1 });
  try {
    const long = Int32Array.from({ length: 300 }, (_, i) => (i * 37 + 11) % 512);
    const prompts = [long, ...PROMPTS.slice(0, 3).map((p) => Int32Array.from(p))];
    const next = Int32Array.of(403);
    const solo: Float32Array[] = [];
    for (const [i, p] of prompts.entries()) {
      await stage.forward({ sessionId: `solo${i}`, pos: 0, nTokens: p.length, tokens: p });
      solo.push((await stage.forward({ sessionId: `solo${i}`, pos: p.length, nTokens: 1, tokens: next })).logits!);
    }
    for (const [i, p] of prompts.entries()) await stage.forward({ sessionId: `b${i}`, pos: 0, nTokens: p.length, tokens: p });
    const outs = await stage.forwardBatch!(prompts.map((p, i) => ({ sessionId: `b${i}`, pos: p.length, nTokens: 1, tokens: next })));
    outs.forEach((o, i) => {
      let d = 0;
      solo[i]!.forEach((v, j) => (d = Math.max(d, Math.abs(v - o.logits![j]!))));
      assert.ok(d < 1e-4, `session ${i}: max |diff| ${d}`);
      assert.equal(stage.sessionLength(`b${i}`), prompts[i]!.length + 1);
    });
  } finally {
    await stage.dispose();
  }
});

it('with a KV budget, the ORT stage states what its caches hold; a batch over what its lanes may take: the shortest share lanes, the others step alone; every output equals its solo run', async () => {
  const src = new GgufFile(STORIES_GGUF);
  const c = src.config;
  const kvBudgetBytes = 900_000;
  const stage = await createStage('ort', src, { start: 0, end: c.nLayers, embed: true, head: true }, { threads: 1, kvBudgetBytes });
  try {
    // four fifths for the sessions' caches (f32 K and V of every layer)
    const perToken = 2 * c.nLayers * c.nKvHeads * c.headDim * 4;
    assert.deepEqual(stage.capacity, {
      kvTokens: Math.floor((kvBudgetBytes * (1 - LANE_SHARE)) / perToken),
      chunkTokens: 64,
      kvBytesPerToken: perToken,
    });
    const lengths = [150, 140, 130, 120, 20, 10];
    const prompts = lengths.map((n, s) => Int32Array.from({ length: n }, (_, i) => (i * 37 + 11 * s + 5) % c.vocabSize));
    // the batch's caches take at least the four fifths (more positions than a node would admit
    // against this capacity: the stage itself does not refuse them), so the lanes get their fifth
    const held = lengths.reduce((a, n) => a + n + 1, 0) * perToken;
    assert.ok(held >= kvBudgetBytes * (1 - LANE_SHARE));
    const mayTake = laneBudget(kvBudgetBytes, held, LANE_SHARE);
    assert.equal(mayTake, kvBudgetBytes * LANE_SHARE);
    // the split the runner makes, by the production rule: the two shortest share lanes, the others step alone
    const steps = lengths.map((pos) => ({ pos, nTokens: 1 }));
    assert.deepEqual(longOutliers(steps, laneWidth), []);
    const bytes = laneBytes({ layers: c.nLayers, heads: c.nHeads, kvHeads: c.nKvHeads, headDim: c.headDim });
    assert.deepEqual(fitLanes(steps, laneWidth, bytes, mayTake), [5, 4]);
    const next = [Int32Array.of(403), Int32Array.of(7)];
    const solo: Float32Array[][] = [];
    for (const [i, p] of prompts.entries()) {
      await stage.forward({ sessionId: `solo${i}`, pos: 0, nTokens: p.length, tokens: p });
      solo.push([]);
      for (const [k, t] of next.entries())
        solo[i]!.push((await stage.forward({ sessionId: `solo${i}`, pos: p.length + k, nTokens: 1, tokens: t })).logits!);
      stage.closeSession(`solo${i}`);
    }
    for (const [i, p] of prompts.entries()) await stage.forward({ sessionId: `b${i}`, pos: 0, nTokens: p.length, tokens: p });
    for (const [k, t] of next.entries()) {
      const outs = await stage.forwardBatch!(prompts.map((p, i) => ({ sessionId: `b${i}`, pos: p.length + k, nTokens: 1, tokens: t })));
      outs.forEach((o, i) => {
        let d = 0;
        solo[i]![k]!.forEach((v, j) => (d = Math.max(d, Math.abs(v - o.logits![j]!))));
        assert.ok(d < 1e-4, `step ${k}, session ${i}: max |diff| ${d}`);
        assert.equal(stage.sessionLength(`b${i}`), prompts[i]!.length + k + 1);
      });
    }
  } finally {
    await stage.dispose();
  }
});
