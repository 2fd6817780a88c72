// The generation loop on stories260K with the real tokenizer: streaming events, stop strings
// (held back, never returned), stop ids, token limit, abort, seeded sampling, session cleanup.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createTokenizer, type Tokenizer } from '../../src/tokenizer/index.js';
import { buildLocalPipeline } from '../../src/engine/create.js';
import { StopMatcher, generate, generateStream, type TokenEvent } from '../../src/engine/generate.js';
import type { Stage } from '../../src/engine/types.js';

describe('StopMatcher', () => {
  it('holds back a possible stop-string prefix and cuts at the first match', () => {
    const m = new StopMatcher(['Hello', 'lo!']);
    assert.deepEqual(m.push('abc Hel'), { release: 'abc ' });
    assert.deepEqual(m.push('p'), { release: 'Help' });
    assert.deepEqual(m.push('xx Hell'), { release: 'xx ' });
    assert.deepEqual(m.push('o! world'), { release: '', stop: 'Hello' });
    const n = new StopMatcher(['\n\n']);
    assert.deepEqual(n.push('a\n'), { release: 'a' });
    assert.equal(n.flush(), '\n');
    assert.deepEqual(new StopMatcher([]).push('x'), { release: 'x' });
  });
});

describe('generate', () => {
  let src: GgufFile;
  let tok: Tokenizer;
  let pipe: Stage[];
  const golden = loadGolden()[0];
  const prompt = golden.prompt_tokens;
  let fullText = '';
  before(async () => {
    src = new GgufFile(STORIES_GGUF);
    tok = createTokenizer(src.tokenizer!);
    pipe = await buildLocalPipeline('reference', src, 2);
  });
  after(() => src?.close());

  it('streams events whose texts concatenate to the result, and reports timings', async () => {
    const events: TokenEvent[] = [];
    const r = await generate(pipe, tok, prompt, { maxTokens: 60, sampling: { temperature: 0 }, onToken: (e) => events.push(e) });
    fullText = r.text;
    assert.deepEqual(r.tokens, golden.generated_tokens);
    assert.equal(r.text, tok.decode(r.tokens, { atStart: false }));
    assert.ok(r.text.startsWith(', there was'), JSON.stringify(r.text));
    assert.deepEqual(
      events.map((e) => e.id),
      r.tokens,
    );
    assert.deepEqual(
      events.map((e) => e.step),
      r.tokens.map((_, i) => i),
    );
    assert.equal(events.map((e) => e.text).join(''), r.text);
    assert.equal(r.promptTokens, prompt.length);
    assert.ok(r.timings.prefillMs > 0 && r.timings.msPerToken > 0 && r.timings.tokensPerS > 0);
    assert.deepEqual(
      r.stages.map((s) => [s.start, s.end, s.embed, s.head]),
      [
        [0, 3, true, false],
        [3, 5, false, true],
      ],
    );
    assert.ok(r.stages.every((s) => s.decodeMsPerToken > 0));
    for (const s of pipe) assert.equal(s.sessionLength('any'), 0);

    const streamed: number[] = [];
    for await (const e of generateStream(pipe, tok, prompt, { maxTokens: 60, sampling: { temperature: 0 } })) streamed.push(e.id);
    assert.deepEqual(streamed, golden.generated_tokens);
  });

  it('stops on a stop string spanning tokens, without returning it', async () => {
    const stop = 'girl named';
    const cut = fullText.indexOf(stop);
    assert.ok(cut > 0);
    const events: TokenEvent[] = [];
    const r = await generate(pipe, tok, prompt, {
      maxTokens: 60,
      sampling: { temperature: 0 },
      stop: ['zzz', stop],
      onToken: (e) => events.push(e),
    });
    assert.equal(r.finishReason, 'stop');
    assert.equal(r.stoppedBy, stop);
    assert.equal(r.text, fullText.slice(0, cut));
    assert.equal(events.map((e) => e.text).join(''), r.text, 'stop text never streamed');
    assert.ok(r.tokens.length < 60);
    // a stop string that never occurs: all text comes back, held-back tail included
    const r2 = await generate(pipe, tok, prompt, { maxTokens: 60, sampling: { temperature: 0 }, stop: [fullText.slice(-3) + 'qq'] });
    assert.equal(r2.text, fullText);
    assert.equal(r2.finishReason, 'length');
  });

  it('stops on a stop token id (not included), on the token limit, and on abort', async () => {
    const stopId = golden.generated_tokens[10];
    const withStop = { ...tok, stopIds: [stopId], createStreamDecoder: () => tok.createStreamDecoder() };
    const r = await generate(pipe, withStop, prompt, { maxTokens: 60, sampling: { temperature: 0 } });
    assert.equal(r.finishReason, 'stop');
    assert.equal(r.stoppedBy, stopId);
    assert.deepEqual(r.tokens, golden.generated_tokens.slice(0, golden.generated_tokens.indexOf(stopId)));

    const r5 = await generate(pipe, tok, prompt, { maxTokens: 5, sampling: { temperature: 0 } });
    assert.deepEqual(r5.tokens, golden.generated_tokens.slice(0, 5));
    assert.equal(r5.finishReason, 'length');
    const r0 = await generate(pipe, tok, prompt, { maxTokens: 0, sampling: { temperature: 0 }, returnPromptLogits: true });
    assert.deepEqual(r0.tokens, []);
    assert.equal(r0.promptLogits!.length, src.config.vocabSize);

    const ac = new AbortController();
    const ra = await generate(pipe, tok, prompt, {
      maxTokens: 60,
      sampling: { temperature: 0 },
      signal: ac.signal,
      onToken: (e) => e.step === 3 && ac.abort(),
    });
    assert.equal(ra.finishReason, 'abort');
    assert.equal(ra.tokens.length, 4);
    for (const s of pipe) assert.equal(s.sessionLength('any'), 0);
  });

  it('seeded sampling is reproducible end to end; chunked prefill matches', async () => {
    const run = (seed: number, prefillChunk = 64) =>
      generate(pipe, tok, prompt, { maxTokens: 30, sampling: { temperature: 1, topP: 0.9, seed }, prefillChunk, sessionId: 'fixed' });
    const a = await run(123);
    const b = await run(123, 2);
    const c = await run(124);
    assert.deepEqual(a.tokens, b.tokens);
    assert.equal(a.seed, 123);
    assert.notDeepEqual(a.tokens, c.tokens);
    for (const s of pipe) assert.equal(s.sessionLength('fixed'), 0, 'session closed');
  });

  it('caps new tokens at the context length and rejects bad calls', async () => {
    const ctx = src.config.contextLength;
    const long = [1, ...Array.from({ length: ctx - 4 }, (_, i) => 3 + (i % 500))];
    const r = await generate(pipe, tok, long, { maxTokens: 50, sampling: { temperature: 0 }, prefillChunk: 128 });
    assert.equal(r.tokens.length, 3);
    await assert.rejects(generate(pipe, tok, [], { maxTokens: 5, sampling: { temperature: 0 } }), /empty prompt/);
    await assert.rejects(generate(pipe.slice(1), tok, prompt, { maxTokens: 5, sampling: { temperature: 0 } }), /embedding/);
    await assert.rejects(generate(pipe, tok, prompt, { maxTokens: 5, sampling: { temperature: -1 } }), /temperature/);
  });
});
