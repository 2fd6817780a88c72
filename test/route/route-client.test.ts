// The gateway's result handler is reachable by anyone: a stranger's result stream buffers at
// most one bounded message (over it: too_large, stream reset) and is closed when it stays idle
// without being bound to one of the gateway's routes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { Channel } from '../../src/p2p/channel.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { MsgType, RESULT_PROTOCOL } from '../../src/protocol/messages.js';
import { RouteClient } from '../../src/route/route-client.js';

const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop().catch(() => undefined)));
});

async function strangerStream(gateway: OdsiHost) {
  const stranger = await createHost({ identity: generateIdentity() });
  hosts.push(stranger);
  await stranger.dial(gateway.peerId, gateway.addrs());
  const stream = await stranger.libp2p.dialProtocol(peerIdFromString(gateway.peerId), RESULT_PROTOCOL);
  const errors: string[] = [];
  let closed = false;
  const ch = new Channel(stream, gateway.peerId, stranger.peerId, {
    onMessage: (m) => {
      if (m.type === MsgType.ERROR) errors.push(m.header.code);
    },
    onClose: () => (closed = true),
  });
  return { ch, errors, isClosed: () => closed };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

test('a stranger on the result protocol: an oversize message is refused with too_large, an idle stream is closed', { timeout: 30_000 }, async () => {
  const gateway = await createHost({ identity: generateIdentity() });
  hosts.push(gateway);
  const routes = await RouteClient.start(gateway, { maxResultBytes: 64 * 1024, idleMs: 500 });

  const big = await strangerStream(gateway);
  const payload = new Uint8Array(256 * 1024);
  const header = { sessionId: 'nobody', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, payload.length / 4], timeline: [] };
  await big.ch.send({ type: MsgType.RESULT, header, payload } as never).catch(() => undefined);
  await until(() => big.isClosed(), 5_000);
  assert.ok(big.isClosed(), 'the oversize stream is reset');
  assert.deepEqual(big.errors, ['too_large'], 'refused for its size, before anything is parsed');

  const idle = await strangerStream(gateway);
  const t0 = Date.now();
  await until(() => idle.isClosed(), 5_000);
  assert.ok(idle.isClosed(), 'the idle stream is closed');
  assert.ok(Date.now() - t0 < 4_000, 'within the idle time-out, not the test timeout');
  await routes.stop();
});
