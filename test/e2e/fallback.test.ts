// Cloud fallback against a real upstream: the same model served in-process by a second API
// server (LocalBackend), 3 `odsi node` processes (stories260K 0:2, 2:4, 4:5, one session per
// gateway each; the last slowed so a kill lands mid-generation) and in-process gateways over
// fixed peer lists. An uncovered layer, an overloaded swarm and the last node killed
// mid-generation with no spare all complete through the official openai client, marked as the
// fallback's, with the upstream's own greedy text; with the fallback off the same cases give the
// existing errors. Also `odsi gateway --fallback-url` with no swarm at all.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { createApiServer, type ApiServer } from '../../src/api/server.js';
import { createMetrics } from '../../src/api/metrics.js';
import { UpstreamFallback } from '../../src/api/fallback.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { LocalBackend } from '../../src/gateway/local.js';
import { modelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import { NodeProcess } from '../../src/node/process.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { startOdsi } from '../helpers/cli.js';
import { openaiClient, post } from '../helpers/http.js';
import { serve, type Served } from '../helpers/served.js';
import { parseExposition, total } from '../helpers/prometheus.js';
import { waitFor, within } from '../helpers/wait.js';
import { startedAll } from '../helpers/nodes.js';

const MODEL = 'stories260K';
const PROMPT = 'Once upon a time, there was a little girl';
let upstream: Served<LocalBackend> | undefined;
const nodes: NodeProcess[] = [];
const gateways: Gateway[] = [];
const servers: ApiServer[] = [];

async function gatewayOver(peers: RouteCandidate[]): Promise<Gateway> {
  const gw = await Gateway.start({ modelPath: STORIES_GGUF, peers, failover: { graceMs: 3_000, minStepMs: 1_000 } });
  gateways.push(gw);
  return gw;
}

/** an API server over `gw`, with the fallback to the upstream or without; its openai client */
async function api(gw: Gateway, withFallback: boolean): Promise<{ client: OpenAI; url: string; server: ApiServer }> {
  const server = createApiServer(gw, {
    metrics: createMetrics(),
    fallback: withFallback ? new UpstreamFallback({ url: `${upstream!.url}/v1`, timeoutMs: 60_000 }) : undefined,
  });
  servers.push(server);
  const url = await server.listen(0);
  return { client: openaiClient(url), url, server };
}

const cand = (n: NodeProcess): RouteCandidate => ({ ...n.info, load: 0, freeKvTokens: 100_000 });

before(
  async () => {
    upstream = await serve(await LocalBackend.open(STORIES_GGUF));
    const src = openModel(STORIES_GGUF);
    const { modelId } = modelIdentity(src);
    src.close();
    const ranges: [number, number][] = [
      [0, 2],
      [2, 4],
      [4, 5],
    ];
    await startedAll(
      ranges.map((range, i) =>
        NodeProcess.start({
          model: STORIES_GGUF,
          range,
          modelId,
          extraArgs: ['--max-sessions-per-peer', '1'],
          faults: i === 2 ? ['delay:25'] : undefined,
          readyTimeoutMs: 60_000,
        }),
      ),
      nodes,
    );
  },
  { timeout: 120_000 },
);

after(async () => {
  for (const s of servers) await s.close().catch(() => undefined);
  for (const g of gateways) await g.close().catch(() => undefined);
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await upstream?.close();
});

/** the upstream's own greedy completion text */
async function upstreamText(maxTokens: number): Promise<string> {
  const r = await openaiClient(upstream!.url).completions.create({ model: MODEL, prompt: PROMPT, max_tokens: maxTokens, temperature: 0 });
  return r.choices[0]!.text;
}

test('uncovered layer: served by the fallback (plain and streamed chat), marked; off: the no-route error', async () => {
  const gw = await gatewayOver(nodes.slice(0, 2).map(cand)); // layer 4 uncovered
  const on = await api(gw, true);
  const { data, response } = await on.client.completions
    .create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0 })
    .withResponse();
  assert.equal(response.headers.get('x-odsi-served-by'), 'fallback');
  assert.equal((data as unknown as { odsi: { served_by: string; fallback_reason: string } }).odsi.served_by, 'fallback');
  assert.equal((data as unknown as { odsi: { fallback_reason: string } }).odsi.fallback_reason, 'no-route');
  assert.equal(data.choices[0]!.text, await upstreamText(12));

  const msgs = [{ role: 'user' as const, content: 'Tell me about a cat.' }];
  const want = await openaiClient(upstream!.url).chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 10, temperature: 0 });
  const { data: stream, response: sr } = await on.client.chat.completions
    .create({ model: MODEL, messages: msgs, max_tokens: 10, temperature: 0, stream: true })
    .withResponse();
  assert.equal(sr.headers.get('x-odsi-served-by'), 'fallback');
  let text = '';
  for await (const ch of stream) text += ch.choices[0]?.delta.content ?? '';
  assert.equal(text, want.choices[0]!.message.content);

  const metrics = parseExposition(await (await fetch(`${on.url}/metrics`)).text());
  assert.equal(total(metrics, 'odsi_fallback_requests_total', 'odsi_fallback_requests_total', { reason: 'no-route' }), 2);
  const st = (await (await fetch(`${on.url}/v1/odsi/status`)).json()) as { fallback: { served: number; url: string } };
  assert.equal(st.fallback.served, 2);

  const off = await api(gw, false);
  await assert.rejects(
    off.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0 }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && e.code === 'no_route',
  );
});

test('overloaded swarm (every route refuses for capacity): served by the fallback; off: a 503', async () => {
  const gw = await gatewayOver(nodes.map(cand));
  const on = await api(gw, true);
  const off = await api(gw, false);
  // hold this gateway's one session per node: the next OPEN is refused as busy
  const held = gw.generate({ promptIds: [1, 403], maxTokens: 200, sampling: { temperature: 0 } });
  try {
    await held.next();
    const { data, response } = await on.client.completions
      .create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0 })
      .withResponse();
    assert.equal(response.headers.get('x-odsi-served-by'), 'fallback');
    assert.equal((data as unknown as { odsi: { fallback_reason: string } }).odsi.fallback_reason, 'overload');
    assert.equal(data.choices[0]!.text, await upstreamText(12));
    await assert.rejects(
      off.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0 }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && /busy|per-peer/.test(e.message),
    );
  } finally {
    await held.return(undefined as never);
  }
  // the swarm itself serves again once the session is released: the nodes free it when the
  // CLOSE reaches them, a moment after the generator returns (an OPEN in between is still
  // refused as busy), so wait for the swarm without the fallback first
  await waitFor(
    () =>
      off.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 1, temperature: 0 }).then(
        () => true,
        () => undefined,
      ),
    10_000,
    'the nodes to release the held session',
  );
  const { response } = await on.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 4, temperature: 0 }).withResponse();
  assert.equal(response.headers.get('x-odsi-served-by'), 'swarm');
});

test('a deadline the swarm cannot meet: served by the fallback', async () => {
  const on = await api(gateways[1]!, true); // all three nodes
  const r = await post(on.url, '/v1/completions', {
    model: MODEL,
    prompt: PROMPT,
    max_tokens: 12,
    temperature: 0,
    odsi: { deadline_ms: 0.001 },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.odsi.fallback_reason, 'deadline');
  assert.equal(r.json.choices[0].text, await upstreamText(12));
});

test('last node killed mid-generation with no spare: the stream continues on the fallback from the text so far', async () => {
  const gw = await gatewayOver(nodes.map(cand));
  const on = await api(gw, true);
  const N = 48;
  const want = await upstreamText(N);
  const { data: stream, response } = await on.client.completions
    .create({ model: MODEL, prompt: PROMPT, max_tokens: N, temperature: 0, stream: true })
    .withResponse();
  assert.equal(response.headers.get('x-odsi-served-by'), 'swarm');
  let text = '';
  let chunks = 0;
  let marked = 0;
  let killed: Promise<void> | undefined;
  for await (const ch of stream) {
    text += ch.choices[0]?.text ?? '';
    if ((ch as unknown as { odsi?: { served_by?: string } }).odsi?.served_by === 'fallback') marked++;
    if (++chunks === 3) killed = nodes[2]!.kill('SIGKILL');
  }
  await killed;
  assert.ok(marked > 0, 'the continuation is marked as the fallback’s');
  assert.equal(text, want);
  assert.ok(
    gw.faults.events().some((e) => e.type === 'failure'),
    'the swarm saw the failure',
  );
});

test('odsi gateway with no swarm and --fallback-url serves everything from the upstream', async () => {
  const gw = startOdsi([
    'gateway',
    '--model',
    STORIES_GGUF,
    '--port',
    '0',
    '--fallback-url',
    `${upstream!.url}/v1`,
    '--fallback-when',
    'no-route',
  ]);
  try {
    const ready = await gw.nextJson(60_000);
    assert.equal(ready.event, 'ready');
    assert.deepEqual(ready.fallback.when, ['no-route']);
    const { data, response } = await openaiClient(ready.url)
      .completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 8, temperature: 0 })
      .withResponse();
    assert.equal(response.headers.get('x-odsi-served-by'), 'fallback');
    assert.equal(data.choices[0]!.text, await upstreamText(8));
  } finally {
    gw.proc.kill('SIGTERM');
    await within(gw.exited, 5_000);
  }
});

test('an unreachable upstream gives a clear OpenAI-shaped error', async () => {
  const gw = gateways[0]!; // layer 4 uncovered
  const server = createApiServer(gw, { fallback: new UpstreamFallback({ url: 'http://127.0.0.1:9/v1', timeoutMs: 5_000 }) });
  servers.push(server);
  const client = openaiClient(await server.listen(0));
  await assert.rejects(
    client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 4, temperature: 0 }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 502 && e.code === 'fallback_unreachable',
  );
});
