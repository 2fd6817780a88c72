// ORT engine against the golden outputs of stories260K and against the pure-TS reference
// engine on synthetic models (GroupQueryAttention path, quantized weights), plus the event
// loop staying free during a long prefill, input validation and node-sized loading.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModel } from '../../src/model/load.js';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import type { WeightSource } from '../../src/model/types.js';
import { createReferenceStage } from '../../src/engine/reference.js';
import { createStage, splitLayers } from '../../src/engine/create.js';
import { EngineError, type Stage, type StageInput, type StageRange } from '../../src/engine/types.js';
import { createOrtStage, type OrtStageOptions } from '../../src/engine/ort/index.js';
import { q4_0ToNBits } from '../../src/engine/ort/weights.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

const argmax = (a: Float32Array): number => a.reduce((b, v, i) => (v > a[b]! ? i : b), 0);
function maxDiff(a: Float32Array, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
const full = (n: number): StageRange => ({ start: 0, end: n, embed: true, head: true });

/** runs tokens through a chain of stages */
async function pipe(stages: Stage[], input: Omit<StageInput, 'hidden'>): Promise<Float32Array> {
  let hidden: Float32Array | undefined;
  for (const s of stages) {
    const out = await s.forward(s.range.embed ? input : { ...input, tokens: undefined, hidden });
    hidden = out.hidden ?? out.logits;
  }
  return hidden!;
}

describe('ort engine: stories260K golden (standard-op attention, head size 8)', () => {
  const golden = loadGolden();
  // (test/engine/golden.test.ts runs the 'ort' engine over every split 1..5 through generate();
  // here: the stage API directly, for the whole model and the finest split)
  for (const k of [1, 5]) {
    it(`${k} stage(s): last-prompt logits within 1e-4 and greedy tokens match`, async () => {
      const src = openModel(STORIES_GGUF);
      const ranges = splitLayers(src.config.nLayers, k);
      const stages: Stage[] = [];
      try {
        for (let i = 0; i < k; i++) {
          const [start, end] = ranges[i]!;
          stages.push(await createOrtStage(src, { start, end, embed: i === 0, head: i === k - 1 }, { threads: 1 }));
        }
        assert.equal((stages[0] as unknown as { attention: string }).attention, 'std');
        for (const c of golden) {
          const sid = `g${k}`;
          const logits = await pipe(stages, { sessionId: sid, pos: 0, nTokens: c.prompt_tokens.length, tokens: Int32Array.from(c.prompt_tokens) });
          assert.ok(maxDiff(logits, c.last_prompt_logits) < 1e-4, `logit diff ${maxDiff(logits, c.last_prompt_logits)}`);
          const gen: number[] = [argmax(logits)];
          let pos = c.prompt_tokens.length;
          while (gen.length < c.generated_tokens.length) {
            const l = await pipe(stages, { sessionId: sid, pos, nTokens: 1, tokens: Int32Array.of(gen.at(-1)!) });
            pos++;
            gen.push(argmax(l));
          }
          assert.deepEqual(gen, c.generated_tokens);
          for (const s of stages) {
            assert.equal(s.sessionLength(sid), pos);
            s.closeSession(sid);
            assert.equal(s.sessionLength(sid), 0);
          }
        }
      } finally {
        await Promise.all(stages.map((s) => s.dispose()));
        src.close();
      }
    });
  }

  it('embed-only and head-only stages around the layers give the same logits', async () => {
    const src = openModel(STORIES_GGUF);
    const n = src.config.nLayers;
    const stages = [
      await createOrtStage(src, { start: 0, end: 0, embed: true, head: false }, { threads: 1 }),
      await createOrtStage(src, { start: 0, end: n, embed: false, head: false }, { threads: 1 }),
      await createOrtStage(src, { start: n, end: n, embed: false, head: true }, { threads: 1 }),
    ];
    try {
      const c = golden[0]!;
      const logits = await pipe(stages, { sessionId: 'e', pos: 0, nTokens: c.prompt_tokens.length, tokens: Int32Array.from(c.prompt_tokens) });
      assert.ok(maxDiff(logits, c.last_prompt_logits) < 1e-4);
      assert.equal(stages[0]!.sessionLength('e'), c.prompt_tokens.length);
      assert.equal(stages[2]!.sessionLength('e'), c.prompt_tokens.length);
    } finally {
      await Promise.all(stages.map((s) => s.dispose()));
      src.close();
    }
  });
});

// prefill, chunked continuation, decode, truncation (replay from an earlier position), decode
const STEPS: [number, number][] = [
  [0, 17],
  [17, 8],
  [25, 1],
  [26, 1],
  [20, 3],
  [23, 1],
];

async function compareSteps(a: Stage, b: Stage, vocab: number, tol: number, label: string): Promise<number> {
  const toks = Array.from({ length: 40 }, (_, i) => (i * 37 + 5) % vocab);
  const dim = a.config.dim;
  const hid = Float32Array.from({ length: 40 * dim }, (_, i) => Math.sin(i * 0.37));
  let worst = 0;
  for (const [pos, n] of STEPS) {
    const inp: StageInput = a.range.embed
      ? { sessionId: 's', pos, nTokens: n, tokens: Int32Array.from(toks.slice(pos, pos + n)), allLogits: true }
      : { sessionId: 's', pos, nTokens: n, hidden: hid.subarray(pos * dim, (pos + n) * dim), allLogits: true };
    const [ra, rb] = [await a.forward(inp), await b.forward(inp)];
    const d = maxDiff(ra.logits!, rb.logits!);
    worst = Math.max(worst, d);
    assert.ok(d <= tol, `${label}: step pos=${pos} n=${n}: max diff ${d} > ${tol}`);
    assert.equal(a.sessionLength('s'), pos + n);
  }
  return worst;
}

describe('ort engine vs reference on synthetic models', () => {
  let dir: string;
  const files: Record<string, string> = {};
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'odsi-ort-'));
    for (const dtype of ['f32', 'q4_0', 'q8_0'] as const) {
      files[dtype] = join(dir, `tiny-${dtype}.gguf`);
      await writeSyntheticGguf({ shape: 'tiny', dtype, seed: 11, out: files[dtype]! });
    }
    files.smol = join(dir, 'smol.gguf');
    await writeSyntheticGguf({ shape: 'smollm2-135m', dtype: 'f32', seed: 5, out: files.smol, nLayers: 2 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("an embedding-only stage answers on the calling thread (no worker round trip), with the reference engine's rows bit for bit", async () => {
    for (const dtype of ['f32', 'q4_0', 'q8_0'] as const) {
      const src = openModel(files[dtype]!);
      const range = { start: 0, end: 0, embed: true, head: false };
      const ort = await createOrtStage(src, range, { threads: 1 });
      const ref = createReferenceStage(src, range);
      try {
        const tokens = Int32Array.of(0, 7, src.config.vocabSize - 1, 7);
        // a reply from a worker thread comes in a later turn of the event loop: the immediate
        // queued before the call would have run by then
        let turned = false;
        setImmediate(() => (turned = true));
        const got = await ort.forward({ sessionId: 'e', pos: 0, nTokens: tokens.length, tokens });
        assert.equal(turned, false, `${dtype}: answered within the call's own turn`);
        assert.equal(ort.computeThread, 'main');
        const want = await ref.forward({ sessionId: 'e', pos: 0, nTokens: tokens.length, tokens });
        assert.deepEqual(Array.from(got.hidden!), Array.from(want.hidden!), `${dtype}: rows differ from the reference engine's`);
        assert.equal(ort.sessionLength('e'), tokens.length);
        await assert.rejects(
          ort.forward({ sessionId: 'e', pos: 4, nTokens: 1, tokens: Int32Array.of(src.config.vocabSize) }),
          (e: unknown) => e instanceof EngineError && e.code === 'bad_input',
        );
      } finally {
        await ort.dispose();
        await ref.dispose();
        src.close();
      }
    }
  });

  async function vsReference(file: string, opts: OrtStageOptions, tol: number, refFile = file, embed = true): Promise<number> {
    const src = openModel(file);
    const refSrc = refFile === file ? src : openModel(refFile);
    const range = { ...full(src.config.nLayers), embed };
    const ort = await createOrtStage(src, range, { threads: 1, maxContext: 256, ...opts });
    try {
      const ref = createReferenceStage(refSrc, range);
      return await compareSteps(ort, ref, src.config.vocabSize, tol, JSON.stringify(opts));
    } finally {
      await ort.dispose();
      src.close();
      if (refSrc !== src) refSrc.close();
    }
  }

  it('GroupQueryAttention path (head size 32), f32: within 1e-4 through prefill, chunk, decode, truncation', async () => {
    await vsReference(files.f32!, { attention: 'gqa' }, 1e-4);
  });
  it('standard-op path on the same model agrees as well', async () => {
    await vsReference(files.f32!, { attention: 'std' }, 1e-4);
  });
  it('head size 64 (SmolLM2 shape, 2 layers, layers-only stage), both attention paths', async () => {
    const src = openModel(files.smol!);
    const c = src.config;
    const range: StageRange = { start: 0, end: 2, embed: false, head: false };
    const ref = createReferenceStage(src, range);
    const stages = [await createOrtStage(src, range, { threads: 1, attention: 'gqa' }), await createOrtStage(src, range, { threads: 1, attention: 'std' })];
    try {
      let seed = 1;
      const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
      const hid = Float32Array.from({ length: 40 * c.dim }, rnd);
      for (const [pos, n] of STEPS) {
        const inp: StageInput = { sessionId: 'h', pos, nTokens: n, hidden: hid.subarray(pos * c.dim, (pos + n) * c.dim) };
        const r = (await ref.forward(inp)).hidden!;
        for (const s of stages) {
          const d = maxDiff((await s.forward(inp)).hidden!, r);
          assert.ok(d < 1e-4, `${(s as unknown as { attention: string }).attention} pos=${pos} n=${n}: ${d}`);
        }
      }
    } finally {
      await Promise.all(stages.map((s) => s.dispose()));
      src.close();
    }
  });

  it('a prompt longer than one internal chunk (300 tokens) matches, all logits', async () => {
    const src = openModel(files.f32!);
    const c = src.config;
    const ort = await createOrtStage(src, full(c.nLayers), { threads: 1 });
    try {
      const ref = createReferenceStage(src, full(c.nLayers));
      const inp: StageInput = { sessionId: 'l', pos: 0, nTokens: 300, tokens: Int32Array.from({ length: 300 }, (_, i) => (i * 13 + 1) % c.vocabSize), allLogits: true };
      const [a, b] = [await ort.forward(inp), await ref.forward(inp)];
      assert.equal(a.logits!.length, 300 * c.vocabSize);
      assert.ok(maxDiff(a.logits!, b.logits!) < 1e-4, `diff ${maxDiff(a.logits!, b.logits!)}`);
      const dec: StageInput = { sessionId: 'l', pos: 300, nTokens: 1, tokens: Int32Array.of(7) };
      assert.ok(maxDiff((await ort.forward(dec)).logits!, (await ref.forward(dec)).logits!) < 1e-4);
    } finally {
      await ort.dispose();
      src.close();
    }
  });

  // accuracy_level 1 keeps activations fp32: the only difference left is summation order
  it('Q4_0 and Q8_0 files map exactly onto MatMulNBits (accuracy_level 1: within 1e-4)', async () => {
    await vsReference(files.q4_0!, { weights: 'q4', accuracyLevel: 1 }, 1e-4);
    await vsReference(files.q8_0!, { weights: 'q8', accuracyLevel: 1 }, 1e-4);
  });
  // (the embedding stays in its stored form, so this stage starts from hidden states)
  it('quantize-on-load from f32 equals the Q4_0 file (reference on the q4_0 weights)', async () => {
    await vsReference(files.f32!, { weights: 'q4', accuracyLevel: 1 }, 1e-4, files.q4_0!, false);
  });
  // accuracy_level 4 quantizes activations to int8 per block: a deliberate numeric change
  it('accuracy_level 4 (int8 activations) stays within 5% of the logit range', async () => {
    for (const [f, w] of [
      [files.q4_0!, 'q4'],
      [files.q8_0!, 'q8'],
    ] as const) {
      const d = await vsReference(f, { weights: w, accuracyLevel: 4 }, 0.05 * 13);
      assert.ok(d > 0, 'accuracy_level 4 should change numerics');
    }
  });

  it("computeThread 'main': the worker's outputs bit for bit (prefill, decode, a batch), errors keep their codes, and the caller's event loop waits while it computes", async (t) => {
    const src = openModel(files.smol!);
    const dim = src.config.dim;
    const range = { start: 0, end: 2, embed: false, head: false };
    const worker = await createOrtStage(src, range, { threads: 1 });
    // through createStage, as a node makes its stage
    const main = await createStage('ort', src, range, { threads: 1, computeThread: 'main' });
    assert.equal(main.computeThread, 'main');
    assert.equal(worker.computeThread, 'worker');
    const rows = (n: number, seed: number) => Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i * 0.37 + seed));
    const same = async (inputs: StageInput[], what: string) => {
      const a = inputs.length === 1 ? [await worker.forward(inputs[0]!)] : await worker.forwardBatch!(inputs);
      const b = inputs.length === 1 ? [await main.forward(inputs[0]!)] : await main.forwardBatch!(inputs);
      for (let i = 0; i < a.length; i++) assert.deepEqual(Array.from(b[i]!.hidden!), Array.from(a[i]!.hidden!), `${what}: row set ${i} differs`);
    };
    try {
      await same([{ sessionId: 'a', pos: 0, nTokens: 20, hidden: rows(20, 1) }], 'prefill');
      for (let p = 20; p < 23; p++) await same([{ sessionId: 'a', pos: p, nTokens: 1, hidden: rows(1, p) }], `decode ${p}`);
      await same(
        [
          { sessionId: 'a', pos: 23, nTokens: 1, hidden: rows(1, 23) },
          { sessionId: 'b', pos: 0, nTokens: 6, hidden: rows(6, 2) },
        ],
        'a batch of a decode step and a prompt',
      );
      assert.equal(main.sessionLength('a'), 24);
      assert.equal(main.sessionLength('b'), 6);
      await assert.rejects(
        main.forward({ sessionId: 'a', pos: 30, nTokens: 1, hidden: rows(1, 0) }),
        (e: unknown) => e instanceof EngineError && e.code === 'bad_input',
      );
      assert.equal(main.sessionLength('a'), 24, 'bad input loses nothing');
      // the runs hold this thread: its event loop is busy (not waiting in the poll) while a long
      // prompt computes, however loaded the machine; waiting on a worker it would be idle
      const busy = async (st: Stage, id: string) => {
        const e0 = performance.eventLoopUtilization();
        await st.forward({ sessionId: id, pos: 0, nTokens: 768, hidden: rows(768, 3) });
        return performance.eventLoopUtilization(e0).utilization;
      };
      const onMain = await busy(main, 'w');
      const onWorker = await busy(worker, 'w');
      t.diagnostic(`event-loop utilization during a 768-token prompt: ${onMain.toFixed(2)} computing on it, ${onWorker.toFixed(2)} on the worker`);
      assert.ok(onMain > 0.6, `the event loop was busy ${(onMain * 100).toFixed(0)} % of the prompt: not computed on this thread`);
    } finally {
      await worker.dispose();
      await main.dispose();
      src.close();
    }
  });

  it('keeps the event loop responsive during a long prefill', async (t) => {
    const src = openModel(files.smol!);
    const c = src.config;
    const st = await createOrtStage(src, { start: 0, end: 2, embed: false, head: false }, { threads: 1 });
    try {
      await st.forward({ sessionId: 'w', pos: 0, nTokens: 4, hidden: new Float32Array(4 * c.dim).fill(0.1) }); // warm-up
      // long enough that a blocked event loop would show (a quiet machine runs 768 tokens in ~100 ms)
      let n = 0;
      let maxLag = 0;
      let wall = 0;
      for (const len of [768, 1536, 3072].filter((x) => x <= c.contextLength)) {
        n = len;
        maxLag = 0;
        let last = performance.now();
        const timer = setInterval(() => {
          const now = performance.now();
          maxLag = Math.max(maxLag, now - last - 5);
          last = now;
        }, 5);
        const t0 = performance.now();
        await st.forward({ sessionId: 'w', pos: 0, nTokens: n, hidden: new Float32Array(n * c.dim).fill(0.1) });
        wall = performance.now() - t0;
        clearInterval(timer);
        if (wall > 150) break;
      }
      t.diagnostic(`prefill of ${n} tokens: ${wall.toFixed(0)} ms; max event-loop lag ${maxLag.toFixed(1)} ms`);
      assert.ok(wall > 100, `prefill too short to tell (${wall} ms)`);
      assert.ok(maxLag < Math.max(60, wall / 4), `event loop stalled ${maxLag.toFixed(1)} ms during a ${wall.toFixed(0)} ms prefill`);
    } finally {
      await st.dispose();
      src.close();
    }
  });
});

describe('ort engine: input validation and loading', () => {
  it('rejects bad input with EngineError and leaves the session usable', async () => {
    const src = openModel(STORIES_GGUF);
    const c = src.config;
    const mid = await createOrtStage(src, { start: 1, end: 3, embed: false, head: false }, { threads: 1 });
    const first = await createOrtStage(src, { start: 0, end: 1, embed: true, head: false }, { threads: 1 });
    try {
      const bad = (p: Promise<unknown>, code: string) => assert.rejects(p, (e: unknown) => e instanceof EngineError && e.code === code);
      await bad(mid.forward({ sessionId: 'x', pos: 0, nTokens: 2, hidden: new Float32Array(2 * c.dim + 1) }), 'bad_input');
      await bad(mid.forward({ sessionId: 'x', pos: 3, nTokens: 1, hidden: new Float32Array(c.dim) }), 'unknown_session');
      await mid.forward({ sessionId: 'x', pos: 0, nTokens: 2, hidden: new Float32Array(2 * c.dim) });
      await bad(mid.forward({ sessionId: 'x', pos: 5, nTokens: 1, hidden: new Float32Array(c.dim) }), 'bad_input');
      await bad(mid.forward({ sessionId: 'x', pos: 2, nTokens: 0, hidden: new Float32Array(0) }), 'bad_input');
      await bad(mid.forward({ sessionId: 'x', pos: c.contextLength, nTokens: 1, hidden: new Float32Array(c.dim) }), 'capacity');
      await bad(first.forward({ sessionId: 'y', pos: 0, nTokens: 1, tokens: Int32Array.of(c.vocabSize) }), 'bad_input');
      await bad(first.forward({ sessionId: 'y', pos: 0, nTokens: 2, tokens: Int32Array.of(1) }), 'bad_input');
      assert.equal(mid.sessionLength('x'), 2);
      const ok = await mid.forward({ sessionId: 'x', pos: 2, nTokens: 1, hidden: new Float32Array(c.dim) });
      assert.equal(ok.hidden!.length, c.dim);
      await assert.rejects(createOrtStage(src, { start: 3, end: 9, embed: false, head: false }), EngineError);
      await assert.rejects(createOrtStage(src, { start: 2, end: 2, embed: false, head: false }), EngineError);
    } finally {
      await Promise.all([mid.dispose(), first.dispose()]);
      src.close();
    }
  });

  it('reads only the tensors of its layer range', async () => {
    const src = openModel(STORIES_GGUF);
    const read: string[] = [];
    // a 'memory' source is read on this side (file sources are read by the worker, same list)
    const spy: WeightSource = Object.create(src, {
      format: { value: 'memory' },
      readRaw: { value: (n: string) => (read.push(n), src.readRaw(n)) },
      readF32: { value: (n: string) => (read.push(n), src.readF32(n)) },
    });
    const st = await createOrtStage(spy, { start: 2, end: 4, embed: false, head: false }, { threads: 1 });
    await st.dispose();
    src.close();
    assert.ok(read.length > 0);
    assert.deepEqual(
      read.filter((n) => !/^blk\.[23]\./.test(n)),
      [],
    );
  });

  it('Q4_0 nibbles are reordered to MatMulNBits order (element 2i low, 2i+1 high)', () => {
    const block = new Uint8Array(18);
    block[0] = 0x00;
    block[1] = 0x3c; // f16 1.0
    for (let j = 0; j < 16; j++) block[2 + j] = (j & 0xf) | (((j + 16) & 0xf) << 4); // element e holds e & 15
    const { b, scales } = q4_0ToNBits(block, 1);
    assert.equal(scales[0], 1);
    for (let i = 0; i < 16; i++) {
      assert.equal(b[i]! & 0xf, (2 * i) & 0xf);
      assert.equal(b[i]! >> 4, (2 * i + 1) & 0xf);
    }
  });
});
