// The gateway over a real swarm: 3 `odsi node` processes (stories260K split 2/2/1) on
// 127.0.0.1, an in-process Gateway joined through the first, and the HTTP API in front.
// One swarm is shared by every test in this file; everything is killed in `after`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { LocalBackend } from '../../src/gateway/local.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { startOdsi } from '../helpers/cli.js';
import { openaiClient, post } from '../helpers/http.js';
import { serve, startSwarmGateway, type Served, type SwarmGateway } from '../helpers/served.js';
import { within } from '../helpers/wait.js';

const MODEL = 'stories260K';
let sg: SwarmGateway | undefined;
let local: Served<LocalBackend> | undefined;

before(
  async () => {
    sg = await startSwarmGateway({
      model: STORIES_GGUF,
      swarm: {
        ranges: [
          [0, 2],
          [2, 4],
          [4, 5],
        ],
        readyTimeoutMs: 60_000,
      },
      gateway: {
        refreshMs: 5_000,
        lookupTimeoutMs: 5_000,
        // these tests are about serving, not failover speed: on a loaded CI machine a slow step
        // must not be mistaken for a dead node
        failover: { graceMs: 10_000, minStepMs: 2_000 },
      },
    });
    await sg.backend.waitForRoute(30_000);
    // the same model in-process: what the swarm must reproduce
    local = await serve(await LocalBackend.open(STORIES_GGUF));
  },
  { timeout: 120_000 },
);

after(async () => {
  await local?.close();
  await sg?.close();
});

test('the route covers the model with the three nodes, in order', () => {
  const r = sg!.backend.route();
  assert.deepEqual(
    r.hops.map((h) => [h.peerId, h.start, h.end]),
    sg!.swarm.nodes.map((n) => [n.peerId, n.start, n.end]),
  );
});

test('greedy output through the swarm equals the golden tokens; timelines name the hops', async () => {
  for (const g of loadGolden()) {
    const r = await post(sg!.url, '/v1/completions', {
      model: MODEL,
      prompt: g.prompt,
      max_tokens: g.generated_tokens.length,
      temperature: 0,
      odsi: { timeline: true },
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      r.json.odsi.timeline.map((t: { token: number }) => t.token),
      g.generated_tokens,
      `prompt ${JSON.stringify(g.prompt)}`,
    );
    assert.equal(r.json.usage.prompt_tokens, g.prompt_tokens.length);
    const hops = r.json.odsi.timeline[5].hops as {
      node: string;
      role: string;
      start: number;
      end: number;
      computeMs: number;
      sendMs?: number;
    }[];
    assert.deepEqual(
      hops.map((h) => [h.role, h.start, h.end]),
      [
        ['embed', 0, 0],
        ['layers', 0, 2],
        ['layers', 2, 4],
        ['layers', 4, 5],
        ['head', 5, 5],
      ],
    );
    assert.deepEqual(
      hops.filter((h) => h.role === 'layers').map((h) => h.node),
      sg!.swarm.nodes.map((n) => n.peerId),
    );
    // each token's timeline carries its step's own round trip over the route, which holds every hop's own time
    type Hop = { role: string; computeMs: number; queueMs?: number; sendMs?: number };
    for (const t of r.json.odsi.timeline as { step: number; routeMs?: number; hops: Hop[] }[]) {
      const inHops = t.hops
        .filter((h) => h.role === 'layers')
        .reduce((a, h) => a + h.computeMs + (h.queueMs ?? 0) + (h.sendMs ?? 0), 0);
      assert.ok(t.routeMs !== undefined && t.routeMs >= inHops - 0.01, `step ${t.step}: routeMs ${t.routeMs} < hops' ${inHops}`);
    }
    assert.ok(hops.every((h) => h.computeMs >= 0 && Number.isFinite(h.computeMs)));
  }
});

test('official openai client against the gateway: chat and completion, streaming and not', async () => {
  const client = openaiClient(sg!.url);
  const msgs = [{ role: 'user' as const, content: 'Tell me about a cat.' }];
  const want = await post(local!.url, '/v1/chat/completions', { model: MODEL, messages: msgs, max_tokens: 10, temperature: 0 });
  const chat = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 10, temperature: 0 });
  assert.equal(chat.choices[0]!.message.content, want.json.choices[0].message.content);
  assert.equal(chat.usage!.prompt_tokens, want.json.usage.prompt_tokens);

  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: msgs,
    max_tokens: 10,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const ch of stream) {
    if (ch.choices.length) text += ch.choices[0]!.delta.content ?? '';
    else usage = ch.usage;
  }
  assert.equal(text, want.json.choices[0].message.content);
  assert.equal(usage?.completion_tokens, 10);

  const g = loadGolden()[1]!;
  const expected = local!.backend.tokenizer.decode(g.generated_tokens.slice(0, 12), { atStart: false });
  const c = await client.completions.create({ model: MODEL, prompt: g.prompt, max_tokens: 12, temperature: 0 });
  assert.equal(c.choices[0]!.text, expected);
  const cs = await client.completions.create({ model: MODEL, prompt: g.prompt, max_tokens: 12, temperature: 0, stream: true });
  let ctext = '';
  for await (const ch of cs) ctext += ch.choices[0]?.text ?? '';
  assert.equal(ctext, expected);
});

test('8 concurrent requests through one swarm each return what they return alone', async () => {
  const prompts = [
    'Once upon a time',
    'Lily wanted to',
    'The cat',
    'One day, Tom',
    'A big dog',
    'She saw a bird',
    'The sun was',
    'Ben and Mia',
  ];
  const bodies = prompts.map((p, i) => ({ model: MODEL, prompt: p, max_tokens: 8, temperature: i % 2 ? 0.8 : 0, seed: 100 + i }));
  const alone: string[] = [];
  for (const b of bodies) {
    const r = await post(sg!.url, '/v1/completions', b);
    assert.equal(r.status, 200, r.text);
    alone.push(r.json.choices[0].text);
  }
  const together = await Promise.all(bodies.map((b) => post(sg!.url, '/v1/completions', b)));
  for (const r of together) assert.equal(r.status, 200, r.text);
  assert.deepEqual(
    together.map((r) => r.json.choices[0].text),
    alone,
  );
  // and the swarm agrees with the in-process model
  const ref = await Promise.all(bodies.map((b) => post(local!.url, '/v1/completions', b)));
  assert.deepEqual(
    ref.map((r) => r.json.choices[0].text),
    alone,
  );
});

test('invalid requests get OpenAI-shaped errors; the gateway keeps serving', async () => {
  const cases: [unknown, number, string | null, boolean?][] = [
    ['{"model": "stories260K", "prompt": "x"', 400, null, true],
    [{ model: MODEL, prompt: 'x', max_tokens: '5' }, 400, 'max_tokens'],
    [{ model: MODEL, prompt: 'x', n: 9 }, 400, 'n'],
    [{ model: 'llama-70b', prompt: 'x' }, 404, 'model'],
    [{ model: MODEL, prompt: 'x', max_tokens: -1 }, 400, 'max_tokens'],
  ];
  for (const [body, status, param, raw] of cases) {
    const r = await post(sg!.url, '/v1/completions', body, { raw });
    assert.equal(r.status, status, r.text);
    assert.equal(typeof r.json.error.message, 'string');
    assert.equal(typeof r.json.error.type, 'string');
    if (param) assert.equal(r.json.error.param, param);
  }
  const ok = await post(sg!.url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 4, temperature: 0 });
  assert.equal(ok.status, 200, ok.text);
  const h = await fetch(`${sg!.url}/healthz`);
  assert.equal(h.status, 200);
  const hb = (await h.json()) as { status: string; nodes: unknown[]; route: unknown[] };
  assert.equal(hb.nodes.length, 3);
  assert.equal(hb.route.length, 3);
});

test('per-token deadlines: generous ones report slack per hop, impossible ones answer 504 without banning', async () => {
  const ok = await post(sg!.url, '/v1/completions', {
    model: MODEL,
    prompt: 'Once',
    max_tokens: 3,
    temperature: 0,
    odsi: { deadline_ms: 60_000, timeline: true },
  });
  assert.equal(ok.status, 200, ok.text);
  const hops = ok.json.odsi.timeline[1].hops.filter((h: { role: string }) => h.role === 'layers');
  assert.equal(hops.length, 3);
  for (const h of hops) {
    assert.ok(h.budgetInMs > 0 && h.budgetInMs <= 60_000, JSON.stringify(h));
    assert.ok(h.slackMs < h.budgetInMs, JSON.stringify(h));
  }
  const miss = await post(sg!.url, '/v1/completions', {
    model: MODEL,
    prompt: 'Once upon a time',
    max_tokens: 3,
    odsi: { deadline_ms: 0.001 },
  });
  assert.equal(miss.status, 504, miss.text);
  assert.equal(miss.json.error.code, 'route_deadline');
  assert.deepEqual([...sg!.backend.bans.active()], []);
  const after = await post(sg!.url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 3, temperature: 0 });
  assert.equal(after.status, 200, after.text);
});

test('odsi gateway (CLI process) joins the swarm and serves the API', { timeout: 120_000 }, async () => {
  const gateway = startOdsi(['gateway', '--model', STORIES_GGUF, '--port', '0', '--bootstrap', sg!.swarm.bootstrap[0]!, '--wait-route-ms', '30000']);
  try {
    const ready: { url: string; routeReady: boolean; model: string } = await gateway.nextJson(60_000);
    assert.equal(ready.model, MODEL);
    assert.equal(ready.routeReady, true);
    const g = loadGolden()[0]!;
    const r = await post(ready.url, '/v1/completions', {
      model: MODEL,
      prompt: g.prompt,
      max_tokens: 6,
      temperature: 0,
      odsi: { timeline: true },
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      r.json.odsi.timeline.map((t: { token: number }) => t.token),
      g.generated_tokens.slice(0, 6),
    );
  } finally {
    gateway.proc.kill('SIGTERM');
    const code = (await within(gateway.exited, 15_000)) ?? 'hung';
    if (code === 'hung') gateway.proc.kill('SIGKILL');
    assert.notEqual(code, 'hung', 'odsi gateway did not stop on SIGTERM');
  }
});

test('with a node banned the gateway answers 503 naming the uncovered layers, then recovers', async () => {
  const victim = sg!.swarm.nodes[2]!.peerId;
  for (let i = 0; i < 3; i++) sg!.backend.bans.ban(victim);
  try {
    const r = await post(sg!.url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 4 });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'no_route');
    assert.match(r.json.error.message, /layers 4 of 5/);
    const h = await fetch(`${sg!.url}/healthz`);
    assert.equal(h.status, 503);
    const m = await (await fetch(`${sg!.url}/metrics`)).text();
    assert.match(m, /odsi_route_failures_total\{reason="no_route"\} [1-9]/);
  } finally {
    sg!.backend.bans.clear(victim);
  }
  const ok = await post(sg!.url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 4, temperature: 0 });
  assert.equal(ok.status, 200, ok.text);
});

test('through the swarm: penalties, logit_bias, logprobs, n and structured output equal the in-process answer', async () => {
  const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'] };
  const body = {
    model: MODEL,
    messages: [{ role: 'user', content: 'Hi' }],
    seed: 3,
    temperature: 1,
    max_tokens: 80,
    n: 2,
    logprobs: true,
    top_logprobs: 2,
    presence_penalty: 1,
    logit_bias: { 5: -100 },
    response_format: { type: 'json_schema', json_schema: { name: 'p', schema } },
  };
  const swarm = await post(sg!.url, '/v1/chat/completions', body);
  const inProcess = await post(local!.url, '/v1/chat/completions', body);
  assert.equal(swarm.status, 200, swarm.text);
  assert.deepEqual(swarm.json.choices, inProcess.json.choices);
  for (const c of swarm.json.choices as { message: { content: string } }[]) assert.equal(typeof JSON.parse(c.message.content).age, 'number');
});

test('a node dying mid-stream with no replacement ends the SSE stream with an in-band error', { timeout: 120_000 }, async () => {
  const r = await fetch(`${sg!.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true }),
    signal: AbortSignal.timeout(100_000),
  });
  assert.equal(r.status, 200);
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let text = dec.decode((await reader.read()).value);
  await sg!.swarm.kill(2); // the only node serving layer 4
  for (let i = 0; i < 10_000; i++) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value);
  }
  const events = text.split('\n\n').filter((b) => b.startsWith('data: '));
  assert.equal(events.at(-1), 'data: [DONE]');
  const err = JSON.parse(events.at(-2)!.slice(6)) as { error?: { message: string; code: string } };
  assert.ok(err.error, `expected an error event, got ${events.at(-2)}`);
  assert.match(err.error.code, /^(no_route|route_)/);
  const m = await (await fetch(`${sg!.url}/metrics`)).text();
  assert.match(m, /odsi_route_failures_total\{reason="[a-z_]+"\} [1-9]/);
});
