// The llama engine (llama.cpp's libllama through koffi, src/engine/llama): a 3-stage pipeline
// reproduces stories260K's golden greedy continuations; a middle range's hidden states agree
// with the reference engine within the audit tolerance; sessions batched in one llama_decode
// equal each session alone within it; a step before the cached end truncates and replays; the
// sequence bound gives EngineError 'capacity'. Skipped only when llama.cpp's platform package
// (@node-llama-cpp/linux-x64) is not installed.
import { describe, it, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { buildLocalPipeline, createStage, disposePipeline } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';
import { EngineError, type Stage, type StageInput } from '../../src/engine/types.js';
import { findLibDir } from '../../src/engine/llama/ffi.js';
import { createLlamaStage } from '../../src/engine/llama/index.js';
import { compareOutputs, toleranceFor } from '../../src/accountability/checks/tolerance.js';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import { openModel } from '../../src/model/load.js';
import { kvBudgetOf } from '../../src/node/kv-budget.js';

const skip = findLibDir() ? false : 'llama.cpp platform package @node-llama-cpp/linux-x64 is not installed (linux x64 only)';
const noStopTokenizer = { stopIds: [], createStreamDecoder: () => ({ push: () => '', flush: () => '' }) };

function hiddenFor(dim: number, n: number, seed: number): Float32Array {
  const h = new Float32Array(n * dim);
  for (let i = 0; i < h.length; i++) h[i] = Math.sin((i + 1) * 0.37 + seed) * 0.8;
  return h;
}

describe('llama engine on stories260K', { skip }, () => {
  let src: GgufFile;
  before(() => {
    src = new GgufFile(STORIES_GGUF);
  });
  after(() => src?.close());

  it('3 stages: prompt logits within 1e-4 and the golden greedy tokens', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'odsi-llama-test-'));
    const pipeline: Stage[] = await buildLocalPipeline('llama', src, 3, { threads: 1, cacheDir });
    try {
      assert.deepEqual(
        pipeline.map((s) => s.profile),
        ['llama-f32', 'llama-f32', 'llama-f32'],
      );
      assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith('.gguf')).length, 3, 'one slice per stage in the given cache dir');
      for (const c of loadGolden()) {
        const r = await generate(pipeline, noStopTokenizer, c.prompt_tokens, {
          maxTokens: c.generated_tokens.length,
          sampling: { temperature: 0 },
          returnPromptLogits: true,
        });
        let d = 0;
        for (let i = 0; i < c.last_prompt_logits.length; i++) d = Math.max(d, Math.abs(r.promptLogits![i]! - c.last_prompt_logits[i]!));
        assert.ok(d <= 1e-4, `prompt "${c.prompt}": max abs logit diff ${d}`);
        assert.deepEqual(r.tokens, c.generated_tokens, `prompt "${c.prompt}"`);
      }
    } finally {
      await disposePipeline(pipeline);
    }
    assert.deepEqual(readdirSync(cacheDir), [], 'dispose removes the slices');
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('middle range: hidden states within the f32 audit tolerance of the reference engine; batched == alone; truncate + replay', async () => {
    const range = { start: 1, end: 4, embed: false, head: false };
    const ll = await createStage('llama', src, range, { threads: 1, maxSessions: 3 });
    const ref = await createStage('reference', src, range);
    const dim = src.config.dim;
    const check = (a: Float32Array, b: Float32Array, what: string) => {
      const v = compareOutputs(a, b, [ll.profile, ref.profile], { dim });
      assert.ok(v.pass, `${what}: max rel. L2 ${v.maxRelL2} > tau ${v.tau}`);
    };
    try {
      // prefill + decode against the reference, position by position
      const pre = hiddenFor(dim, 12, 1);
      check((await ll.forward({ sessionId: 'a', pos: 0, nTokens: 12, hidden: pre })).hidden!, (await ref.forward({ sessionId: 'a', pos: 0, nTokens: 12, hidden: pre })).hidden!, 'prefill');
      for (let t = 12; t < 16; t++) {
        const h = hiddenFor(dim, 1, t);
        check((await ll.forward({ sessionId: 'a', pos: t, nTokens: 1, hidden: h })).hidden!, (await ref.forward({ sessionId: 'a', pos: t, nTokens: 1, hidden: h })).hidden!, `decode ${t}`);
      }
      assert.equal(ll.sessionLength('a'), 16);
      // truncate + replay: position 10 again with other input, then the original rows back
      const other = hiddenFor(dim, 3, 99);
      const y1 = (await ll.forward({ sessionId: 'a', pos: 10, nTokens: 3, hidden: other })).hidden!;
      assert.equal(ll.sessionLength('a'), 13);
      await ref.forward({ sessionId: 'r', pos: 0, nTokens: 10, hidden: pre.subarray(0, 10 * dim) });
      check(y1, (await ref.forward({ sessionId: 'r', pos: 10, nTokens: 3, hidden: other })).hidden!, 'after truncation');
      ref.closeSession('r');

      // two sessions in one llama_decode equal each alone (b: a fresh prefill; a: a decode step)
      const hb = hiddenFor(dim, 5, 7);
      const ha = hiddenFor(dim, 1, 8);
      const [ya, yb] = await ll.forwardBatch!([
        { sessionId: 'a', pos: 13, nTokens: 1, hidden: ha },
        { sessionId: 'b', pos: 0, nTokens: 5, hidden: hb },
      ]);
      const yaAlone = (await ll.forward({ sessionId: 'a', pos: 13, nTokens: 1, hidden: ha })).hidden!; // replays position 13
      const ybAlone = (await ll.forward({ sessionId: 'c', pos: 0, nTokens: 5, hidden: hb })).hidden!;
      check(ya!.hidden!, yaAlone, 'batched row vs alone (a)');
      check(yb!.hidden!, ybAlone, 'batched prefill vs alone (b)');

      // three sequences held: a fourth session is refused as 'capacity', and closing one frees it
      await assert.rejects(ll.forward({ sessionId: 'd', pos: 0, nTokens: 1, hidden: ha }), (e: unknown) => e instanceof EngineError && e.code === 'capacity');
      assert.equal(ll.sessionLength('d'), 0);
      ll.closeSession('c');
      const yd = (await ll.forward({ sessionId: 'd', pos: 0, nTokens: 5, hidden: hb })).hidden!;
      check(yd, ybAlone, 'a recycled sequence starts empty');
      // bad input loses nothing
      await assert.rejects(ll.forward({ sessionId: 'a', pos: 20, nTokens: 1, hidden: ha }), (e: unknown) => e instanceof EngineError && e.code === 'bad_input');
      await assert.rejects(ll.forward({ sessionId: 'a', pos: 14, nTokens: 1, hidden: new Float32Array(dim).fill(NaN) }), (e: unknown) => e instanceof EngineError && e.code === 'bad_input');
      assert.equal(ll.sessionLength('a'), 14);
    } finally {
      await ll.dispose();
      await ref.dispose();
    }
  });

  it("computeThread 'main': the worker's outputs bit for bit (prefill, decode, a batch), and a refusal keeps its code", async () => {
    const range = { start: 1, end: 4, embed: false, head: false };
    const worker = await createStage('llama', src, range, { threads: 1, maxSessions: 2 });
    const main = await createStage('llama', src, range, { threads: 1, maxSessions: 2, computeThread: 'main' });
    assert.deepEqual([worker.computeThread, main.computeThread], ['worker', 'main']);
    const dim = src.config.dim;
    const same = async (inputs: StageInput[], what: string) => {
      const a = await worker.forwardBatch!(inputs);
      const b = await main.forwardBatch!(inputs);
      for (let i = 0; i < a.length; i++) assert.deepEqual(Array.from(b[i]!.hidden!), Array.from(a[i]!.hidden!), `${what}: row set ${i} differs`);
    };
    try {
      await same([{ sessionId: 'a', pos: 0, nTokens: 12, hidden: hiddenFor(dim, 12, 1) }], 'prefill');
      for (let t = 12; t < 15; t++) await same([{ sessionId: 'a', pos: t, nTokens: 1, hidden: hiddenFor(dim, 1, t) }], `decode ${t}`);
      await same(
        [
          { sessionId: 'a', pos: 15, nTokens: 1, hidden: hiddenFor(dim, 1, 15) },
          { sessionId: 'b', pos: 0, nTokens: 5, hidden: hiddenFor(dim, 5, 7) },
        ],
        'a batch of a decode step and a prompt',
      );
      assert.equal(main.sessionLength('a'), 16);
      // two sequences held: a third session is refused as 'capacity' on this thread too, losing nothing
      await assert.rejects(
        main.forward({ sessionId: 'c', pos: 0, nTokens: 1, hidden: hiddenFor(dim, 1, 3) }),
        (e: unknown) => e instanceof EngineError && e.code === 'capacity',
      );
      assert.equal(main.sessionLength('a'), 16);
      assert.equal(main.sessionLength('c'), 0);
    } finally {
      await worker.dispose();
      await main.dispose();
    }
  });

  it('head stage: the logits of every row (allLogits) equal the reference, also when a step spans several llama_decode calls', async () => {
    const range = { start: 3, end: 5, embed: false, head: true };
    const ll = await createLlamaStage(src, range, { threads: 1, maxBatch: 4, maxSessions: 2 });
    const ref = await createStage('reference', src, range);
    try {
      const { dim, vocabSize: V } = src.config;
      const h = hiddenFor(dim, 10, 3);
      const a = (await ll.forward({ sessionId: 's', pos: 0, nTokens: 10, hidden: h, allLogits: true })).logits!;
      const b = (await ref.forward({ sessionId: 's', pos: 0, nTokens: 10, hidden: h, allLogits: true })).logits!;
      assert.equal(a.length, 10 * V);
      let d = 0;
      for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
      assert.ok(d <= 1e-4, `max abs logit diff ${d}`);
      const last = (await ll.forward({ sessionId: 's', pos: 9, nTokens: 1, hidden: h.subarray(9 * dim) })).logits!;
      assert.equal(last.length, V);
      for (let i = 0; i < V; i++) assert.ok(Math.abs(last[i]! - b[9 * V + i]!) <= 1e-4, `replayed last row, logit ${i}`);
    } finally {
      await ll.dispose();
      await ref.dispose();
    }
  });

  it('refuses to requantize: weights are run as stored', async () => {
    await assert.rejects(createStage('llama', src, { start: 0, end: 2, embed: true, head: false }, { weights: 'q4' }), /does not requantize/);
  });
});

test('llama profiles map to their calibrated tolerances: f32 with the f32 engines, 4-bit (Q8 activations) to its own', () => {
  assert.equal(toleranceFor(['llama-f32', 'reference']).key, 'f32|f32');
  assert.equal(toleranceFor(['llama-q4', 'reference']).key, 'f32|q8act');
  assert.equal(toleranceFor(['llama-q4', 'llama-q4']).key, 'q8act|q8act');
  assert.ok(toleranceFor(['llama-q4', 'reference']).tau < 0.1, 'a 4-bit tolerance that still catches skipped or swapped layers');
});

test("a 4-bit profile keeps F16 KV: its capacity says so, and a node's budget holds twice the positions it would in f32", { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-llama-q4-'));
  const file = join(dir, 'tiny-q4_0.gguf');
  await writeSyntheticGguf({ shape: 'tiny', dtype: 'q4_0', seed: 3, out: file });
  const q4 = openModel(file);
  const range = { start: 0, end: 2, embed: false, head: false };
  const budget = 1_000_000;
  const ll = await createStage('llama', q4, range, { threads: 1, maxSessions: 4, kvBudgetBytes: budget });
  const ref = await createStage('reference', q4, range);
  try {
    const { nKvHeads, headDim, dim } = q4.config;
    const f16 = 2 * 2 * nKvHeads * headDim * 2;
    assert.equal(ll.profile, 'llama-q4');
    // llama.cpp's cells fill the budget at 2 bytes a value
    assert.deepEqual(ll.capacity, { kvTokens: Math.floor(budget / f16), sessions: 4, kvBytesPerToken: f16 });
    assert.deepEqual(kvBudgetOf(ll, budget), { tokens: Math.floor(budget / f16), bytesPerToken: f16 });
    // the reference engine keeps f32 caches: half the positions for the same bytes
    assert.deepEqual(kvBudgetOf(ref, budget), { tokens: Math.floor(budget / (2 * f16)), bytesPerToken: 2 * f16 });
    const out = await ll.forward({ sessionId: 'q', pos: 0, nTokens: 3, hidden: hiddenFor(dim, 3, 1) });
    assert.equal(out.hidden!.length, 3 * dim);
  } finally {
    await ll.dispose();
    await ref.dispose();
    q4.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
