// The Gateway has one ban list, and it is the one its planner and its routes consult: a peer
// banned through gw.bans is not routed to, and a peer a route fails to open is banned there.
// No node processes: the fixed peer list names peers nobody serves.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gateway } from '../../src/gateway/gateway.js';
import { generateIdentity } from '../../src/identity/identity.js';
import { RouteError } from '../../src/route/route-stage.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

/** a peer that exists nowhere: dialling it fails at once (nothing listens on port 1) */
const ghost = (msPerToken: number): RouteCandidate => {
  const peerId = generateIdentity().peerId.toString();
  return { peerId, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${peerId}`], start: 0, end: 5, msPerToken, load: 0, freeKvTokens: 1e6 };
};

const fast = ghost(1);
const slow = ghost(50);
let gw: Gateway | undefined;

before(async () => {
  gw = await Gateway.start({ modelPath: STORIES_GGUF, peers: [fast, slow] });
});
after(async () => {
  await gw?.close();
});

test('a peer banned through gw.bans is not routed to; the first open failure is banned in gw.bans', { timeout: 30_000 }, async () => {
  const g = gw!;
  assert.deepEqual(
    g.route().hops.map((h) => h.peerId),
    [fast.peerId],
  );
  g.bans.ban(fast.peerId, 'test');
  assert.deepEqual(
    g.planner.route().hops.map((h) => h.peerId),
    [slow.peerId],
  );
  // the request's route avoids the banned peer, fails to open on the other one and bans it
  // in the same list; then no route is left and the open failure is what the caller sees
  const golden = loadGolden()[0]!;
  await assert.rejects(
    g.run({ promptIds: golden.prompt_tokens, maxTokens: 2, sampling: { temperature: 0 } }),
    (e: unknown) => e instanceof RouteError && e.code === 'unreachable' && e.peerId === slow.peerId,
  );
  assert.ok(g.bans.isBanned(slow.peerId), 'the peer that failed to open is banned in gw.bans');
  assert.equal(g.bans.list().find((b) => b.peerId === fast.peerId)?.failures, 1, 'the banned peer was not tried');
  assert.equal(g.status().ready, false);
});
