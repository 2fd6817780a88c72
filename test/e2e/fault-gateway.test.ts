// Fault tolerance through the real Gateway (DHT discovery, router, ban list, HTTP API):
// 3 `odsi node` processes serve stories260K as [0,2) [2,5) [2,5).
//  - the [2,5) node on the route is SIGKILLed mid-generation: the same session continues on
//    the spare (replay), the output equals the golden tokens, and gw.faults records it.
//  - then the last node covering [2,5) dies mid-request: the caller gets a NoRouteError naming
//    the layers within seconds, HTTP callers a 503 `no_route`, and the gateway keeps answering.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FailureEvent, RerouteEvent } from '../../src/route/events.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { startSwarmGateway, type SwarmGateway } from '../helpers/served.js';
import { PIPELINE_DEPTH } from '../../src/engine/generate.js';

let sg: SwarmGateway | undefined;

before(
  async () => {
    sg = await startSwarmGateway({
      model: STORIES_GGUF,
      swarm: {
        ranges: [
          [0, 2],
          [2, 5],
          [2, 5],
        ],
        announceIntervalMs: 3000,
        readyTimeoutMs: 90_000,
      },
      gateway: { refreshMs: 1000, lookupTimeoutMs: 3000 },
    });
    const gw = sg.backend;
    // discovery is best effort: wait (bounded) until every node's advert is known
    const want = sg.swarm.nodes.map((n) => n.peerId);
    const until = Date.now() + 90_000;
    while (Date.now() < until && !want.every((p) => gw.knownAdverts().some((a) => a.peerId === p))) {
      await gw.refresh();
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(
      want.every((p) => gw.knownAdverts().some((a) => a.peerId === p)),
      'the gateway found every node',
    );
  },
  { timeout: 200_000 },
);

after(() => sg?.close());

const layerNodes = (hops: { node: string; role: string }[]) => hops.filter((h) => h.role === 'layers').map((h) => h.node);

test(
  'a node on the route is killed mid-generation: the session continues on the spare, output unchanged',
  { timeout: 60_000 },
  async () => {
    const g = loadGolden()[0]!;
    const since = Date.now();
    const it = sg!.backend.generate({ promptIds: g.prompt_tokens, maxTokens: g.generated_tokens.length, sampling: { temperature: 0 } });
    const tokens: number[] = [];
    let victim = '';
    for (let r = await it.next(); !r.done; r = await it.next()) {
      tokens.push(r.value.id);
      if (tokens.length === 10) {
        victim = layerNodes(r.value.timeline.hops)[1]!;
        await sg!.swarm.kill(sg!.swarm.nodes.findIndex((n) => n.peerId === victim));
      }
      if (tokens.length === 20) assert.ok(!layerNodes(r.value.timeline.hops).includes(victim), 'later tokens avoid the dead node');
    }
    assert.deepEqual(tokens, g.generated_tokens);
    const evs = sg!.backend.faults.events(since);
    const fail = evs.find((e): e is FailureEvent => e.type === 'failure');
    const re = evs.find((e): e is RerouteEvent => e.type === 'reroute');
    assert.ok(fail && re, JSON.stringify(evs));
    assert.deepEqual(fail.culprits, [victim], JSON.stringify(evs));
    assert.equal(re.method, 'replay');
    // the 10th token went out once its step verified; up to PIPELINE_DEPTH later steps were already sent
    assert.ok(
      re.replayedTokens >= g.prompt_tokens.length + 9 && re.replayedTokens <= g.prompt_tokens.length + 9 + PIPELINE_DEPTH,
      `replayed ${re.replayedTokens} tokens`,
    );
    // banned (the ban itself may have run out by now on a slow machine: 5 s at first)
    assert.ok(sg!.backend.bans.list().some((b) => b.peerId === victim && b.until > since), JSON.stringify(sg!.backend.bans.list()));
  },
);

test(
  'the last node covering some layers dies: clear error within seconds, 503 for HTTP, the gateway keeps answering',
  { timeout: 60_000 },
  async () => {
    const g = loadGolden()[1]!;
    const it = sg!.backend.generate({ promptIds: g.prompt_tokens, maxTokens: 60, sampling: { temperature: 0 } });
    let n = 0;
    let killedAt = 0;
    let err: Error | undefined;
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) {
        if (++n === 5) {
          const last = layerNodes(r.value.timeline.hops)[1]!;
          await sg!.swarm.kill(sg!.swarm.nodes.findIndex((x) => x.peerId === last));
          killedAt = Date.now();
        }
      }
    } catch (e) {
      err = e as Error;
    }
    const ms = Date.now() - killedAt;
    assert.ok(err, 'the request failed');
    assert.equal(err.name, 'NoRouteError', err.message);
    assert.match(err.message, /layers 2-4/);
    assert.ok(ms < 5000, `error after ${ms} ms`);

    const t = Date.now();
    const r = await fetch(`${sg!.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories260K', prompt: g.prompt, max_tokens: 8, temperature: 0 }),
      signal: AbortSignal.timeout(20_000),
    });
    const body = (await r.json()) as { error: { code: string; message: string } };
    assert.equal(r.status, 503, JSON.stringify(body));
    assert.equal(body.error.code, 'no_route');
    assert.match(body.error.message, /layers 2-4/);
    assert.ok(Date.now() - t < 10_000, `503 after ${Date.now() - t} ms`);
    assert.equal((await fetch(`${sg!.url}/v1/models`)).status, 200);
    const h = await fetch(`${sg!.url}/healthz`);
    assert.equal(h.status, 503);
  },
);
