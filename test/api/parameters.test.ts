// Every parameter of OpenAI's chat and completions create calls, through the official openai
// client against the in-process backend (reference engine, stories260K): each is honoured with
// an asserted effect, or refused with a 400 that names it. Structured output: 50 seeded samples
// at temperature 1 all parse and validate against the schema.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionCreateParams } from 'openai/resources/chat/completions';
import type { Completion, CompletionCreateParams } from 'openai/resources/completions';
import { LocalBackend } from '../../src/gateway/local.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { openaiClient, post } from '../helpers/http.js';
import { serve, type Served } from '../helpers/served.js';

const MODEL = 'stories260K';
const PROMPT = 'Once upon a time';
const USER = [{ role: 'user' as const, content: 'Tell me a story.' }];
let api: Served<LocalBackend>;
let client: OpenAI;

before(async () => {
  api = await serve(await LocalBackend.open(STORIES_GGUF, { stages: 2 }));
  client = openaiClient(api.url, 60_000);
});
after(() => api?.close());

type Body = Record<string, unknown>;
const chat = (b: Body) =>
  client.chat.completions.create({
    model: MODEL,
    messages: USER,
    ...b,
  } as unknown as ChatCompletionCreateParams) as Promise<ChatCompletion>;
const complete = (b: Body) =>
  client.completions.create({ model: MODEL, prompt: PROMPT, ...b } as unknown as CompletionCreateParams) as Promise<Completion>;
async function chatStream(b: Body): Promise<ChatCompletionChunk[]> {
  const s = await client.chat.completions.create({
    model: MODEL,
    messages: USER,
    ...b,
    stream: true,
  } as unknown as ChatCompletionCreateParams);
  const out: ChatCompletionChunk[] = [];
  for await (const c of s as AsyncIterable<ChatCompletionChunk>) out.push(c);
  return out;
}
async function completeStream(b: Body): Promise<Completion[]> {
  const s = await client.completions.create({ model: MODEL, prompt: PROMPT, ...b, stream: true } as unknown as CompletionCreateParams);
  const out: Completion[] = [];
  for await (const c of s as AsyncIterable<Completion>) out.push(c);
  return out;
}
/** generated token ids of a completion (odsi's timeline extension) */
async function tokenIds(b: Body): Promise<number[]> {
  const r = await post(api.url, '/v1/completions', { model: MODEL, prompt: PROMPT, ...b, odsi: { timeline: true } });
  assert.equal(r.status, 200, r.text);
  return r.json.odsi.timeline.map((t: { token: number }) => t.token);
}
/** the call is refused with a 400 naming `param`, and the message matching `msg` */
async function refused(call: Promise<unknown>, param: string, msg?: RegExp): Promise<void> {
  await assert.rejects(call, (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `expected a 400, got ${String(e)}`);
    assert.equal(e.param, param, e.message);
    if (msg) assert.match(e.message, msg);
    return true;
  });
}
const distinct = (ids: number[]) => new Set(ids).size;

describe('sampling parameters', () => {
  test('max_tokens, max_completion_tokens, temperature, top_p, seed, stop, user', async () => {
    assert.equal((await complete({ max_tokens: 7, temperature: 0 })).usage?.completion_tokens, 7);
    assert.equal((await chat({ max_completion_tokens: 5, temperature: 0 })).usage?.completion_tokens, 5);
    assert.equal((await chat({ max_tokens: 6, temperature: 0 })).usage?.completion_tokens, 6);
    const greedy = await tokenIds({ max_tokens: 16, temperature: 0 });
    // a tiny nucleus keeps only the most likely token: sampling at temperature 1 is greedy
    assert.deepEqual(await tokenIds({ max_tokens: 16, temperature: 1, top_p: 1e-6, seed: 3 }), greedy);
    const a = await tokenIds({ max_tokens: 16, temperature: 1, seed: 11 });
    assert.deepEqual(await tokenIds({ max_tokens: 16, temperature: 1, seed: 11 }), a);
    assert.notDeepEqual(await tokenIds({ max_tokens: 16, temperature: 1, seed: 12 }), a);
    const full = (await complete({ max_tokens: 30, temperature: 0 })).choices[0].text;
    const cut = full.slice(4, 7);
    const stopped = await complete({ max_tokens: 30, temperature: 0, stop: [cut] });
    assert.equal(stopped.choices[0].text, full.slice(0, full.indexOf(cut)));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    // an end-user id is accepted and does not change the output
    assert.equal((await complete({ max_tokens: 30, temperature: 0, user: 'u-1' })).choices[0].text, full);
    assert.equal((await chat({ max_tokens: 4, temperature: 0, prompt_cache_key: 'k', safety_identifier: 's' })).choices.length, 1);
    const usage = (await chatStream({ max_tokens: 5, stream_options: { include_usage: true } })).at(-1)!;
    assert.equal(usage.usage?.completion_tokens, 5);
    assert.deepEqual(usage.choices, []);
  });

  test('presence_penalty and frequency_penalty change the distribution as specified', async () => {
    const base = await tokenIds({ max_tokens: 60, temperature: 0 });
    const presence = await tokenIds({ max_tokens: 60, temperature: 0, presence_penalty: 2 });
    const frequency = await tokenIds({ max_tokens: 60, temperature: 0, frequency_penalty: 2 });
    const encourage = await tokenIds({ max_tokens: 60, temperature: 0, frequency_penalty: -2 });
    assert.ok(distinct(presence) > distinct(base), `presence 2: ${distinct(presence)} distinct vs ${distinct(base)}`);
    assert.ok(distinct(frequency) > distinct(base), `frequency 2: ${distinct(frequency)} distinct vs ${distinct(base)}`);
    assert.ok(distinct(encourage) < distinct(base), `frequency -2: ${distinct(encourage)} distinct vs ${distinct(base)}`);
    // the penalty applies to generated tokens only: the first token is unchanged
    assert.equal(presence[0], base[0]);
    await refused(complete({ presence_penalty: 2.5 }), 'presence_penalty');
    await refused(chat({ frequency_penalty: -3 }), 'frequency_penalty');
  });

  test('logit_bias: -100 bans a token, +100 forces it; keys are checked', async () => {
    const base = await tokenIds({ max_tokens: 20, temperature: 0 });
    const banned = await tokenIds({ max_tokens: 20, temperature: 0, logit_bias: { [base[0]]: -100, [base[1]]: -100 } });
    assert.ok(!banned.includes(base[0]) && !banned.includes(base[1]), `banned tokens appear: ${banned}`);
    const seeded = await tokenIds({ max_tokens: 20, temperature: 1, seed: 5, logit_bias: { [base[0]]: -100 } });
    assert.ok(!seeded.includes(base[0]));
    const forced = await tokenIds({ max_tokens: 5, temperature: 1, seed: 5, logit_bias: { 300: 100 } });
    assert.deepEqual(forced, [300, 300, 300, 300, 300]);
    await refused(complete({ logit_bias: { '1.5': 3 } }), 'logit_bias', /token ids/);
    await refused(chat({ logit_bias: { 7: 101 } }), 'logit_bias', /\[-100, 100\]/);
    await refused(complete({ logit_bias: { 99999: 1 } }), 'logit_bias');
    const all = Object.fromEntries(Array.from({ length: api.backend.tokenizer.vocabSize }, (_, i) => [i, -100]));
    await assert.rejects(
      complete({ logit_bias: all }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /bans every token/.test(e.message),
    );
  });
});

describe('logprobs, n, best_of, echo, suffix', () => {
  test('chat logprobs / top_logprobs, streamed and not', async () => {
    const r = await chat({ max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0].logprobs!.content!;
    assert.equal(content.length, r.usage!.completion_tokens);
    assert.equal(content.map((c) => c.token).join(''), r.choices[0].message.content);
    let sum = 0;
    for (const c of content) {
      assert.ok(c.logprob <= 0);
      sum += c.logprob;
      assert.equal(c.top_logprobs.length, 3);
      // greedy: the chosen token is the most likely one
      assert.equal(c.top_logprobs[0].token, c.token);
      assert.equal(c.top_logprobs[0].logprob, c.logprob);
      assert.ok(c.top_logprobs[1].logprob <= c.top_logprobs[0].logprob);
      assert.deepEqual(c.bytes, [...Buffer.from(c.token)]);
    }
    assert.ok(sum <= 0);
    const chunks = await chatStream({ max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    assert.deepEqual(
      streamed.map((c) => [c.token, c.logprob]),
      content.map((c) => [c.token, c.logprob]),
    );
    const none = await chat({ max_tokens: 3, logprobs: false });
    assert.equal(none.choices[0].logprobs, null);
    await refused(chat({ logprobs: true, top_logprobs: 21 }), 'top_logprobs');
    await refused(chat({ top_logprobs: 2 }), 'top_logprobs', /needs 'logprobs'/);
  });

  test('completions logprobs, streamed and not', async () => {
    const r = await complete({ max_tokens: 10, temperature: 1, seed: 4, logprobs: 2 });
    const lp = r.choices[0].logprobs!;
    assert.equal(lp.tokens!.join(''), r.choices[0].text);
    assert.equal(lp.token_logprobs!.length, 10);
    assert.ok(lp.token_logprobs!.every((x) => x <= 0));
    assert.ok(lp.top_logprobs!.every((t) => Object.keys(t).length <= 2 && Object.keys(t).length >= 1));
    let at = 0;
    lp.tokens!.forEach((t, i) => {
      assert.equal(lp.text_offset![i], at);
      at += t.length;
    });
    const chunks = await completeStream({ max_tokens: 10, temperature: 1, seed: 4, logprobs: 2 });
    assert.deepEqual(
      chunks.flatMap((c) => c.choices[0]?.logprobs?.token_logprobs ?? []),
      lp.token_logprobs,
    );
    await refused(complete({ logprobs: 6 }), 'logprobs');
  });

  test('n choices: distinct, reproducible with seed; streamed with their index', async () => {
    const a = await chat({ n: 2, seed: 21, temperature: 1, max_tokens: 16 });
    assert.equal(a.choices.length, 2);
    assert.deepEqual(
      a.choices.map((c) => c.index),
      [0, 1],
    );
    assert.notEqual(a.choices[0].message.content, a.choices[1].message.content);
    const b = await chat({ n: 2, seed: 21, temperature: 1, max_tokens: 16 });
    assert.deepEqual(
      b.choices.map((c) => c.message.content),
      a.choices.map((c) => c.message.content),
    );
    assert.equal(a.usage!.completion_tokens, 32);
    // choice 0 is the n=1 generation with the same seed
    assert.equal((await chat({ seed: 21, temperature: 1, max_tokens: 16 })).choices[0].message.content, a.choices[0].message.content);
    const chunks = await completeStream({ n: 2, seed: 21, temperature: 1, max_tokens: 8 });
    const texts = ['', ''];
    for (const c of chunks) for (const ch of c.choices) texts[ch.index] += ch.text;
    const whole = await complete({ n: 2, seed: 21, temperature: 1, max_tokens: 8 });
    assert.deepEqual(
      texts,
      whole.choices.map((c) => c.text),
    );
    await refused(chat({ n: 9 }), 'n');
  });

  test('best_of returns the candidates with the highest total logprob', async () => {
    const seed = 40;
    const single = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const c = (await complete({ seed: seed + i, temperature: 1, max_tokens: 8, logprobs: 0 })).choices[0];
        return { text: c.text, total: c.logprobs!.token_logprobs!.reduce((x, y) => x + y, 0) };
      }),
    );
    const best = [...single].sort((x, y) => y.total - x.total);
    const r = await complete({ seed, temperature: 1, max_tokens: 8, best_of: 3, n: 2 });
    assert.deepEqual(
      r.choices.map((c) => c.text),
      best.slice(0, 2).map((c) => c.text),
    );
    assert.equal(r.usage!.completion_tokens, 24);
    await refused(complete({ best_of: 1, n: 2 }), 'best_of', /at least 'n'/);
    await refused(completeStream({ best_of: 2 }), 'best_of', /cannot be streamed/);
  });

  test('echo puts the prompt before the text; suffix needs fill-in-the-middle tokens', async () => {
    const plain = await complete({ max_tokens: 6, temperature: 0 });
    const echoed = await complete({ max_tokens: 6, temperature: 0, echo: true });
    assert.equal(echoed.choices[0].text, PROMPT + plain.choices[0].text);
    const chunks = await completeStream({ max_tokens: 6, temperature: 0, echo: true });
    assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), PROMPT + plain.choices[0].text);
    await refused(complete({ echo: true, logprobs: 1 }), 'echo');
    await refused(complete({ suffix: 'The end.' }), 'suffix', /fill-in-the-middle/);
  });
});

describe('structured output', () => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string' }, age: { type: 'integer' } },
    required: ['name', 'age'],
    additionalProperties: false,
  };

  test('json_schema: 50 seeded samples at temperature 1 all parse and validate', async () => {
    for (let seed = 0; seed < 50; seed++) {
      const r = await chat({
        seed,
        temperature: 1,
        max_tokens: 200,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } },
      });
      const text = r.choices[0].message.content!;
      const v = JSON.parse(text) as Record<string, unknown>;
      assert.deepEqual(Object.keys(v).sort(), ['age', 'name'], text);
      assert.equal(typeof v.name, 'string', text);
      assert.ok(Number.isInteger(v.age), text);
      assert.ok(r.usage!.completion_tokens <= 200);
    }
  });

  test('a short budget steers the document closed; enums, arrays, nested objects', async () => {
    const nested = {
      type: 'object',
      properties: {
        mood: { enum: ['happy', 'sad'] },
        tags: { type: 'array', items: { type: 'string' } },
        pet: { type: 'object', properties: { legs: { type: 'number' }, good: { type: 'boolean' } }, required: ['legs', 'good'] },
      },
      required: ['mood', 'tags', 'pet'],
    };
    for (let seed = 0; seed < 5; seed++) {
      const r = await chat({
        seed,
        temperature: 1,
        max_tokens: 60,
        response_format: { type: 'json_schema', json_schema: { name: 'n', schema: nested } },
      });
      const v = JSON.parse(r.choices[0].message.content!) as { mood: string; tags: unknown[]; pet: { legs: number; good: boolean } };
      assert.ok(['happy', 'sad'].includes(v.mood));
      assert.ok(Array.isArray(v.tags) && v.tags.every((t) => typeof t === 'string'));
      assert.equal(typeof v.pet.legs, 'number');
      assert.equal(typeof v.pet.good, 'boolean');
      assert.equal(r.choices[0].finish_reason, 'stop');
    }
    for (let seed = 0; seed < 5; seed++) {
      const r = await chat({ seed, temperature: 1, max_tokens: 60, response_format: { type: 'json_object' } });
      const v: unknown = JSON.parse(r.choices[0].message.content!);
      assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v));
    }
    const streamed = await chatStream({
      seed: 1,
      temperature: 1,
      max_tokens: 60,
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema } },
    });
    JSON.parse(streamed.map((c) => c.choices[0]?.delta?.content ?? '').join(''));
    const text = await chat({ max_tokens: 3, response_format: { type: 'text' } });
    assert.equal(text.choices.length, 1);
  });

  test('schema keywords outside the supported subset are refused by name', async () => {
    const rf = (s: unknown) => ({ type: 'json_schema', json_schema: { name: 'x', schema: s } });
    await refused(
      chat({ response_format: rf({ type: 'object', properties: { a: { type: 'string', pattern: '^a' } } }) }),
      'response_format.json_schema.schema.properties.a.pattern',
      /unsupported JSON-schema keyword 'pattern'/,
    );
    await refused(
      chat({ response_format: rf({ type: 'object', properties: { a: { type: ['string', 'null'] } } }) }),
      'response_format.json_schema.schema.properties.a.type',
    );
    await refused(chat({ response_format: rf({ type: 'string' }) }), 'response_format.json_schema.schema.type');
    await refused(chat({ response_format: { type: 'yaml' } }), 'response_format.type');
    await refused(chat({ max_tokens: 3, response_format: rf(schema) }), 'max_tokens', /at least/);
  });
});

describe('refused parameters and specific validation messages', () => {
  test('tools and the rest of what this server cannot do: 400 naming the parameter', async () => {
    const tool = { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } };
    await refused(chat({ tools: [tool] }), 'tools', /chat template does not support tools/);
    await refused(chat({ tool_choice: 'auto' }), 'tool_choice');
    await refused(chat({ parallel_tool_calls: true }), 'parallel_tool_calls');
    await refused(chat({ functions: [tool.function] }), 'functions');
    await refused(chat({ function_call: 'auto' }), 'function_call');
    await refused(chat({ audio: { voice: 'alloy', format: 'wav' } }), 'audio');
    await refused(chat({ modalities: ['text', 'audio'] }), 'modalities');
    await refused(chat({ prediction: { type: 'content', content: 'x' } }), 'prediction');
    await refused(chat({ reasoning_effort: 'low' }), 'reasoning_effort');
    await refused(chat({ verbosity: 'low' }), 'verbosity');
    await refused(chat({ web_search_options: {} }), 'web_search_options');
    await refused(chat({ store: true }), 'store');
    await refused(chat({ metadata: { a: 'b' } }), 'metadata');
    await refused(chat({ service_tier: 'flex' }), 'service_tier');
    await refused(chat({ frobnicate: 1 }), 'frobnicate', /unknown parameter/);
    await refused(complete({ frobnicate: 1 }), 'frobnicate', /unknown parameter/);
    await refused(chat({ messages: [{ role: 'user', content: 'x', name: 'bob' }] }), 'messages.0.name', /unknown parameter/);
    // what they allow is honoured
    const ok = await chat({
      max_tokens: 2,
      tools: [],
      tool_choice: 'none',
      modalities: ['text'],
      store: false,
      service_tier: 'auto',
      metadata: {},
    });
    assert.equal(ok.choices.length, 1);
  });

  test('validation messages say what is wrong', async () => {
    await refused(complete({ stop: ['a', 'b', 'c', 'd', 'e'] }), 'stop', /at most 4 sequences, got 5/);
    await refused(
      chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }),
      'messages.0.content.0.type',
      /only text content parts are supported/,
    );
    await refused(complete({ prompt: [1, 2.5, 3] }), 'prompt', /non-negative integers; prompt\[1\] is 2.5/);
    await refused(complete({ prompt: ['a', 'b'] }), 'prompt', /batches/);
    const proto = await post(api.url, '/v1/completions', `{"model":"${MODEL}","prompt":"x","__proto__":{"a":1}}`, { raw: true });
    assert.equal(proto.status, 400, proto.text);
    assert.equal(proto.json.error.param, '__proto__');
    assert.match(proto.json.error.message, /'__proto__'/);
  });
});
