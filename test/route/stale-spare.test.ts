// A spare stream the first hop closes as idle just as our OPEN goes out on it: the OPEN crosses
// the close and a sessionless ERROR `timeout` comes back (a node with a short
// --stream-idle-timeout; docs/threat-model.md, spare streams). The node is not at fault: the
// request's route opens on a second try over the same node, and nobody is banned. A node that
// does it twice in one request is treated as failing the open (excluded and banned).
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
import { RouteError } from '../../src/route/route-stage.js';
import { openResilientRoute } from '../../src/route/resilient-route.js';
import { excludeAfterOpenFailure, staleSpare } from '../../src/route/ban-worthy.js';
import { CostPlanner, StaticCandidates } from '../../src/routing/planner.js';
import { BanList } from '../../src/routing/bans.js';
import { NodeServer } from '../../src/node/server.js';
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
let node: OdsiHost;
let server: NodeServer;
let routes: RouteClient;

before(async () => {
  src = openModel(STORIES_GGUF);
  node = await createHost({ identity: generateIdentity() });
  server = new NodeServer({
    host: node,
    stage: await createStage('reference', src, { start: 0, end: src.config.nLayers, embed: false, head: false }),
    modelId: MODEL,
    stamper: NO_STAMPER,
    perf: new PerfMeter({ msPerToken: 0.1, prefillMsPerToken: 0.1 }),
    kvBudgetTokens: 4096,
    limits: new PeerLimits({ streamIdleMs: NODE_IDLE_MS }),
  });
  await server.start();
  gw = await createHost({ identity: generateIdentity() });
  // spares live 20 s here: far longer than the node lets a silent stream live
  routes = await RouteClient.start(gw, { streamSpares: 1 });
});

after(async () => {
  await routes?.stop();
  await server?.stop();
  await gw?.stop();
  await node?.stop();
  src?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until a spare to the node is ready, then holds the event loop until the node's idle timer for it is due. */
async function spareAboutToClose(): Promise<void> {
  for (let i = 0; i < 200 && routes.spares(node.peerId) === 0; i++) await sleep(5);
  assert.equal(routes.spares(node.peerId), 1, 'a spare to the node is ready');
  const readyBy = performance.now(); // the node armed its timer for the stream before this
  await sleep(NODE_IDLE_MS - 500); // well before the node's timer, even on a loaded machine
  while (performance.now() < readyBy + NODE_IDLE_MS + 40) {
    /* the node's timer cannot run while this turn lasts */
  }
}

function resilient(sessionId: string, bans: BanList) {
  const planner = new CostPlanner(
    new StaticCandidates([
      { peerId: node.peerId, addrs: node.addrs(), start: 0, end: src.config.nLayers, msPerToken: 1, load: 0, freeKvTokens: 1e6 },
    ]),
    { nLayers: src.config.nLayers, bans, seed: 1 },
  );
  return openResilientRoute({ routes, modelId: MODEL, config: src.config, sessionId, planner, bans, eagerOpen: false });
}

test('an OPEN that crosses the idle close of its spare: retried over the same node, no ban; the error is not the peer’s fault', async () => {
  // a first route: the pool negotiates its stream, then keeps a spare to the node
  const bans = new BanList();
  const first = await resilient('first', bans);
  await first.dispose();
  const takes = () => routes.streamStats.spareTaken + routes.streamStats.negotiated;
  const [spares0, takes0] = [routes.streamStats.spareTaken, takes()];
  await spareAboutToClose();
  // this turn: the route's OPEN goes out on the spare; the node's idle timer runs next
  const r = await resilient('crossed', bans);
  try {
    const x = new Float32Array(src.config.dim).fill(0.5);
    const out = await r.forward({ sessionId: 'crossed', pos: 0, nTokens: 1, hidden: x });
    assert.equal(out.hidden!.length, src.config.dim);
  } finally {
    await r.dispose();
  }
  // two streams taken for the request: the spare (the OPEN that crossed the close), then one for the retry
  assert.deepEqual([routes.streamStats.spareTaken - spares0, takes() - takes0], [1, 2], JSON.stringify(routes.streamStats));
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
  const hops = [{ peerId: 'peer-a' }, { peerId: 'peer-b' }];
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
