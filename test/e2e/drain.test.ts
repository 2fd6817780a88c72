// kv-transfer: graceful leave. Three `odsi node` processes on 127.0.0.1 serve stories260K
// ([0,2), [2,5), and a spare [2,5)); the production Gateway routes over exactly those nodes
// (a fixed peer list, no discovery). Mid-generation
// the [2,5) node on the route gets SIGTERM: it finishes its step, hands the session's KV cache
// to the spare, answers the next step with a 'draining' notice, and the route swaps that hop
// without replaying anything. The output must equal the golden greedy tokens.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createStage } from '../../src/engine/create.js';
import type { Gateway } from '../../src/gateway/gateway.js';
import { openModel } from '../../src/model/load.js';
import type { WeightSource } from '../../src/model/types.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import type { RerouteEvent } from '../../src/route/events.js';
import { NodeProcess } from '../../src/node/process.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { startedAll } from '../helpers/nodes.js';

let side: GatewaySide | undefined;
let src: WeightSource | undefined;
let gw: Gateway | undefined;
const nodes: NodeProcess[] = [];

before(
  async () => {
    side = openGatewaySide('odsi-drain-');
    src = openModel(STORIES_GGUF);
    const { dir, modelId } = side;
    const ranges: [number, number][] = [
      [0, 2],
      [2, 5],
      [2, 5],
    ];
    // the first hop is slowed down a little so the SIGTERM lands mid-generation
    await startedAll(
      ranges.map((range, i) =>
        NodeProcess.start({
          model: STORIES_GGUF,
          range,
          identityFile: join(dir, `node${i}.key`),
          modelId,
          announceIntervalMs: 600_000,
          faults: i === 0 ? ['delay:15'] : undefined,
        }),
      ),
      nodes,
    );
    gw = await side.gateway(nodes.map(candidate));
    await Promise.all(nodes.map((n) => gw!.host.ping(n.peerId, { addrs: n.info.addrs })));
  },
  { timeout: 120_000 },
);

after(async () => {
  await Promise.all(nodes.map((n) => n.kill('SIGKILL').catch(() => undefined)));
  await side?.close();
  src?.close();
});

for (const kind of ['reference', 'ort'] as const) {
  test(`${kind} engine: an exported KV cache imported into another stage continues identically`, async () => {
    const g = loadGolden()[0]!;
    const range = { start: 0, end: 5, embed: true, head: true };
    const a = await createStage(kind, src!, range);
    const b = await createStage(kind, src!, range);
    try {
      const prompt = Int32Array.from(g.prompt_tokens);
      await a.forward({ sessionId: 'x', pos: 0, nTokens: prompt.length, tokens: prompt });
      const st = await a.exportSession!('x');
      assert.equal(st?.length, prompt.length);
      assert.equal(st!.layers.length, 5);
      await b.importSession!('y', st!);
      assert.equal(b.sessionLength('y'), prompt.length);
      const next = Int32Array.of(g.generated_tokens[0]!);
      const la = (await a.forward({ sessionId: 'x', pos: prompt.length, nTokens: 1, tokens: next })).logits!;
      const lb = (await b.forward({ sessionId: 'y', pos: prompt.length, nTokens: 1, tokens: next })).logits!;
      assert.deepEqual(lb, la);
      await assert.rejects(async () => b.importSession!('z', { length: 2, layers: st!.layers }), /KV layer size/);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });
}

const candidate = (n: NodeProcess): RouteCandidate => n.candidate(n.info.end - n.info.start);

test(
  'SIGTERM on a node of the route mid-generation: its KV cache moves to a spare, no replay, golden output',
  { timeout: 120_000 },
  async () => {
    const g = loadGolden()[0]!;
    const n = g.generated_tokens.length;
    let victim: NodeProcess | undefined;
    let spare: NodeProcess | undefined;
    let first = '';
    let leaving: Promise<void> | undefined;
    const t0 = Date.now();
    const out = await gw!.run({
      promptIds: g.prompt_tokens,
      maxTokens: n,
      sampling: { temperature: 0 },
      sessionId: 'drain-0',
      onToken: (t) => {
        if (t.step !== 10) return;
        const hop = t.route.find((h) => h.start === 2)!;
        first = t.route[0]!.peerId;
        victim = nodes.find((x) => x.peerId === hop.peerId)!;
        spare = nodes.find((x) => x.info.start === 2 && x !== victim)!;
        leaving = victim.kill('SIGTERM');
      },
    });
    const events = out.events;
    await leaving;
    assert.ok(victim && spare);
    assert.deepEqual(out.tokens, g.generated_tokens, JSON.stringify(events));
    const reroutes = events.filter((e): e is RerouteEvent => e.type === 'reroute');
    assert.equal(reroutes.length, 1, JSON.stringify(events));
    assert.equal(reroutes[0]!.method, 'transfer');
    assert.equal(reroutes[0]!.replayedTokens, 0);
    assert.deepEqual(
      reroutes[0]!.to.map((h) => h.peerId),
      [first, spare.peerId],
    );
    assert.ok(events.some((e) => e.type === 'failure' && e.code === 'draining' && e.reportedPeer === victim!.peerId));
    console.log(
      `drain: ${Date.now() - t0} ms for ${n} tokens; transfer re-route ${reroutes[0]!.recoveryMs} ms at position ${events.find((e) => e.type === 'failure')!.pos}`,
    );
  },
);
