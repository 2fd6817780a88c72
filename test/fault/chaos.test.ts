// Chaos on a real swarm: 6 `odsi node` processes on 127.0.0.1 with overlapping coverage of
// stories260K ([0,2) [2,5) [0,3) [3,5) [0,2) [2,5)), an in-process gateway, and:
//  - 20 greedy generations, each with one node on the route SIGKILLed at a random token
//    (between tokens or while a step is in flight); the output must equal the golden tokens,
//    and the gateway must record the failure and a replay re-route. The killed node is
//    restarted (same key and port) in the background while the next runs go on.
//  - a node that stalls (stall@N) is detected within its deadline budget + grace and bypassed.
//  - killing the only node covering some layers gives the caller a clear error quickly, and
//    the gateway keeps answering and serves again once the node is back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Gateway } from '../../src/gateway/gateway.js';
import { createApiServer, type ApiServer } from '../../src/api/server.js';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import { mulberry32 } from '../../src/gateway/router.js';
import { NodeProcess } from '../../src/fault/procs.js';
import type { FailureEvent, RerouteEvent } from '../../src/fault/events.js';
import type { BackendToken } from '../../src/api/backend.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

// any two nodes may be down at once and a route remains (restarts overlap the next runs)
const RANGES: [number, number][] = [
  [0, 2],
  [2, 5],
  [0, 3],
  [3, 5],
  [0, 2],
  [2, 5],
];
const RUNS = 20;
const GRACE_MS = 1000; // ResilientRoute's default grace

let dir = '';
let modelId = '';
const nodes: NodeProcess[] = [];
let gw: Gateway | undefined;
let api: ApiServer | undefined;
let url = '';

async function startNode(range: [number, number], i: number, faults?: string[]): Promise<NodeProcess> {
  return NodeProcess.start({
    model: STORIES_GGUF,
    range,
    identityFile: join(dir, `node${i}.key`),
    modelId,
    bootstrap: nodes[0] ? nodes[0].info.addrs.slice(0, 1) : [],
    announceIntervalMs: 2000,
    faults,
  });
}

/** wait until the gateway sees an advert from every given peer (bounded) */
async function waitForAdverts(peers: string[], ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    await gw!.refresh();
    const seen = new Set(gw!.knownAdverts().map((a) => a.peerId));
    if (peers.every((p) => seen.has(p))) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const seen = gw!.knownAdverts().map((a) => `${a.peerId.slice(-6)}[${a.start}:${a.end}]`);
  throw new Error(`gateway did not see adverts of ${peers.map((p) => p.slice(-6)).join(', ')} within ${ms} ms (it sees ${seen.join(' ') || 'none'}; ${JSON.stringify(gw!.status().reason ?? '')})`);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'odsi-chaos-'));
  const src = openModel(STORIES_GGUF);
  modelId = modelIdentity(src).modelId;
  src.close();
  nodes.push(await startNode(RANGES[0]!, 0));
  nodes.push(...(await Promise.all(RANGES.slice(1).map((r, i) => startNode(r, i + 1)))));
  gw = await Gateway.start({ modelPath: STORIES_GGUF, bootstrap: nodes[0]!.info.addrs.slice(0, 1), refreshMs: 1000, lookupTimeoutMs: 3000 });
  await waitForAdverts(nodes.map((n) => n.peerId));
  api = createApiServer(gw);
  url = await api.listen(0);
}, { timeout: 150_000 });

after(async () => {
  await api?.close().catch(() => undefined);
  await gw?.close().catch(() => undefined);
  await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const byPeer = (peerId: string) => nodes.find((n) => n.peerId === peerId);
const layerNodes = (t: BackendToken) => t.timeline.hops.filter((h) => h.role === 'layers').map((h) => h.node);

test(`${RUNS} runs, one node on the route SIGKILLed at a random token: output equals the golden tokens`, { timeout: 150_000 }, async () => {
  const golden = loadGolden();
  const rand = mulberry32(20261122);
  const t0 = Date.now();
  let midStep = 0;
  const restarts: Promise<void>[] = [];
  for (let run = 0; run < RUNS; run++) {
    const g = golden[run % golden.length]!;
    const killAt = 1 + Math.floor(rand() * (g.generated_tokens.length - 2));
    const since = Date.now();
    const it = gw!.generate({ promptIds: g.prompt_tokens, maxTokens: g.generated_tokens.length, sampling: { temperature: 0 } });
    const tokens: number[] = [];
    let victim: NodeProcess | undefined;
    let killed: Promise<void> | undefined;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      tokens.push(r.value.id);
      if (tokens.length === killAt) {
        const onRoute = layerNodes(r.value);
        victim = byPeer(onRoute[Math.floor(rand() * onRoute.length)]!);
        assert.ok(victim, `route node ${onRoute.join(',')} is one of ours`);
        if (run % 2 === 0) await victim.kill('SIGKILL'); // between two tokens
        else {
          // let the next step start, then kill: the failure lands while a step is in flight
          midStep++;
          const v = victim;
          killed = new Promise((res) => setTimeout(() => void v.kill('SIGKILL').then(res), Math.floor(rand() * 3)));
        }
      }
    }
    await killed;
    assert.deepEqual(tokens, g.generated_tokens, `run ${run}: killed ${victim?.peerId} after token ${killAt}`);
    const evs = gw!.faults.events(since);
    const reroutes = evs.filter((e): e is RerouteEvent => e.type === 'reroute');
    const failures = evs.filter((e): e is FailureEvent => e.type === 'failure');
    // a kill landing after the last step of a run is never noticed by it; otherwise one re-route
    if (reroutes.length) {
      assert.equal(reroutes[0]!.method, 'replay');
      assert.ok(failures.some((f) => f.culprits.includes(victim!.peerId)), `run ${run}: ${JSON.stringify(failures)}`);
      assert.ok(!reroutes[reroutes.length - 1]!.to.some((h) => h.peerId === victim!.peerId));
    }
    assert.ok(reroutes.length >= 1 || killAt >= g.generated_tokens.length - 1, `run ${run}: no re-route recorded: ${JSON.stringify(evs)}`);
    // bring the node back as an operator would, and let routing use it again; at most two
    // restarts overlap, so a route always remains
    const v = victim!;
    restarts.push(v.restart().then(() => gw!.bans.clear(v.peerId)));
    while (restarts.length > 1) await restarts.shift();
  }
  await Promise.all(restarts);
  const s = gw!.faults.counts();
  process.stderr.write(`chaos: ${RUNS} runs (${midStep} killed mid-step) in ${Date.now() - t0} ms; ${s.failures} failures, ${s.reroutes} re-routes\n`);
  assert.ok(s.reroutes >= RUNS - 1);
  assert.equal(s.gaveUp, 0);
});

test('a stalled node (stall@N) is detected within deadline budget + grace and bypassed', { timeout: 60_000 }, async () => {
  const g = loadGolden()[0]!;
  // one node serving every layer: the cheapest route, so the gateway picks it
  const staller = await startNode([0, 5], 10, ['stall@6']);
  try {
    await waitForAdverts([staller.peerId]);
    // the first route must use the staller: keep the other [0,*) nodes out until it has served
    const others = [nodes[0]!.peerId, nodes[2]!.peerId, nodes[4]!.peerId];
    for (const p of others) gw!.bans.ban(p);
    const deadlineMs = 400;
    const since = Date.now();
    const it = gw!.generate({ promptIds: g.prompt_tokens, maxTokens: g.generated_tokens.length, sampling: { temperature: 0 }, deadlineMs });
    const tokens: number[] = [];
    const at: number[] = [];
    let first: string[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) {
      if (!tokens.length) {
        first = layerNodes(r.value);
        for (const p of others) gw!.bans.clear(p);
      }
      tokens.push(r.value.id);
      at.push(Date.now());
    }
    assert.deepEqual(first, [staller.peerId], 'the stalling node served the first tokens');
    assert.deepEqual(tokens, g.generated_tokens);
    const fail = gw!.faults.events(since).find((e): e is FailureEvent => e.type === 'failure');
    assert.ok(fail, 'a failure was recorded');
    assert.equal(fail.code, 'timeout');
    assert.deepEqual(fail.culprits, [staller.peerId]);
    assert.equal(fail.diagnosis, 'probe');
    // the stall began right after the token before it; detection within budget + grace (+ scheduling)
    const before = at.filter((t) => t <= fail.detectedAt).pop()!;
    const detectMs = fail.detectedAt - before;
    assert.ok(detectMs <= deadlineMs + GRACE_MS + 300, `detected after ${detectMs} ms`);
    assert.ok(gw!.bans.active().has(staller.peerId), 'the stalled node is banned');
    const re = gw!.faults.events(since).find((e): e is RerouteEvent => e.type === 'reroute');
    assert.ok(re && !re.to.some((h) => h.peerId === staller.peerId));
  } finally {
    await staller.kill();
  }
});

test('the only node covering some layers dies: clear error fast, the gateway keeps answering, then serves again', { timeout: 60_000 }, async () => {
  const g = loadGolden()[1]!;
  const [a, b, c, d, a2, b2] = nodes as NodeProcess[] as [NodeProcess, NodeProcess, NodeProcess, NodeProcess, NodeProcess, NodeProcess];
  const down = [c, d, b2];
  await Promise.all(down.map((n) => n.kill())); // now [2,5) is served by b alone
  for (const n of down) gw!.bans.ban(n.peerId); // as the gateway would after noticing
  try {
    const it = gw!.generate({ promptIds: g.prompt_tokens, maxTokens: 60, sampling: { temperature: 0 } });
    let n = 0;
    let killedAt = 0;
    const err = await (async () => {
      try {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (++n === 5) {
            const route = layerNodes(r.value);
            assert.ok([a.peerId, a2.peerId].includes(route[0]!) && route[1] === b.peerId, route.join(' → '));
            await b.kill();
            killedAt = Date.now();
          }
        }
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    const ms = Date.now() - killedAt;
    assert.ok(err, 'the request failed');
    assert.equal(err.name, 'NoRouteError', err.message);
    assert.match(err.message, /layers 2-4/);
    assert.ok(ms < 3000, `error after ${ms} ms`);
    // HTTP callers get a 503 naming the uncovered layers, fast; the gateway stays up
    const t = Date.now();
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories260K', prompt: g.prompt, max_tokens: 8, temperature: 0 }),
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await r.json()) as { error: { code: string; message: string } };
    assert.equal(r.status, 503, JSON.stringify(body));
    assert.equal(body.error.code, 'no_route');
    assert.match(body.error.message, /layers 2-4/);
    assert.ok(Date.now() - t < 3000);
    assert.equal((await fetch(`${url}/v1/models`)).status, 200);
    assert.equal((await fetch(`${url}/healthz`)).status, 503);
  } finally {
    await Promise.all([b, ...down].map((n) => n.restart()));
    for (const n of [b, ...down]) gw!.bans.clear(n.peerId);
  }
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'stories260K', prompt: g.prompt, max_tokens: 20, temperature: 0, odsi: { timeline: true } }),
    signal: AbortSignal.timeout(20_000),
  });
  const j = (await r.json()) as { odsi: { timeline: { token: number }[] } };
  assert.equal(r.status, 200, JSON.stringify(j));
  assert.deepEqual(
    j.odsi.timeline.map((t) => t.token),
    g.generated_tokens.slice(0, 20),
  );
});
