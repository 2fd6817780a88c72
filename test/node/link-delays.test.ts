// LinkDelays (src/node/link-delays.ts): a next hop's one-way delay is measured once per peer and
// shared by the sessions that forward to it, not pinged per session; an unreachable peer is tried
// once per refresh, and a session then keeps 0.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { LinkDelays } from '../../src/node/link-delays.js';

const hosts: OdsiHost[] = [];
after(async () => {
  for (const h of hosts) await h.stop().catch(() => undefined);
});

test('one measurement per peer, shared by later sessions; an unreachable peer is not retried at once', async () => {
  const me = await createHost({ identity: generateIdentity() });
  const next = await createHost({ identity: generateIdentity() });
  hosts.push(me, next);
  await me.dial(next.peerId, next.addrs());
  let pings = 0;
  const ping = me.ping.bind(me);
  me.ping = (peerId, o) => (pings++, ping(peerId, o));
  const links = new LinkDelays(me);

  // the first session gets the delay once it is measured
  const first = await new Promise<number>((resolve) => links.apply(next.peerId, resolve));
  assert.ok(first > 0 && first < 1_000, `one-way ${first} ms`);
  // a second session gets it at once, with no new ping
  const seen: number[] = [];
  links.apply(next.peerId, (ms) => seen.push(ms));
  assert.deepEqual(seen, [first]);
  assert.equal(pings, 1);

  // a peer that cannot be reached: tried once, the session keeps its 0, no second try this refresh
  const gone = generateIdentity().peerId.toString();
  const got: number[] = [];
  links.apply(gone, (ms) => got.push(ms));
  for (let i = 0; i < 100 && pings < 2; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  links.apply(gone, (ms) => got.push(ms));
  assert.equal(pings, 2);
  assert.deepEqual(got, [0]);
});
