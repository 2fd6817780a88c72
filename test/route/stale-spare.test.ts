// A spare stream a hop closes as idle just as an OPEN goes out on it: the OPEN crosses the close
// and a sessionless ERROR `timeout` comes back (a node with a short --stream-idle-timeout;
// docs/threat-model.md, spare streams) — to the gateway from its first hop, or from a next hop
// to the hop before it, which relays it. The node is not at fault: the request's route opens on
// a second try over the same nodes, and nobody is banned. A node that does it twice in one
// request is treated as failing the open (excluded and banned).
//
// In one process (real libp2p hosts on loopback, the production NodeServer, RouteClient and
// openResilientRoute), so the crossing is exact: the event loop is held past the node's idle
// limit for the spare, then the OPEN is written in that same turn, before the node's idle
// timer (due by then) runs and closes the stream.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { RouteClient } from '../../src/route/route-client.js';
import type { StreamPoolView } from '../../src/p2p/stream-pool.js';
import { RouteError } from '../../src/route/route-stage.js';
import { openResilientRoute } from '../../src/route/resilient-route.js';
import { excludeAfterOpenFailure, staleSpare } from '../../src/route/ban-worthy.js';
import { CostPlanner, StaticCandidates } from '../../src/routing/planner.js';
import { BanList } from '../../src/routing/bans.js';
import { NodeServer, type NodeServerOptions } from '../../src/node/server.js';
import { PeerLimits } from '../../src/node/peer-limits.js';
import { PerfMeter } from '../../src/node/perf.js';
import { NO_STAMPER } from '../../src/node/stamper.js';
import { createStage } from '../../src/engine/create.js';
import { openModel } from '../../src/model/load.js';
import type { WeightSource } from '../../src/model/types.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const MODEL = 'test-model';
/** the node closes a fresh stream that carried no complete message after this long */
const NODE_IDLE_MS = 800;

let src: WeightSource;
let gw: OdsiHost;
let routes: RouteClient;
const started: { host: OdsiHost; server: NodeServer }[] = [];
/** the whole model, closing silent streams after NODE_IDLE_MS */
let whole: { host: OdsiHost; server: NodeServer };
/** layers [0, 2) (no idle limit; its OPEN handling can be held, see holdUntil) and [2, L) (closing silent streams after NODE_IDLE_MS) */
let a: { host: OdsiHost; server: NodeServer };
let b: { host: OdsiHost; server: NodeServer };
/** performance.now() until which node a holds its next OPEN before passing it on (0: none) */
let holdUntil = 0;
let held = 0;

async function startNode(start: number, end: number, o: { idleMs?: number; stamper?: NodeServerOptions['stamper'] } = {}) {
  const host = await createHost({ identity: generateIdentity() });
  const server = new NodeServer({
    host,
    stage: await createStage('reference', src, { start, end, embed: false, head: false }),
    modelId: MODEL,
    stamper: o.stamper ?? NO_STAMPER,
    perf: new PerfMeter({ msPerToken: 0.1, prefillMsPerToken: 0.1 }),
    kvBudgetTokens: 4096,
    ...(o.idleMs ? { limits: new PeerLimits({ streamIdleMs: o.idleMs }) } : {}),
  });
  await server.start();
  started.push({ host, server });
  return { host, server };
}

before(async () => {
  src = openModel(STORIES_GGUF);
  const L = src.config.nLayers;
  whole = await startNode(0, L, { idleMs: NODE_IDLE_MS });
  a = await startNode(0, 2, {
    // the session is on file at once (no accountability); the hold comes before the OPEN goes on
    stamper: {
      ...NO_STAMPER,
      openSession: async () => {
        if (!holdUntil) return;
        const until = holdUntil;
        holdUntil = 0;
        held++;
        while (performance.now() < until) {
          /* the next hop's idle timer cannot run while this turn lasts */
        }
      },
    },
  });
  b = await startNode(2, L, { idleMs: NODE_IDLE_MS });
  gw = await createHost({ identity: generateIdentity() });
  // spares live 20 s here: far longer than the nodes let a silent stream live
  routes = await RouteClient.start(gw, { streamSpares: 1 });
});

after(async () => {
  await routes?.stop();
  for (const n of started) await n.server.stop();
  await gw?.stop();
  for (const n of started) await n.host.stop();
  src?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `pool` has a spare ready to `peer`; the time it was seen (the remote armed its idle timer for it before). */
async function spareReady(pool: StreamPoolView, peer: string): Promise<number> {
  for (let i = 0; i < 200 && pool.ready(peer) === 0; i++) await sleep(5);
  assert.equal(pool.ready(peer), 1, 'a spare is ready');
  return performance.now();
}

const cand = (n: { host: OdsiHost }, start: number, end: number) => ({
  peerId: n.host.peerId,
  addrs: n.host.addrs(),
  start,
  end,
  msPerToken: 1,
  load: 0,
  freeKvTokens: 1e6,
});

function resilient(sessionId: string, bans: BanList, candidates: ReturnType<typeof cand>[]) {
  const planner = new CostPlanner(new StaticCandidates(candidates), { nLayers: src.config.nLayers, bans, seed: 1 });
  return openResilientRoute({ routes, modelId: MODEL, config: src.config, sessionId, planner, bans, eagerOpen: false });
}

/** one step through the route, then closes it */
async function oneStep(r: Awaited<ReturnType<typeof resilient>>, sessionId: string): Promise<void> {
  try {
    const out = await r.forward({ sessionId, pos: 0, nTokens: 1, hidden: new Float32Array(src.config.dim).fill(0.5) });
    assert.equal(out.hidden!.length, src.config.dim);
  } finally {
    await r.dispose();
  }
}

test('an OPEN that crosses the idle close of its spare to the first hop: retried over the same node, no ban', async () => {
  const L = src.config.nLayers;
  const bans = new BanList();
  // a first route: the pool negotiates its stream, then keeps a spare to the node
  await (await resilient('first', bans, [cand(whole, 0, L)])).dispose();
  const pool = routes.actStreamPool;
  const readyBy = await spareReady(pool, whole.host.peerId);
  await sleep(NODE_IDLE_MS - 500); // well before the node's timer, even on a loaded machine
  while (performance.now() < readyBy + NODE_IDLE_MS + 40) {
    /* the node's timer cannot run while this turn lasts */
  }
  const takes = () => pool.stats.spareTaken + pool.stats.negotiated;
  const [spares0, takes0] = [pool.stats.spareTaken, takes()];
  // this turn: the route's OPEN goes out on the spare; the node's idle timer runs next
  await oneStep(await resilient('crossed', bans, [cand(whole, 0, L)]), 'crossed');
  // two streams taken for the request: the spare (the OPEN that crossed the close), then one for the retry
  assert.deepEqual([pool.stats.spareTaken - spares0, takes() - takes0], [1, 2], JSON.stringify(pool.stats));
  assert.deepEqual([...bans.active()], [], 'nobody banned');
});

test("the same between two nodes: the next hop closes the first hop's spare under the OPEN; relayed, retried, no ban", async () => {
  const L = src.config.nLayers;
  const bans = new BanList();
  const route = [cand(a, 0, 2), cand(b, 2, L)];
  await (await resilient('pair-first', bans, route)).dispose();
  // node a's spare to node b; a holds the next OPEN until b's timer for that spare is due
  const pool = a.server.actStreamPool;
  const readyBy = await spareReady(pool, b.host.peerId);
  await sleep(NODE_IDLE_MS - 500);
  holdUntil = readyBy + NODE_IDLE_MS + 40;
  const takes = () => pool.stats.spareTaken + pool.stats.negotiated;
  const [spares0, takes0, held0] = [pool.stats.spareTaken, takes(), held];
  await oneStep(await resilient('pair-crossed', bans, route), 'pair-crossed');
  assert.equal(held - held0, 1, 'node a held the OPEN once');
  // node a took two streams to b: the spare (the OPEN that crossed b's close), then one for the retry
  assert.equal(takes() - takes0, 2, JSON.stringify(pool.stats));
  assert.ok(pool.stats.spareTaken - spares0 >= 1, JSON.stringify(pool.stats));
  assert.deepEqual([...bans.active()], [], 'nobody banned');
});

test('the rule: a sessionless idle-close forgives its peer once per request; the second time it excludes and bans', () => {
  // what a node's idle close of a fresh stream turns into, as the route sees it (route-stage.ts toRouteError)
  const header = { code: 'timeout', reason: 'no complete message for 400 ms; stream closed', peerId: 'peer-a' };
  const crossed = new RouteError(`peer-a: timeout: ${header.reason}`, 'timeout', 'peer-a', 'timeout', header);
  assert.ok(staleSpare(crossed));
  const ofSession = new RouteError('peer-a: timeout: idle', 'timeout', 'peer-a', 'timeout', { ...header, sessionId: 's' });
  assert.ok(!staleSpare(ofSession), "a session's own timeout is not a spare's");
  const banned: string[] = [];
  const bans = { ban: (p: string) => (banned.push(p), 5_000) };
  const into = { named: new Set<string>(), unnamed: new Set<string>(), stale: new Set<string>() };
  const hops = ['peer-a', 'peer-b'].map((peerId) => ({ peerId, addrs: [], start: 0, end: 1 }));
  excludeAfterOpenFailure(crossed, hops, into, bans);
  assert.deepEqual(
    [[...into.named], [...into.unnamed], [...into.stale], banned],
    [[], [], ['peer-a'], []],
    'first time: tried again as it was',
  );
  excludeAfterOpenFailure(crossed, hops, into, bans);
  assert.deepEqual([[...into.named], banned], [['peer-a'], ['peer-a']], 'second time in the request: excluded and banned');
  excludeAfterOpenFailure(ofSession, hops, { named: new Set(), unnamed: new Set(), stale: new Set() }, bans);
  assert.deepEqual(banned, ['peer-a', 'peer-a'], 'any other timeout bans at once, as before');
});
