// The API's charge hook (ApiServerOptions.onUsage → Gateway.chargeUsage → the ledger's
// settlement) through the real stack: two `odsi node` processes (stories260K, staked on a SQLite
// ledger), the production Gateway with that ledger, the API server wired as `odsi gateway` wires
// it, and the official `openai` client. Non-streamed and streamed requests are charged exactly the
// `usage` the API reported (× the price per token); a stream the client cuts off is charged what
// was generated before the cut; after settlement the ledger's account shows the sum. Each
// request's receipts are credited under the request's key while it runs (pending), and settle
// with its charge once the API ends it (onEnd → Gateway.endRequest).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Usage } from '../../src/api/shapes.js';
import { openDemoLedger, type DemoLedger } from '../../src/cli/demo-ledger.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { chargeFor } from '../../src/ledger/rules.js';
import { modelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import { LocalSwarm } from '../../src/node/local-swarm.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { openaiClient } from '../helpers/http.js';
import { serve, type Served } from '../helpers/served.js';

const MODEL = 'stories260K';
let dl: DemoLedger;
let swarm: LocalSwarm | undefined;
let served: Served<Gateway> | undefined;
/** what onUsage was called with, in order */
const usages: Usage[] = [];

before(
  async () => {
    dl = await openDemoLedger('sqlite', 2);
    const src = openModel(STORIES_GGUF);
    const { modelId } = modelIdentity(src);
    src.close();
    swarm = await LocalSwarm.start({
      model: STORIES_GGUF,
      modelId,
      ranges: [
        [0, 3],
        [3, 5],
      ],
      identityFile: (i) => dl.nodeKeyFile(i),
      readyTimeoutMs: 60_000,
    });
    const gw = await Gateway.start({
      modelPath: STORIES_GGUF,
      bootstrap: swarm.bootstrap,
      identity: dl.gateway,
      ledger: { ledger: dl.ledger, account: dl.client, epochMs: 0 },
      failover: { graceMs: 10_000, minStepMs: 2_000 },
    });
    // as src/cli/gateway.ts wires it
    served = await serve(gw, {
      onUsage: (u, request) => {
        usages.push(u);
        gw.chargeUsage(u.total_tokens, request);
      },
      onEnd: (request) => gw.endRequest(request),
    });
    await gw.waitForRoute(30_000);
  },
  { timeout: 120_000 },
);

after(async () => {
  await served?.close();
  await swarm?.stop();
  await dl?.close();
  if (dl) rmSync(dirname(dl.nodeKeyFile(0)), { recursive: true, force: true });
});

const settlement = () => served!.backend.settlement!;
const pending = () => settlement().pendingCharge(dl.client);
const price = (tokens: number) => chargeFor(tokens, dl.ledger.params);

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  for (const t0 = Date.now(); !cond(); await new Promise((r) => setTimeout(r, 20)))
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
}

test('non-streamed and streamed requests are charged the usage the API reported; a cut-off stream what it generated', { timeout: 90_000 }, async () => {
  const client = openaiClient(served!.url);
  const msgs = [{ role: 'user' as const, content: 'Tell me about a cat.' }];

  const chat = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 6, temperature: 0 });
  assert.ok(chat.usage && chat.usage.completion_tokens > 0);
  assert.deepEqual(usages.at(-1), chat.usage);
  assert.equal(pending(), price(chat.usage.total_tokens));
  // ended with its response: nothing of it is pending; every step was credited to its request
  assert.equal(settlement().pendingRequests, 0);
  assert.equal(settlement().unkeyedSteps, 0);
  let charged = pending();

  const stream = await client.completions.create({
    model: MODEL,
    prompt: 'Once upon a time',
    max_tokens: 6,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let reported: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined;
  for await (const ch of stream) if (ch.usage) reported = ch.usage;
  assert.ok(reported && reported.completion_tokens > 0, 'the stream reported its usage');
  await until('the streamed charge', () => usages.length === 2);
  assert.deepEqual(usages[1], reported);
  assert.equal(pending() - charged, price(reported.total_tokens));
  await until('the stream to end', () => settlement().pendingRequests === 0);
  charged = pending();

  // the client stops reading after 3 tokens and closes the connection: no usage reaches it, but
  // the tokens generated until the server noticed are charged
  const ac = new AbortController();
  const cut = await client.completions.create(
    { model: MODEL, prompt: 'Once upon a time', max_tokens: 200, temperature: 0, stream: true, stream_options: { include_usage: true } },
    { signal: ac.signal },
  );
  let seen = 0;
  let cutUsage = false;
  try {
    for await (const ch of cut) {
      if (ch.usage) cutUsage = true;
      if (ch.choices[0]?.text) seen++;
      if (seen === 3) {
        // running: its credits wait, under its key, for its end
        assert.equal(settlement().pendingRequests, 1);
        ac.abort();
      }
    }
  } catch (e) {
    assert.match((e as Error).name, /Abort/);
  }
  assert.equal(cutUsage, false);
  await until('the cut-off stream to be charged', () => usages.length === 3);
  const u = usages[2]!;
  assert.equal(u.prompt_tokens, reported.prompt_tokens);
  assert.ok(u.completion_tokens >= 3 && u.completion_tokens < 200, `charged ${u.completion_tokens} completion tokens after a cut at 3`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  assert.equal(pending() - charged, price(u.total_tokens));
  await until('the cut-off stream to end', () => settlement().pendingRequests === 0);
  assert.equal(settlement().unkeyedSteps, 0, 'every step was credited to its request');

  // settled: the ledger charged the client account the sum of what the API reported
  const before = BigInt((await dl.ledger.account(dl.client))!.charged);
  await served!.backend.settle();
  const after = BigInt((await dl.ledger.account(dl.client))!.charged);
  assert.equal(after - before, price(usages.reduce((a, x) => a + x.total_tokens, 0)));
});
