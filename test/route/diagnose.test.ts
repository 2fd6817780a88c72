// The gateway's ping diagnosis of a failed route (src/route/diagnose.ts), against a real libp2p
// host: a dead hop (its port closed) is named without waiting out a hop that answers slowly (a
// listener that takes the TCP connection and never speaks), and a live hop is not named.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { AFTER_FIRST_DEAD_MS, unreachablePeers } from '../../src/route/diagnose.js';

const hosts: OdsiHost[] = [];
const servers: Server[] = [];
const sockets: Socket[] = [];

after(async () => {
  for (const s of sockets) s.destroy();
  for (const s of servers) await new Promise((r) => s.close(r));
  for (const h of hosts) await h.stop().catch(() => undefined);
});

async function listen(): Promise<Server> {
  const s = createServer((socket) => void sockets.push(socket)); // takes the connection, never answers
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return s;
}
const portOf = (s: Server) => (s.address() as { port: number }).port;
const hop = (peerId: string, port: number) => ({ peerId, addrs: [`/ip4/127.0.0.1/tcp/${port}`], start: 0, end: 1 });

test('a dead hop is named at once, without waiting for a slow one; a live hop is not named', async () => {
  const gateway = await createHost({ identity: generateIdentity() });
  const live = await createHost({ identity: generateIdentity() });
  hosts.push(gateway, live);
  const silent = await listen();
  const closed = await listen();
  const closedPort = portOf(closed);
  await new Promise((r) => closed.close(r)); // nothing listens there now: connection refused
  const dead = generateIdentity().peerId.toString();
  const slow = generateIdentity().peerId.toString();
  const liveHop = { peerId: live.peerId, addrs: live.addrs(), start: 0, end: 1 };
  const timeoutMs = 3_000;

  const t0 = performance.now();
  const named = await unreachablePeers(gateway, [liveHop, hop(slow, portOf(silent)), hop(dead, closedPort)], timeoutMs);
  const ms = performance.now() - t0;
  assert.deepEqual(named, [dead]);
  assert.ok(ms < timeoutMs / 2, `answered in ${Math.round(ms)} ms, not after the slow hop's ${timeoutMs} ms`);

  // with no dead hop, a slow one is named once its ping times out; the live one never is
  const t1 = performance.now();
  assert.deepEqual(await unreachablePeers(gateway, [liveHop, hop(slow, portOf(silent))], 500), [slow]);
  assert.ok(performance.now() - t1 >= 500 - AFTER_FIRST_DEAD_MS);
  assert.deepEqual(await unreachablePeers(gateway, [liveHop], 2_000), []);
});
