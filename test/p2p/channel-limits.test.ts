// Channel bounds between two in-process hosts: a message over the stream's cap is refused
// with too_large and the stream reset (one ERROR, nothing read after it); a stream without a
// complete message for idleMs is closed with timeout unless keepAlive() holds it; a second
// connection-capped peer cannot open more connections than the host allows.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { Channel, type ChannelOptions } from '../../src/p2p/channel.js';
import { MsgType, type Message } from '../../src/protocol/messages.js';

const PROTO = '/odsi/test-limits/1.0.0';
const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop()));
});

/** A server host whose channels use `opts`, and a client channel to it that records ERROR codes and closes. */
async function pair(opts: ChannelOptions) {
  const server = await createHost({ identity: generateIdentity() });
  const client = await createHost({ identity: generateIdentity() });
  hosts.push(server, client);
  const received: Message[] = [];
  await server.libp2p.handle(PROTO, (stream, conn) => {
    new Channel(stream, conn.remotePeer.toString(), server.peerId, { onMessage: (m) => received.push(m) }, opts);
  });
  await client.dial(server.peerId, server.addrs());
  const stream = await client.libp2p.dialProtocol(peerIdFromString(server.peerId), PROTO);
  const errors: string[] = [];
  let closed = false;
  const ch = new Channel(stream, server.peerId, client.peerId, {
    onMessage: (m) => {
      if (m.type === MsgType.ERROR) errors.push(m.header.code);
    },
    onClose: () => (closed = true),
  });
  return { ch, errors, received, isClosed: () => closed };
}

const step = (n: number): Message =>
  ({
    type: MsgType.STEP,
    header: { sessionId: 's', requestId: 0, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, n / 4], timeline: [] },
    payload: new Uint8Array(n),
  }) as Message;
const waitUntil = async (f: () => boolean, ms: number) => {
  for (let t = 0; t < ms && !f(); t += 20) await new Promise((r) => setTimeout(r, 20));
};

test('a message over the per-stream cap is refused once with too_large and the stream is reset', async () => {
  const { ch, errors, received, isClosed } = await pair({ maxMessageBytes: 64 * 1024 });
  await ch.send(step(32 * 1024)); // under the cap: delivered
  await waitUntil(() => received.length === 1, 2000);
  assert.equal(received.length, 1);
  await ch.send(step(3 * 1024 * 1024)).catch(() => undefined); // 3 frames of 1 MiB, the first already over the cap
  await waitUntil(isClosed, 3000);
  assert.deepEqual(errors, ['too_large']);
  assert.ok(isClosed());
  assert.equal(received.length, 1);
});

test('a stream without a complete message is closed after idleMs, unless keepAlive holds it', async () => {
  const idle = await pair({ idleMs: 300 });
  await waitUntil(idle.isClosed, 3000);
  assert.deepEqual(idle.errors, ['timeout']);
  assert.ok(idle.isClosed());
  let keep = true;
  const held = await pair({ idleMs: 300, keepAlive: () => keep });
  await new Promise((r) => setTimeout(r, 900));
  assert.equal(held.isClosed(), false);
  keep = false;
  await waitUntil(held.isClosed, 3000);
  assert.deepEqual(held.errors, ['timeout']);
});

test('complete messages keep a stream open; it closes idleMs after the last one', async () => {
  const busy = await pair({ idleMs: 300 });
  // a message every 100 ms for 900 ms: the idle timer fires meanwhile and finds the stream in use
  for (let i = 0; i < 9; i++) {
    await busy.ch.send(step(64));
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(busy.isClosed(), false, 'closed while messages kept coming');
  assert.equal(busy.received.length, 9);
  const last = performance.now();
  await waitUntil(busy.isClosed, 3000);
  assert.deepEqual(busy.errors, ['timeout']);
  assert.ok(performance.now() - last >= 200, 'not before idleMs after the last message (timers may fire a little early)');
});

test('a peer cannot hold more connections than maxConnectionsPerPeer', async () => {
  const server = await createHost({ identity: generateIdentity(), maxConnectionsPerPeer: 1 });
  const client = await createHost({ identity: generateIdentity() });
  hosts.push(server, client);
  const pid = peerIdFromString(server.peerId);
  const { multiaddr } = await import('@multiformats/multiaddr');
  await client.libp2p.dial(multiaddr(server.addrs()[0]!));
  // second and third forced new connections: the server's gater drops them once it knows the peer
  for (let i = 0; i < 2; i++)
    await client.libp2p.dial(multiaddr(server.addrs()[0]!), { force: true, signal: AbortSignal.timeout(5000) }).catch(() => undefined);
  await waitUntil(() => client.libp2p.getConnections(pid).length <= 1, 3000);
  assert.equal(server.libp2p.getConnections(peerIdFromString(client.peerId)).length, 1);
  assert.equal(client.libp2p.getConnections(pid).length, 1);
});
