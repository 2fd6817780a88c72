// Continuous batching on real `odsi node` processes, through the gateway and the official
// openai client: 16 concurrent greedy streams each produce exactly their solo output (on
// reference-engine nodes, and on ORT nodes with one long prompt among them); and a
// stream under a tight per-token deadline keeps it while a long prompt is prefilled on the
// same node (the node computes the prompt in chunks beside the stream's decode steps).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { openaiClient } from '../helpers/http.js';
import { serve, startSwarmGateway, type Served, type SwarmGateway } from '../helpers/served.js';
import { LocalBackend } from '../../src/gateway/local.js';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import type { LocalSwarmOptions } from '../../src/node/local-swarm.js';

const GATEWAY = { refreshMs: 5_000, lookupTimeoutMs: 5_000, failover: { graceMs: 10_000, minStepMs: 2_000 } };

/** streams one greedy completion; returns its text and when each chunk arrived */
async function stream(
  client: OpenAI,
  model: string,
  prompt: string,
  maxTokens: number,
  extra: object = {},
  onChunk?: (n: number) => void,
): Promise<{ text: string; at: number[] }> {
  const s = await client.completions.create({
    model,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    ...extra,
  } as OpenAI.CompletionCreateParamsStreaming);
  let text = '';
  const at: number[] = [];
  for await (const c of s) {
    const t = c.choices[0]?.text ?? '';
    if (t) at.push(performance.now());
    onChunk?.(at.length);
    text += t;
  }
  return { text, at };
}

/** the 3-node stories260K swarm of the 16-stream tests */
function storiesSwarm(extra: Partial<LocalSwarmOptions> = {}, gateway: Partial<GatewayOptions> = {}): Promise<SwarmGateway> {
  const ranges: [number, number][] = [
    [0, 2],
    [2, 4],
    [4, 5],
  ];
  return startSwarmGateway({
    model: STORIES_GGUF,
    swarm: { ranges, readyTimeoutMs: 120_000, benchTokens: 0, ...extra },
    gateway: { ...GATEWAY, ...gateway },
  });
}

describe('16 concurrent streams on a 3-node swarm (stories260K)', () => {
  let sg: SwarmGateway | undefined;
  let local: Served<LocalBackend> | undefined;
  let localClient: OpenAI;
  before(
    async () => {
      local = await serve(await LocalBackend.open(STORIES_GGUF));
      localClient = openaiClient(local.url);
      sg = await storiesSwarm();
      await sg.backend.waitForRoute(30_000);
    },
    { timeout: 180_000 },
  );
  after(async () => {
    await local?.close();
    await sg?.close();
  });

  test('every stream equals its solo run', { timeout: 120_000 }, async () => {
    const client = openaiClient(sg!.url);
    const names = ['Lily', 'Tom', 'Sue', 'Max', 'Ben', 'Mia', 'Sam', 'Zoe'];
    const prompts = names.flatMap((n) => [`${n} wanted to`, `Once upon a time, ${n}`]);
    assert.equal(prompts.length, 16);
    // solo runs: the same reference engine in-process (bit-identical to a lone run through the
    // swarm, which gateway-swarm.test checks), and two of them through the swarm itself
    const solo: string[] = [];
    for (const p of prompts) solo.push((await stream(localClient, 'stories260K', p, 16)).text);
    for (const i of [0, 9]) assert.equal((await stream(client, 'stories260K', prompts[i]!, 16)).text, solo[i]);
    const together = await Promise.all(prompts.map((p) => stream(client, 'stories260K', p, 16)));
    together.forEach((r, i) => assert.equal(r.text, solo[i], `stream ${i} (${JSON.stringify(prompts[i])})`));
    assert.ok(new Set(solo).size > 8, 'distinct prompts give distinct continuations');
  });

  test(
    'through a gateway sending decode steps in waves (as the demo does): every stream equals its solo run, in waves of several',
    { timeout: 120_000 },
    async () => {
      const names = ['Lily', 'Tom', 'Sue', 'Max', 'Ben', 'Mia', 'Sam', 'Zoe'];
      const prompts = names.flatMap((n) => [`${n} went to`, `Once upon a time, ${n}`]);
      const solo: string[] = [];
      for (const p of prompts) solo.push((await stream(localClient, 'stories260K', p, 16)).text);
      // a second gateway on the same nodes
      const waved = await serve(await Gateway.start({ ...GATEWAY, waves: true, modelPath: STORIES_GGUF, bootstrap: sg!.swarm.bootstrap }));
      try {
        await waved.backend.waitForRoute(30_000);
        const client = openaiClient(waved.url);
        const together = await Promise.all(prompts.map((p) => stream(client, 'stories260K', p, 16)));
        together.forEach((r, i) => assert.equal(r.text, solo[i], `stream ${i} (${JSON.stringify(prompts[i])})`));
        const { waves, steps } = waved.backend.waves!.stats;
        // 16 sessions × 15 decode steps; one at a time they would make as many waves as steps
        assert.ok(steps >= 16 * 15 && steps / waves >= 4, `${steps} decode steps in ${waves} waves`);
        assert.equal(waved.backend.waves!.routes, 0, 'no gate left once the streams ended');
      } finally {
        await waved.close();
      }
    },
  );
});

// The same on ORT nodes, whose batches run attention in a lane per session: each stream against
// its own solo run through this swarm (ORT's batched rows equal solo ones within rounding, and
// greedy tokens with them); one prompt is long, so it steps alone beside the short ones.
describe('16 concurrent streams on a 3-node ORT swarm (stories260K)', () => {
  let sg: SwarmGateway | undefined;
  before(
    async () => {
      // the middle node computes on its main thread (--compute-thread main), the others on their
      // engine's worker; the gateway's LM head is ORT's, on the gateway's main thread
      sg = await storiesSwarm(
        {
          engine: 'ort',
          metrics: true,
          extraArgs: ['--threads', '1'],
          nodeArgs: (i) => (i === 1 ? ['--compute-thread', 'main'] : []),
        },
        { engine: 'ort', computeThread: 'main' },
      );
      await sg.backend.waitForRoute(30_000);
    },
    { timeout: 180_000 },
  );
  after(async () => {
    await sg?.close();
  });

  test('every stream equals its solo run', { timeout: 120_000 }, async () => {
    assert.deepEqual(
      sg!.swarm.nodes.map((n) => n.computeThread),
      ['worker', 'main', 'worker'],
      'where each node says its engine computes',
    );
    const client = openaiClient(sg!.url);
    const names = ['Lily', 'Tom', 'Sue', 'Max', 'Ben', 'Mia', 'Sam', 'Zoe'];
    const prompts = names.flatMap((n) => [`${n} wanted to`, `Once upon a time, ${n}`]);
    prompts[5] = `${'Once upon a time, there was a little girl named Lily. She liked to play in the park. '.repeat(8)}One day`;
    const solo: string[] = [];
    for (const p of prompts) solo.push((await stream(client, 'stories260K', p, 16)).text);
    /** sessions' steps and scheduler iterations all nodes ran so far (odsi_node_batch_sessions) */
    const batches = async () => {
      let steps = 0;
      let iterations = 0;
      for (const n of sg!.swarm.nodes) {
        const text = await (await fetch(n.metrics!)).text();
        for (const l of text.split('\n')) {
          const v = Number(l.slice(l.lastIndexOf(' ') + 1));
          if (l.startsWith('odsi_node_batch_sessions_sum')) steps += v;
          if (l.startsWith('odsi_node_batch_sessions_count')) iterations += v;
        }
      }
      return { steps, iterations };
    };
    const before = await batches();
    const together = await Promise.all(prompts.map((p) => stream(client, 'stories260K', p, 16)));
    const after = await batches();
    together.forEach((r, i) => assert.equal(r.text, solo[i], `stream ${i} (${JSON.stringify(prompts[i]!.slice(0, 40))})`));
    assert.ok(new Set(solo).size > 8, 'distinct prompts give distinct continuations');
    // the concurrent run was batched: more sessions' steps than iterations
    assert.ok(
      after.steps - before.steps > 1.5 * (after.iterations - before.iterations),
      `steps ${after.steps - before.steps}, iterations ${after.iterations - before.iterations}`,
    );
  });
});

describe('a tight-deadline stream beside a long prefill on the same node', () => {
  let sg: SwarmGateway | undefined;
  let dir = '';
  before(
    async () => {
      dir = mkdtempSync(join(tmpdir(), 'odsi-batching-'));
      const model = join(dir, 'mid.gguf');
      // big enough that one 64-token prompt step takes far longer than the deadline
      await writeSyntheticGguf({
        shape: 'tiny',
        dtype: 'f32',
        seed: 1,
        out: model,
        nLayers: 8,
        progress: false,
        overrides: { dim: 384, ffnDim: 1152, nHeads: 6, nKvHeads: 2, headDim: 64 },
      });
      sg = await startSwarmGateway({
        model,
        swarm: { ranges: [[0, 8]], readyTimeoutMs: 120_000, extraArgs: ['--prefill-chunk', '8', '--batch-tokens', '9'] },
        // audits re-execute whole steps outside the token path's batching: not this test's subject
        gateway: { ...GATEWAY, accountability: { enabled: false } },
      });
      await sg.backend.waitForRoute(30_000);
    },
    { timeout: 180_000 },
  );
  after(async () => {
    await sg?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the stream keeps its deadline and keeps streaming while the prompt is prefilled', { timeout: 60_000 }, async () => {
    const client = openaiClient(sg!.url);
    const model = sg!.backend.model.id;
    const deadline = { odsi: { deadline_ms: 1500 } };
    // the long prompt starts once the tight stream is decoding
    let decoding!: () => void;
    const started = new Promise<void>((r) => (decoding = r));
    const tight = stream(client, model, 'a b c', 60, deadline, (n) => n === 2 && decoding());
    await Promise.race([started, tight]);
    const longStart = performance.now();
    const longReq = stream(client, model, 'the quick brown fox jumps over the lazy dog '.repeat(12), 2);
    const [t, l] = await Promise.all([tight, longReq]);
    // no step missed its deadline: a refused step is a route failure (retried on the only node)
    assert.deepEqual(sg!.backend.faults.counts(), { failures: 0, reroutes: 0, gaveUp: 0 });
    assert.ok(t.at.length >= 50, `tight stream produced ${t.at.length} chunks`);
    // and some arrived while the prompt was still being prefilled
    const prefillDone = l.at[0]!;
    const during = t.at.filter((x) => x > longStart && x < prefillDone).length;
    assert.ok(during >= 3, `${during} tight tokens while the long prompt prefilled (${(prefillDone - longStart).toFixed(0)} ms)`);
  });
});
