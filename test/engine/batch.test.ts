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
