// The OpenAI-compatible API over a real in-process pipeline (reference engine, stories260K,
// two stages): golden greedy output, the official openai client, SSE shapes, stop strings,
// usage, errors in OpenAI's shape, client disconnects, metrics and health.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { LocalBackend } from '../../src/gateway/local.js';
import { createApiServer } from '../../src/api/server.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openaiClient, post } from '../helpers/http.js';
import { serve, type Served } from '../helpers/served.js';

const MODEL = 'stories260K';
let api: Served<LocalBackend>;
let client: OpenAI;

before(async () => {
  api = await serve(await LocalBackend.open(STORIES_GGUF, { stages: 2 }));
  client = openaiClient(api.url, 30_000);
});
after(() => api?.close());

/** parse an SSE body into its data payloads */
function sseEvents(text: string): string[] {
  return text
    .split('\n\n')
    .filter((b) => b.trim())
    .map((b) => {
      assert.ok(b.startsWith('data: '), `bad SSE block ${JSON.stringify(b)}`);
      return b.slice(6);
    });
}

test('greedy completions equal the golden tokens (prompt as text and as token ids)', async () => {
  for (const g of loadGolden()) {
    const r = await post(api.url, '/v1/completions', {
      model: MODEL,
      prompt: g.prompt,
      max_tokens: g.generated_tokens.length,
      temperature: 0,
      odsi: { timeline: true },
    });
    assert.equal(r.status, 200, r.text);
    const ids = r.json.odsi.timeline.map((t: { token: number }) => t.token);
    assert.deepEqual(ids, g.generated_tokens, `prompt ${JSON.stringify(g.prompt)}`);
    assert.equal(r.json.usage.prompt_tokens, g.prompt_tokens.length);
    assert.equal(r.json.usage.completion_tokens, g.generated_tokens.length);
    assert.equal(r.json.choices[0].text, api.backend.tokenizer.decode(g.generated_tokens, { atStart: false }));
    assert.equal(r.json.choices[0].finish_reason, 'length');
    // every token's timeline names the stages that ran it
    const tl = r.json.odsi.timeline[3];
    assert.deepEqual(
      tl.hops.map((h: { start: number; end: number }) => [h.start, h.end]),
      [
        [0, 3],
        [3, 5],
      ],
    );
    assert.ok(tl.hops.every((h: { computeMs: number }) => h.computeMs >= 0));
    assert.equal(tl.routeMs, undefined, 'in-process stages: no route round trip');

    const r2 = await post(api.url, '/v1/completions', {
      model: MODEL,
      prompt: g.prompt_tokens,
      max_tokens: 20,
      temperature: 0,
      odsi: { timeline: true },
    });
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(
      r2.json.odsi.timeline.map((t: { token: number }) => t.token),
      g.generated_tokens.slice(0, 20),
    );
  }
});

test('official openai client: completion and chat, streaming and not', async () => {
  const g = loadGolden()[0]!;
  const want = api.backend.tokenizer.decode(g.generated_tokens.slice(0, 30), { atStart: false });

  const c = await client.completions.create({ model: MODEL, prompt: g.prompt, max_tokens: 30, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0]!.text, want);
  assert.equal(c.choices[0]!.finish_reason, 'length');
  assert.deepEqual(c.usage, { prompt_tokens: g.prompt_tokens.length, completion_tokens: 30, total_tokens: g.prompt_tokens.length + 30 });

  const cs = await client.completions.create({ model: MODEL, prompt: g.prompt, max_tokens: 30, temperature: 0, stream: true });
  let streamed = '';
  let finish: string | null = null;
  for await (const ch of cs) {
    streamed += ch.choices[0]?.text ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(streamed, want);
  assert.equal(finish, 'length');

  const msgs = [{ role: 'user' as const, content: 'Tell me a story about Lily.' }];
  const chat = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 25, temperature: 0 });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0]!.message.role, 'assistant');
  const chatText = chat.choices[0]!.message.content ?? '';
  assert.ok(chatText.length > 0);
  assert.equal(chat.usage!.completion_tokens, 25);

  const chatStream = await client.chat.completions.create({
    model: MODEL,
    messages: msgs,
    max_tokens: 25,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let chatStreamed = '';
  let role: string | undefined;
  let usage: OpenAI.CompletionUsage | undefined | null;
  let chatFinish: string | null = null;
  for await (const ch of chatStream) {
    if (ch.choices.length) {
      role ??= ch.choices[0]!.delta.role;
      chatStreamed += ch.choices[0]!.delta.content ?? '';
      chatFinish = ch.choices[0]!.finish_reason ?? chatFinish;
    } else usage = ch.usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(chatStreamed, chatText);
  assert.equal(chatFinish, 'length');
  assert.equal(usage?.completion_tokens, 25);
  assert.equal(usage?.prompt_tokens, chat.usage!.prompt_tokens);

  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    [MODEL],
  );
});

test('SSE wire format: chunk shapes, usage chunk, [DONE]', async () => {
  const r = await post(api.url, '/v1/chat/completions', {
    model: MODEL,
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 5,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(r.status, 200);
  const ev = sseEvents(r.text);
  assert.equal(ev.at(-1), '[DONE]');
  const chunks = ev.slice(0, -1).map((e) => JSON.parse(e));
  const id = chunks[0].id;
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, id);
    assert.equal(c.model, MODEL);
    assert.equal(typeof c.created, 'number');
    assert.ok('usage' in c);
  }
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 5);
  const fin = chunks.at(-2);
  assert.equal(fin.choices[0].finish_reason, 'length');
  assert.deepEqual(fin.choices[0].delta, {});
});

test('stop strings cut the text, streamed or not; seeds reproduce sampling', async () => {
  const g = loadGolden()[0]!;
  const full = api.backend.tokenizer.decode(g.generated_tokens, { atStart: false });
  const stop = 'Lily';
  const cut = full.slice(0, full.indexOf(stop));
  assert.ok(cut.length > 0 && cut.length < full.length);
  const r = await post(api.url, '/v1/completions', { model: MODEL, prompt: g.prompt, max_tokens: 60, temperature: 0, stop: [stop, 'zzz'] });
  assert.equal(r.json.choices[0].text, cut);
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.ok(r.json.usage.completion_tokens < 60);
  const s = await post(api.url, '/v1/completions', { model: MODEL, prompt: g.prompt, max_tokens: 60, temperature: 0, stop, stream: true });
  const text = sseEvents(s.text)
    .slice(0, -1)
    .map((e) => JSON.parse(e).choices[0].text)
    .join('');
  assert.equal(text, cut);

  const a = await post(api.url, '/v1/completions', { model: MODEL, prompt: g.prompt, max_tokens: 20, temperature: 0.9, top_p: 0.9, seed: 42 });
  const b = await post(api.url, '/v1/completions', { model: MODEL, prompt: g.prompt, max_tokens: 20, temperature: 0.9, top_p: 0.9, seed: 42 });
  assert.equal(a.json.choices[0].text, b.json.choices[0].text);
});

test('invalid requests get OpenAI-shaped errors with the right status; the server keeps serving', async () => {
  const cases: [string, unknown, number, string | null, boolean?][] = [
    ['/v1/completions', '{"model": "stories260K", "prompt": ', 400, null, true],
    ['/v1/completions', { model: MODEL, prompt: 42 }, 400, 'prompt'],
    ['/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 'ten' }, 400, 'max_tokens'],
    ['/v1/completions', { model: MODEL, prompt: 'x', max_tokens: -5 }, 400, 'max_tokens'],
    ['/v1/completions', { model: MODEL, prompt: 'x', n: 0 }, 400, 'n'],
    ['/v1/completions', { model: MODEL, prompt: 'x', n: 9 }, 400, 'n'],
    ['/v1/completions', { model: MODEL, prompt: 'x', temperature: 7 }, 400, 'temperature'],
    ['/v1/completions', { model: 'gpt-4', prompt: 'x' }, 404, 'model'],
    ['/v1/completions', { model: MODEL, prompt: [100000] }, 400, 'prompt'],
    ['/v1/chat/completions', { model: MODEL, messages: [] }, 400, 'messages'],
    ['/v1/chat/completions', { model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages.0.role'],
    ['/v1/chat/completions', [1, 2, 3], 400, null],
    ['/v1/completions', { model: MODEL, prompt: 'x', logprobs: 6 }, 400, 'logprobs'],
    ['/v1/completions', { model: MODEL, prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop'],
    ['/v1/nothing', {}, 404, null],
  ];
  for (const [path, body, status, param, raw] of cases) {
    const r = await post(api.url, path, body, { raw, timeoutMs: 30_000 });
    assert.equal(r.status, status, `${path} ${JSON.stringify(body)} → ${r.status} ${r.text}`);
    assert.equal(typeof r.json?.error?.message, 'string', r.text);
    assert.equal(typeof r.json.error.type, 'string');
    assert.ok('param' in r.json.error && 'code' in r.json.error);
    if (param) assert.equal(r.json.error.param, param, r.text);
  }
  const bad = await post(api.url, '/v1/completions', '{"model": ', { raw: true, timeoutMs: 30_000 });
  assert.equal(bad.json.error.code, 'invalid_json');
  const nf = await post(api.url, '/v1/completions', { model: 'gpt-4', prompt: 'x' });
  assert.equal(nf.json.error.code, 'model_not_found');
  // the openai client turns these into typed errors
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', n: 9 }), (e: unknown) => e instanceof OpenAI.BadRequestError);
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }), (e: unknown) => e instanceof OpenAI.NotFoundError);
  const ok = await post(api.url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 3, temperature: 0 });
  assert.equal(ok.status, 200);
});

test('a client that disconnects mid-stream stops the generation', async () => {
  const before = await metricValue('odsi_generated_tokens_total');
  const ac = new AbortController();
  const r = await fetch(api.url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 500, temperature: 0, stream: true }),
    signal: ac.signal,
  });
  const reader = r.body!.getReader();
  await reader.read(); // first chunk arrived: generation is running
  ac.abort();
  // bounded wait for the server to notice
  for (let i = 0; i < 100 && (await metricValue('odsi_active_requests')) !== 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(await metricValue('odsi_active_requests'), 0);
  const generated = (await metricValue('odsi_generated_tokens_total')) - before;
  assert.ok(generated < 500, `generation ran on after the client left (${generated} tokens)`);
});

test('concurrent requests each get what they get alone', async () => {
  const g = loadGolden();
  const bodies = Array.from({ length: 6 }, (_, i) => ({
    model: MODEL,
    prompt: g[i % g.length]!.prompt,
    max_tokens: 12 + i,
    temperature: i % 2 ? 0.8 : 0,
    seed: i,
  }));
  const alone: string[] = [];
  for (const b of bodies) alone.push((await post(api.url, '/v1/completions', b)).json.choices[0].text);
  const together = await Promise.all(bodies.map((b) => post(api.url, '/v1/completions', b)));
  assert.deepEqual(
    together.map((r) => r.json.choices[0].text),
    alone,
  );
});

test('metrics and health', async () => {
  const h = await fetch(api.url + '/healthz');
  assert.equal(h.status, 200);
  assert.equal(((await h.json()) as { status: string }).status, 'ok');
  const m = await (await fetch(api.url + '/metrics')).text();
  for (const name of [
    'odsi_requests_total',
    'odsi_generated_tokens_total',
    'odsi_token_latency_seconds_bucket',
    'odsi_route_failures_total',
    'odsi_time_to_first_token_seconds',
  ]) {
    assert.ok(m.includes(name), `metrics lack ${name}`);
  }
  assert.match(m, /odsi_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/);
});

async function metricValue(name: string): Promise<number> {
  const m = await (await fetch(api.url + '/metrics')).text();
  const line = m.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

test('over the concurrency limit a request gets 503 capacity; the model endpoint answers', async () => {
  const small = createApiServer(api.backend, { maxConcurrent: 1 });
  const base = await small.listen(0);
  try {
    const ac = new AbortController();
    const first = await fetch(base + '/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 500, temperature: 0, stream: true }),
      signal: ac.signal,
    });
    const reader = first.body!.getReader();
    await reader.read(); // the first request is generating
    const r = await fetch(base + '/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'Once', max_tokens: 2 }),
    });
    assert.equal(r.status, 503);
    const body = (await r.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'capacity');
    ac.abort();
  } finally {
    await small.close();
  }
  const m = await fetch(`${api.url}/v1/models/${MODEL}`);
  assert.equal(m.status, 200);
  assert.equal(((await m.json()) as { id: string }).id, MODEL);
  const unknown = await fetch(`${api.url}/v1/models/gpt-4`);
  assert.equal(unknown.status, 404);
});
