// Reference engine properties: bit-reproducibility (runs, stage splits, chunking), KV-cache
// truncation, embed-only and head-only stages, and clear errors on bad input.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createReferenceStage, type ReferenceStage } from '../../src/engine/reference.js';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import { WasmArena } from '../../src/engine/reference/wasm.js';
import { matmul } from '../../src/engine/reference/kernels.js';
import { Rng } from '../../src/util/rng.js';
import { exp, sincos } from '../../src/engine/reference/fmath.js';

const PINNED_EXP = [2.7182818284590455, 0.0301973834223185, 1.1051709180756477];
const PINNED_SINCOS = [
  [0.9952739571052135, 0.09710690144438527],
  [-0.9986640823432246, 0.05167253271870138],
];
import { buildLocalPipeline, createStage, splitLayers } from '../../src/engine/create.js';
import { forwardPipeline } from '../../src/engine/pipeline.js';
import { EngineError, type Stage } from '../../src/engine/types.js';

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** logits for every position of `ids`, fed in chunks of `chunk` tokens */
async function allLogits(stages: Stage[], ids: number[], chunk: number, sessionId = 's'): Promise<Float32Array> {
  const vocab = stages[0].config.vocabSize;
  const out = new Float32Array(ids.length * vocab);
  for (let pos = 0; pos < ids.length; pos += chunk) {
    const r = await forwardPipeline(stages, { sessionId, pos, tokens: Int32Array.from(ids.slice(pos, pos + chunk)), allLogits: true });
    out.set(r.logits, pos * vocab);
  }
  return out;
}

describe('reference engine', () => {
  let src: GgufFile;
  // a fixed pseudo-random token sequence longer than one KV growth chunk (256)
  const ids = [1, ...Array.from({ length: 299 }, (_, i) => 3 + ((i * 97 + 13) % 509))];
  before(() => {
    src = new GgufFile(STORIES_GGUF);
  });
  after(() => src?.close());

  it('splitLayers gives balanced contiguous ranges, earlier stages get the extra layer', () => {
    assert.deepEqual(splitLayers(5, 1), [[0, 5]]);
    assert.deepEqual(splitLayers(5, 2), [
      [0, 3],
      [3, 5],
    ]);
    assert.deepEqual(splitLayers(5, 3), [
      [0, 2],
      [2, 4],
      [4, 5],
    ]);
    assert.deepEqual(splitLayers(30, 4), [
      [0, 8],
      [8, 16],
      [16, 23],
      [23, 30],
    ]);
    assert.throws(() => splitLayers(5, 6), /at most 5/);
    assert.throws(() => splitLayers(5, 0), EngineError);
  });

  it('is bit-reproducible across runs, stage splits and prefill chunk sizes', async () => {
    const one = await buildLocalPipeline('reference', src, 1);
    const five = await buildLocalPipeline('reference', src, 5);
    const a = await allLogits(one, ids, 64);
    const b = await allLogits(one, ids, 64, 'again');
    const c = await allLogits(five, ids, 64);
    const d = await allLogits(five, ids.slice(0, 40), 1); // token by token
    const e = await allLogits(one, ids, 150); // long steps yield between layers
    assert.ok(bytes(a).equals(bytes(b)), 'two runs differ');
    assert.ok(bytes(a).equals(bytes(c)), '1 stage vs 5 stages differ');
    assert.ok(bytes(a.subarray(0, d.length)).equals(bytes(d)), 'chunked prefill vs token-by-token differ');
    assert.ok(bytes(a).equals(bytes(e)), 'chunks of 64 vs 150 differ');
    assert.ok(a.every(Number.isFinite));
  });

  it('own exp/sin/cos: within an ulp or two of Math.*, and pinned', () => {
    let worstExp = 0;
    let worstTrig = 0;
    for (let i = 0; i < 20000; i++) {
      const x = (i / 20000 - 0.5) * 1400;
      worstExp = Math.max(worstExp, Math.abs(exp(x) - Math.exp(x)) / Math.max(Math.exp(x), 5e-324));
      const y = i * 6.5537;
      const [s, c] = sincos(y);
      worstTrig = Math.max(worstTrig, Math.abs(s - Math.sin(y)), Math.abs(c - Math.cos(y)));
    }
    assert.ok(worstExp < 5e-16, `exp rel err ${worstExp}`);
    assert.ok(worstTrig < 1e-15, `sin/cos abs err ${worstTrig}`);
    assert.equal(exp(0), 1);
    assert.equal(exp(-800), 0);
    assert.equal(exp(710), Infinity);
    assert.ok(Number.isNaN(exp(NaN)));
    // pinned outputs: these must never change (they are part of every reference result)
    assert.deepEqual([exp(1), exp(-3.5), exp(0.1)], PINNED_EXP);
    assert.deepEqual([sincos(1000.5), sincos(123456.789)], PINNED_SINCOS);
  });

  it('WASM SIMD and JS matmul paths give identical bits', async () => {
    const range = { start: 0, end: src.config.nLayers, embed: true, head: true };
    const simd = createReferenceStage(src, range) as ReferenceStage;
    const js = createReferenceStage(src, range, { simd: false }) as ReferenceStage;
    assert.equal(js.kernel, 'js');
    if (simd.kernel !== 'wasm-simd') return void console.log('# WebAssembly SIMD unavailable here: only the JS path ran');
    const a = await allLogits([simd], ids.slice(0, 90), 37);
    const b = await allLogits([js], ids.slice(0, 90), 37);
    assert.ok(bytes(a).equals(bytes(b)));
  });

  it('WASM matmul matches the JS kernel bit for bit on ragged shapes', () => {
    const rng = new Rng(5);
    for (const [nTok, nIn, nOut] of [
      [1, 7, 5],
      [20, 173, 9],
      [33, 66, 13],
      [3, 4, 1],
    ]) {
      const w = Float32Array.from({ length: nIn * nOut }, () => rng.next() * 2 - 1);
      const x = Float32Array.from({ length: nTok * nIn }, () => (rng.next() - 0.5) * 100);
      const arena = WasmArena.create(w.length, nIn, nOut);
      if (!arena) return void console.log('# WebAssembly SIMD unavailable here');
      const y1 = new Float32Array(nTok * nOut);
      const y2 = new Float32Array(nTok * nOut);
      matmul(y1, x, w, nTok, nIn, nOut);
      arena.matmul(y2, x, arena.place(w), nTok, nIn, nOut);
      assert.ok(bytes(y1).equals(bytes(y2)), `${nTok}×${nIn}×${nOut}`);
    }
  });

  it('runs quantized files on their dequantized weights (synthetic q4_0, head size 32)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'odsi-ref-'));
    try {
      const path = join(dir, 'tiny-q4.gguf');
      await writeSyntheticGguf({ shape: 'tiny', dtype: 'q4_0', seed: 3, out: path, nLayers: 3, progress: false });
      const q = new GgufFile(path);
      try {
        const one = await buildLocalPipeline('reference', q, 1);
        const three = await buildLocalPipeline('reference', q, 3);
        const seq = [1, 17, 300, 5, 999, 42, 7];
        const a = await allLogits(one, seq, 3);
        assert.ok(a.every(Number.isFinite) && a.some((x) => x !== 0));
        assert.ok(bytes(a).equals(bytes(await allLogits(three, seq, 7))));
      } finally {
        q.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('truncation (pos < cached length) gives the same results as a fresh session', async () => {
    const [stage] = await buildLocalPipeline('reference', src, 1);
    const fresh = await allLogits([stage], ids.slice(0, 120), 32, 'fresh');
    // fill a session with a different continuation, then rewind to 60 and replay
    await allLogits([stage], [...ids.slice(0, 60), ...ids.slice(200, 290)], 50, 'replay');
    assert.equal(stage.sessionLength('replay'), 150);
    const vocab = stage.config.vocabSize;
    const r = await stage.forward({
      sessionId: 'replay',
      pos: 60,
      nTokens: 60,
      tokens: Int32Array.from(ids.slice(60, 120)),
      allLogits: true,
    });
    assert.equal(stage.sessionLength('replay'), 120);
    assert.ok(bytes(r.logits!).equals(bytes(fresh.subarray(60 * vocab))));
  });

  it('embed-only and head-only stages compose with layer stages bit-identically', async () => {
    const n = src.config.nLayers;
    const mk = (start: number, end: number, embed: boolean, head: boolean) => createStage('reference', src, { start, end, embed, head });
    const split = [await mk(0, 0, true, false), await mk(0, 2, false, false), await mk(2, n, false, false), await mk(n, n, false, true)];
    const whole = await buildLocalPipeline('reference', src, 1);
    const a = await allLogits(split, ids.slice(0, 70), 64);
    const b = await allLogits(whole, ids.slice(0, 70), 64);
    assert.ok(bytes(a).equals(bytes(b)));
    const emb = await split[0].forward({ sessionId: 'e', pos: 0, nTokens: 2, tokens: Int32Array.of(1, 5) });
    assert.equal(emb.hidden!.length, 2 * src.config.dim);
    assert.equal(emb.logits, undefined);
  });

  it('returns last-position logits by default and all positions with allLogits', async () => {
    const stage = createReferenceStage(src, { start: 0, end: src.config.nLayers, embed: true, head: true });
    const toks = Int32Array.from(loadGolden()[0].prompt_tokens);
    const last = await stage.forward({ sessionId: 'a', pos: 0, nTokens: toks.length, tokens: toks });
    const all = await stage.forward({ sessionId: 'b', pos: 0, nTokens: toks.length, tokens: toks, allLogits: true });
    const V = src.config.vocabSize;
    assert.equal(last.logits!.length, V);
    assert.equal(all.logits!.length, toks.length * V);
    assert.ok(bytes(last.logits!).equals(bytes(all.logits!.subarray((toks.length - 1) * V))));
    assert.ok(last.computeMs >= 0);
  });

  it('rejects bad input with EngineError and leaves the session intact', async () => {
    const stage = createReferenceStage(src, { start: 0, end: 2, embed: true, head: false });
    const fwd = (o: Partial<Parameters<Stage['forward']>[0]>) =>
      stage.forward({ sessionId: 'x', pos: 0, nTokens: 1, tokens: Int32Array.of(1), ...o });
    await fwd({});
    await assert.rejects(fwd({ pos: 5 }), (e: EngineError) => e.code === 'bad_input' && /beyond/.test(e.message));
    await assert.rejects(fwd({ sessionId: 'nope', pos: 3 }), (e: EngineError) => e.code === 'unknown_session');
    await assert.rejects(fwd({ pos: 1, tokens: Int32Array.of(512) }), /out of range/);
    await assert.rejects(fwd({ pos: 1, nTokens: 2 }), /expected 2 token ids/);
    await assert.rejects(
      fwd({ pos: 1, nTokens: src.config.contextLength, tokens: new Int32Array(src.config.contextLength) }),
      (e: EngineError) => e.code === 'capacity',
    );
    assert.equal(stage.sessionLength('x'), 1);
    const mid = createReferenceStage(src, { start: 2, end: 4, embed: false, head: false });
    await assert.rejects(mid.forward({ sessionId: 'y', pos: 0, nTokens: 1, hidden: new Float32Array(3) }), /hidden/);
    assert.throws(() => createReferenceStage(src, { start: 3, end: 9, embed: false, head: false }), /bad layer range/);
    assert.throws(() => createReferenceStage(src, { start: 2, end: 2, embed: false, head: false }), /empty layer range/);
    stage.closeSession('x');
    assert.equal(stage.sessionLength('x'), 0);
    // a step that yields between layers locks its session until it is done
    const big = Int32Array.from(ids.slice(0, 200));
    const first = stage.forward({ sessionId: 'z', pos: 0, nTokens: 200, tokens: big });
    await assert.rejects(stage.forward({ sessionId: 'z', pos: 0, nTokens: 1, tokens: big.subarray(0, 1) }), /in flight/);
    await first;
    assert.equal(stage.sessionLength('z'), 200);
    await stage.dispose();
    await assert.rejects(fwd({}), /disposed/);
  });

  it('decodes 60 tokens of stories260K well under a second', async () => {
    const [stage] = await buildLocalPipeline('reference', src, 1);
    const c0 = process.cpuUsage(); // CPU time, so a busy shared machine does not fail it
    for (let p = 0; p < 60; p++) await stage.forward({ sessionId: 't', pos: p, nTokens: 1, tokens: Int32Array.of(ids[p]) });
    const ms = process.cpuUsage(c0).user / 1000;
    assert.ok(ms < 1000, `${ms} ms CPU`);
  });
});
