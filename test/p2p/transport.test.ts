// The transport tuning of createHost and Channel (bench/transport.ts measures what it saves):
// yamux streams grant receive window at half a window, not after every data frame, and
// messages of every size still arrive whole and in order, also many times a window (and more
// than the socket's CORK_LIMIT) queued at once, so backpressure still stops and resumes the
// sender; with 'every-frame' yamux's own updates stay; a send on a closed channel is refused.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type HostOptions, type OdsiHost } from '../../src/p2p/host.js';
import { Channel } from '../../src/p2p/channel.js';
import { lazyWindowUpdates } from '../../src/p2p/yamux-window.js';
import { MsgType, type Message } from '../../src/protocol/messages.js';

const PROTO = '/odsi/test-transport/1.0.0';
const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop()));
});

async function pair(windowUpdates?: HostOptions['windowUpdates']) {
  const server = await createHost({ identity: generateIdentity(), windowUpdates });
  const client = await createHost({ identity: generateIdentity(), windowUpdates });
  hosts.push(server, client);
  const received: Message[] = [];
  let serverCh: Channel | undefined;
  await server.libp2p.handle(PROTO, (stream, conn) => {
    serverCh = new Channel(stream, conn.remotePeer.toString(), server.peerId, { onMessage: (m) => received.push(m) });
  });
  await client.dial(server.peerId, server.addrs());
  const stream = await client.libp2p.dialProtocol(peerIdFromString(server.peerId), PROTO);
  const ch = new Channel(stream, server.peerId, client.peerId, { onMessage: () => {} });
  return { ch, received, server: () => serverCh };
}

/** a STEP whose payload bytes all equal `i` (mod 256) */
const step = (i: number, bytes: number): Message =>
  ({
    type: MsgType.STEP,
    header: { sessionId: 's', requestId: i, step: i, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, bytes / 4], timeline: [] },
    payload: new Uint8Array(bytes).fill(i & 0xff),
  }) as Message;
const waitUntil = async (f: () => boolean, ms: number) => {
  for (let t = 0; t < ms && !f(); t += 20) await new Promise((r) => setTimeout(r, 20));
};

test('streams grant window at half a window; small and multi-window messages arrive whole and in order', async () => {
  const { ch, received, server } = await pair();
  // sizes: step messages, then 1 MiB + a bit (two frames, four default windows), then steps again
  const sizes = [...Array(40).fill(2304), ...Array(3).fill(1024 * 1024 + 4096), ...Array(40).fill(10240)];
  // all queued at once: the writes wait for drains (window and socket) in order
  const sends = sizes.map((n, i) => ch.send(step(i, n)));
  await Promise.all(sends);
  await waitUntil(() => received.length === sizes.length, 10_000);
  assert.equal(received.length, sizes.length);
  received.forEach((m, i) => {
    assert.equal((m.header as { requestId: number }).requestId, i);
    assert.equal(m.payload!.length, sizes[i]);
    assert.ok(m.payload!.every((b) => b === (i & 0xff)));
  });
  assert.ok(lazyWindowUpdates(ch.stream), 'client stream switched to half-window updates');
  assert.ok(lazyWindowUpdates(server()!.stream), 'server stream switched to half-window updates');
  // after a small message the receiver has not granted window yet (yamux's own update would have)
  const s = server()!.stream as unknown as { recvWindow: number; recvWindowCapacity: number };
  const owed: boolean[] = [];
  for (let i = 0; i < 5; i++) {
    const n = received.length;
    await ch.send(step(i, 2304));
    await waitUntil(() => received.length === n + 1, 5000);
    owed.push(s.recvWindowCapacity < s.recvWindow);
  }
  assert.ok(owed.filter(Boolean).length >= 4, `window still owed after small messages: ${owed.join(',')}`);
});

test("windowUpdates 'every-frame' keeps yamux's own updates; a closed channel refuses sends", async () => {
  const { ch, received, server } = await pair('every-frame');
  await ch.send(step(1, 2304));
  await waitUntil(() => received.length === 1, 5000);
  assert.equal(received.length, 1);
  assert.equal(lazyWindowUpdates(ch.stream), false);
  const s = server()!.stream as unknown as { recvWindow: number; recvWindowCapacity: number };
  assert.equal(s.recvWindowCapacity, s.recvWindow, 'window granted back after the frame');
  await ch.close();
  await assert.rejects(ch.send(step(2, 2304)), /closed/);
});
