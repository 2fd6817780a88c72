// StreamPool between two in-process hosts: the first take negotiates and leaves one spare
// ready; the next take gets that spare (no negotiation) and it carries messages like any
// stream; a spare the remote closed is dropped at take and a fresh stream negotiated instead; an
// unused spare is closed after maxIdleMs (the remote sees it go), and spares stay bounded per peer
// and in peers; close() closes them all. A remote that closes silent streams sooner than
// maxIdleMs (a node's --stream-idle-timeout) is seen doing it, and that peer's spares then live
// half as long, so it never has to again.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Stream } from '@libp2p/interface';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { Channel } from '../../src/p2p/channel.js';
import { StreamPool, type StreamPoolOptions } from '../../src/p2p/stream-pool.js';
import { MsgType, type Message } from '../../src/protocol/messages.js';

const PROTO = '/odsi/test-pool/1.0.0';
const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop()));
});

const waitUntil = async (f: () => boolean, ms: number) => {
  for (let t = 0; t < ms && !f(); t += 10) await new Promise((r) => setTimeout(r, 10));
};

const close = (sessionId: string): Message => ({ type: MsgType.CLOSE, header: { sessionId, reason: 'test' } });

/** A server that records its inbound streams (and the messages on them), closing silent ones after serverIdleMs if given, and a client with a pool to it. */
async function pair(o: Partial<StreamPoolOptions> = {}, serverIdleMs?: number) {
  const server = await createHost({ identity: generateIdentity() });
  const client = await createHost({ identity: generateIdentity() });
  hosts.push(server, client);
  const inbound: Stream[] = [];
  const received: Message[] = [];
  await server.libp2p.handle(PROTO, (stream, conn) => {
    inbound.push(stream);
    const ch: Channel = new Channel(
      stream,
      conn.remotePeer.toString(),
      server.peerId,
      {
        onMessage: (m) => {
          received.push(m);
          void ch.send(close((m.header as { sessionId: string }).sessionId));
        },
      },
      // a node's idle limit for streams that carry no message (an ERROR, then close)
      serverIdleMs !== undefined ? { idleMs: serverIdleMs } : {},
    );
  });
  await client.dial(server.peerId, server.addrs());
  const pool = new StreamPool({
    libp2p: client.libp2p,
    protocol: PROTO,
    spares: 1,
    maxIdleMs: 20_000,
    maxPeers: 8,
    maxOutboundStreams: 64,
    ...o,
  });
  return { server, client, pool, inbound, received };
}

test('the first take negotiates and leaves a spare; the next take gets the spare, which carries messages', async () => {
  const { server, pool, inbound, received } = await pair();
  const s1 = await pool.take(server.peerId, AbortSignal.timeout(5000));
  assert.equal(pool.stats.negotiated, 1);
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  assert.equal(pool.ready(server.peerId), 1, 'one spare negotiated in the background');
  assert.equal(inbound.length, 2);
  const s2 = await pool.take(server.peerId, AbortSignal.timeout(5000));
  assert.equal(pool.stats.spareTaken, 1);
  assert.equal(pool.stats.negotiated, 1, 'the second take did not negotiate');
  assert.notEqual(s1, s2);
  // the spare is an ordinary stream of the protocol: a message on it arrives and is answered
  const answers: Message[] = [];
  const ch = new Channel(s2, server.peerId, 'client', { onMessage: (m) => answers.push(m) });
  await ch.send(close('on-spare'));
  await waitUntil(() => answers.length === 1, 3000);
  assert.deepEqual(
    received.map((m) => (m.header as { sessionId: string }).sessionId),
    ['on-spare'],
  );
  assert.equal(answers[0]?.type, MsgType.CLOSE);
  // and the pool topped up again
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  assert.equal(pool.ready(server.peerId), 1);
  pool.close();
  await waitUntil(() => inbound[2]?.status !== 'open', 3000);
  assert.notEqual(inbound[2]?.status, 'open', 'close() closed the spare');
  assert.equal(pool.stats.spareExpired, 1);
});

test('a spare the remote closed is dropped at take, which negotiates a fresh stream instead', async () => {
  const { server, pool, inbound } = await pair();
  await pool.take(server.peerId, AbortSignal.timeout(5000));
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  // the remote gives up on the silent stream (as a node's idle limit would)
  await inbound[1]!.close(); // its write side: the client's end sees the remote stop writing
  await new Promise((r) => setTimeout(r, 100));
  const s = await pool.take(server.peerId, AbortSignal.timeout(5000));
  assert.equal(pool.stats.spareDropped, 1);
  assert.equal(pool.stats.spareTaken, 0);
  assert.equal(pool.stats.negotiated, 2);
  assert.equal(s.status, 'open');
  pool.close();
});

test('an unused spare is closed after maxIdleMs; spares stay bounded per peer and in peers; no spares when spares = 0', async () => {
  const { server, client, pool, inbound } = await pair({ maxIdleMs: 300, maxPeers: 1 });
  await pool.take(server.peerId, AbortSignal.timeout(5000));
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  // a second take while the first spare is in use tops up to one, not two
  await pool.take(server.peerId, AbortSignal.timeout(5000));
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(pool.ready(server.peerId), 1);
  assert.equal(inbound.length, 3);
  await waitUntil(() => pool.ready(server.peerId) === 0, 3000);
  assert.equal(pool.stats.spareExpired, 1, 'expired unused');
  await waitUntil(() => inbound[2]!.status !== 'open', 3000);
  assert.notEqual(inbound[2]!.status, 'open', 'the remote saw the spare close');

  // a second peer evicts the first one's spares (maxPeers 1)
  const other = await createHost({ identity: generateIdentity() });
  hosts.push(other);
  await other.libp2p.handle(PROTO, () => {});
  await client.dial(other.peerId, other.addrs());
  await pool.take(server.peerId, AbortSignal.timeout(5000));
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  await pool.take(other.peerId, AbortSignal.timeout(5000));
  assert.equal(pool.ready(server.peerId), 0, 'least recently used peer evicted');
  await waitUntil(() => pool.ready(other.peerId) === 1, 3000);
  assert.equal(pool.ready(other.peerId), 1);
  pool.close();

  const none = new StreamPool({ libp2p: client.libp2p, protocol: PROTO, spares: 0, maxIdleMs: 1000, maxPeers: 8, maxOutboundStreams: 64 });
  const before = inbound.length;
  await none.take(server.peerId, AbortSignal.timeout(5000));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(none.ready(server.peerId), 0);
  assert.equal(inbound.length, before + 1, 'spares = 0 opens only the stream taken');
});

test("a remote that closes silent streams sooner than maxIdleMs: the spare is dropped when it does, and that peer's next spares live half as long", async () => {
  const IDLE = 600;
  const { server, pool } = await pair({}, IDLE);
  const taken = await pool.take(server.peerId, AbortSignal.timeout(5000));
  taken.abort(new Error('not needed here')); // (only the spare it leaves matters)
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  // the remote gives up on the silent spare after IDLE ms: the pool drops it then, not at the next take
  await waitUntil(() => pool.ready(server.peerId) === 0, 3000);
  assert.equal(pool.stats.spareDropped, 1);
  assert.equal(pool.stats.spareExpired, 0);
  // the next spare lives IDLE / 2: the pool closes it itself, before the remote's limit
  const again = await pool.take(server.peerId, AbortSignal.timeout(5000));
  assert.equal(pool.stats.negotiated, 2, 'no spare was left to take');
  const t0 = performance.now();
  await waitUntil(() => pool.ready(server.peerId) === 1, 3000);
  await waitUntil(() => pool.ready(server.peerId) === 0, 3000);
  const lived = performance.now() - t0;
  assert.equal(pool.stats.spareExpired, 1, 'closed by the pool');
  assert.equal(pool.stats.spareDropped, 1, 'not by the remote');
  assert.ok(lived < IDLE, `the spare lived ${lived.toFixed(0)} ms`);
  again.abort(new Error('done'));
  pool.close();
});
