// The generation loop with provisional stage outputs (StageOutput.settled: a remote route whose
// receipts are still being checked): the next step goes out at once, no token is released before
// the logits it came from hold, a rejected step is run again and changes no token (greedy or
// seeded), and a stage that keeps failing ends the generation with its error.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createTokenizer, type Tokenizer } from '../../src/tokenizer/index.js';
import { buildLocalPipeline } from '../../src/engine/create.js';
import { MAX_REDO, PIPELINE_DEPTH, generate } from '../../src/engine/generate.js';
import type { Stage, StageInput, StageOutput } from '../../src/engine/types.js';

/** A real stage whose outputs are provisional: each settles `delayMs` later, or is rejected at the given positions (once each, or always). */
class ProvisionalStage implements Stage {
  readonly settledAt = new Set<number>();
  readonly forwards: number[] = [];
  /** forwards whose verdict is still open, and the most there ever were */
  open = 0;
  maxOpen = 0;
  private readonly rejectOnce: Set<number>;

  constructor(
    private readonly inner: Stage,
    private readonly o: { delayMs: number; rejectAt?: number[]; rejectAlways?: boolean },
  ) {
    this.rejectOnce = new Set(o.rejectAt ?? []);
  }
  get range() {
    return this.inner.range;
  }
  get config() {
    return this.inner.config;
  }
  get profile() {
    return this.inner.profile;
  }
  async forward(input: StageInput): Promise<StageOutput> {
    const out = await this.inner.forward(input);
    this.forwards.push(input.pos);
    const reject = this.o.rejectAlways || this.rejectOnce.delete(input.pos);
    this.open++;
    this.maxOpen = Math.max(this.maxOpen, this.open);
    const settled = new Promise<void>((resolve, rejectP) =>
      setTimeout(() => {
        this.open--;
        if (reject) return rejectP(new Error(`receipts for position ${input.pos} rejected`));
        this.settledAt.add(input.pos);
        resolve();
      }, this.o.delayMs),
    );
    settled.catch(() => undefined);
    return { ...out, settled };
  }
  sessionLength(id: string) {
    return this.inner.sessionLength(id);
  }
  closeSession(id: string) {
    this.inner.closeSession(id);
  }
  dispose() {
    return this.inner.dispose();
  }
}

describe('generate with provisional outputs', () => {
  let src: GgufFile;
  let tok: Tokenizer;
  let pipe: Stage[];
  const golden = loadGolden()[0];
  const prompt = golden.prompt_tokens;
  const N = 24;
  before(async () => {
    src = new GgufFile(STORIES_GGUF);
    tok = createTokenizer(src.tokenizer!);
    pipe = await buildLocalPipeline('reference', src, 2);
  });
  after(() => src?.close());
  const withProvisional = (o: ConstructorParameters<typeof ProvisionalStage>[1]) => {
    const p = new ProvisionalStage(pipe[0]!, o);
    return { p, stages: [p, ...pipe.slice(1)] };
  };

  it('sends steps ahead, releases each token only after its logits hold, and changes no token', async () => {
    const { p, stages } = withProvisional({ delayMs: 4 });
    const released: boolean[] = [];
    const r = await generate(stages, tok, prompt, {
      maxTokens: N,
      sampling: { temperature: 0 },
      onToken: (e) => released.push(p.settledAt.has(e.pos)),
    });
    assert.deepEqual(r.tokens, golden.generated_tokens.slice(0, N));
    assert.equal(released.length, N);
    assert.ok(released.every(Boolean), 'a token was released before its logits settled');
    // the verdicts took longer than the forwards: steps went out while earlier ones were being checked, within the depth
    assert.ok(p.maxOpen > 1, `no step was sent ahead (max open ${p.maxOpen})`);
    assert.ok(p.maxOpen <= PIPELINE_DEPTH + 1, `${p.maxOpen} steps open at once, depth is ${PIPELINE_DEPTH}`);
    // depth 0: every step waits for the previous verdict
    const serial = withProvisional({ delayMs: 2 });
    const s = await generate(serial.stages, tok, prompt, { maxTokens: 8, sampling: { temperature: 0 }, pipelineDepth: 0 });
    assert.deepEqual(s.tokens, golden.generated_tokens.slice(0, 8));
    assert.equal(serial.p.maxOpen, 1);
  });

  it('a rejected step is run again: greedy and seeded output equal the run without rejections', async () => {
    const pos = (step: number) => prompt.length + step - 1;
    assert.ok(prompt.length > 2);
    for (const sampling of [{ temperature: 0 }, { temperature: 0.9, topP: 0.9, seed: 7 }]) {
      const plain = await generate(pipe, tok, prompt, { maxTokens: N, sampling });
      // prefill in chunks of 2: the second chunk (position 2) is rejected too
      const { p, stages } = withProvisional({ delayMs: 2, rejectAt: [2, pos(3), pos(10), pos(11)] });
      const r = await generate(stages, tok, prompt, { maxTokens: N, sampling, prefillChunk: 2 });
      assert.deepEqual(r.tokens, plain.tokens, JSON.stringify(sampling));
      for (const x of [2, pos(3), pos(10), pos(11)]) assert.ok(p.forwards.filter((f) => f === x).length >= 2, `position ${x} was not run again`);
    }
  });

  it('a stage that keeps failing ends the generation with its error after a bounded number of re-runs', async () => {
    const { p, stages } = withProvisional({ delayMs: 0, rejectAlways: true });
    await assert.rejects(generate(stages, tok, prompt, { maxTokens: N, sampling: { temperature: 0 } }), /rejected/);
    assert.ok(p.forwards.length <= MAX_REDO + 2 + PIPELINE_DEPTH, `${p.forwards.length} forwards`);
  });
});
