// Looking at the swarm must not change routing: Gateway.swarmStatus() (the dashboard's poll,
// GET /v1/odsi/status, the Prometheus scrape) and status() (/healthz) preview the planner's next
// route instead of drawing one, so a seeded gateway routes requests to the same sequence of
// peers however often it is looked at. Two real Gateways over the same fixed peer list (two
// equally fast nodes per range: the seeded tie-break decides), one of them scraped between draws.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gateway } from '../../src/gateway/gateway.js';
import { generateIdentity } from '../../src/identity/identity.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const peers = Array.from({ length: 4 }, (_, i) => {
  const peerId = generateIdentity().peerId.toString();
  const [start, end] = i < 2 ? [0, 3] : [3, 5];
  return { peerId, addrs: [`/ip4/127.0.0.1/tcp/9/p2p/${peerId}`], start, end, msPerToken: 5, load: 0, freeKvTokens: 1000 };
});
const gateways: Gateway[] = [];
after(async () => {
  for (const g of gateways) await g.close();
});

const open = async () => {
  const gw = await Gateway.start({ modelPath: STORIES_GGUF, peers, routeSeed: 11, accountability: { enabled: false } });
  gateways.push(gw);
  return gw;
};
const draw = (gw: Gateway) => gw.route().hops.map((h) => h.peerId.slice(-4)).join('>');

test('status and health probes leave the sequence of routes a seeded planner draws unchanged', { timeout: 30_000 }, async () => {
  const [quiet, watched] = [await open(), await open()];
  const want: string[] = [];
  const got: string[] = [];
  for (let i = 0; i < 12; i++) {
    want.push(draw(quiet));
    let shown = '';
    for (let k = 0; k < 3; k++) {
      const st = watched.swarmStatus();
      assert.equal(st.ready, true);
      assert.equal(watched.status().ready, true);
      shown = st.route!.map((h) => h.peerId.slice(-4)).join('>');
    }
    got.push(draw(watched));
    assert.equal(shown, got.at(-1), 'the route the status shows is the one the next request gets');
  }
  assert.deepEqual(got, want);
  assert.ok(new Set(want).size > 1, `the seeded tie-break should vary the route: ${want.join(' ')}`);
});
