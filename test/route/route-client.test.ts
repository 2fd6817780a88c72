// The gateway's result handler is reachable by anyone. A peer that is no open route's last hop
// gets no result stream at all; the last hop of a route gets one per route ending at it (plus a
// little slack), each bound by its first OPENED to that one session; bad messages are answered
// without detail; a stream buffers at most one bounded message (over it: too_large, stream
// reset) and is closed when it stays idle without being bound.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { Channel } from '../../src/p2p/channel.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { ACT_PROTOCOL, MsgType, RESULT_PROTOCOL, type Message } from '../../src/protocol/messages.js';
import { RouteClient } from '../../src/route/route-client.js';
import { openModel } from '../../src/model/load.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop().catch(() => undefined)));
});

async function host(): Promise<OdsiHost> {
  const h = await createHost({ identity: generateIdentity() });
  hosts.push(h);
  return h;
}

async function resultStream(from: OdsiHost, gateway: OdsiHost) {
  await from.dial(gateway.peerId, gateway.addrs());
  const stream = await from.libp2p.dialProtocol(peerIdFromString(gateway.peerId), RESULT_PROTOCOL);
  const errors: { code: string; reason: string }[] = [];
  let closed = false;
  const ch = new Channel(stream, gateway.peerId, from.peerId, {
    onMessage: (m) => {
      if (m.type === MsgType.ERROR) errors.push({ code: m.header.code, reason: m.header.reason });
    },
    onClose: () => (closed = true),
  });
  return { ch, stream, errors, isClosed: () => closed };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

const resultHeader = (sessionId: string, n: number) => ({ sessionId, requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, n], timeline: [] });

test('a peer that is no route’s last hop gets no result stream', { timeout: 30_000 }, async () => {
  const gateway = await host();
  const routes = await RouteClient.start(gateway, { maxResultBytes: 64 * 1024, idleMs: 500 });
  const stranger = await host();
  const s = await resultStream(stranger, gateway);
  await until(() => s.isClosed(), 5_000);
  assert.ok(s.isClosed(), 'refused at once');
  assert.deepEqual(s.errors, [{ code: 'forbidden', reason: 'result stream refused' }]);
  await routes.stop();
});

test('the last hop of a route: streams bounded per route, bound to one session, bad input answered without detail', { timeout: 30_000 }, async () => {
  const gateway = await host();
  const routes = await RouteClient.start(gateway, { maxResultBytes: 64 * 1024, idleMs: 1500 });
  const hop = await host();
  let opened = false;
  await hop.libp2p.handle(ACT_PROTOCOL, (stream, conn) => {
    new Channel(stream, conn.remotePeer.toString(), hop.peerId, { onMessage: (m) => void (opened ||= m.type === MsgType.OPEN) });
  });
  const src = openModel(STORIES_GGUF);
  const config = src.config;
  src.close();
  const route = routes.open({ modelId: 'm', config, hops: [{ peerId: hop.peerId, addrs: hop.addrs(), start: 0, end: config.nLayers }], sessionId: 'sess-1', openTimeoutMs: 10_000 });
  route.catch(() => undefined);
  await until(() => opened, 5_000);

  const main = await resultStream(hop, gateway);
  // an invalid header: bad_message, and nothing about what was wrong
  main.stream.send(encodeFrame({ type: MsgType.RESULT, flags: 0, header: new TextEncoder().encode('{"sessionId":7}'), payload: new Uint8Array(0) }));
  await until(() => main.errors.length > 0, 5_000);
  assert.deepEqual(main.errors, [{ code: 'bad_message', reason: 'bad message' }]);
  // OPENED binds the stream to the route
  await main.ch.send({ type: MsgType.OPENED, header: { sessionId: 'sess-1', peers: [hop.peerId] } });
  const stage = await route;
  // a bound stream carries its own session only
  await main.ch.send({ type: MsgType.RESULT, header: resultHeader('other', config.dim), payload: new Uint8Array(config.dim * 4) } as Message);
  await until(() => main.errors.length > 1, 5_000);
  assert.deepEqual(main.errors[1], { code: 'unknown_session', reason: 'no such route' });

  // one route ends here: 1 + STREAM_SLACK streams (an unbound one: an oversize message is refused
  // for its size, an idle one is closed), the next is refused with limit
  assert.equal(RouteClient.STREAM_SLACK, 2);
  const big = await resultStream(hop, gateway);
  const idle = await resultStream(hop, gateway);
  const over = await resultStream(hop, gateway);
  await until(() => over.isClosed(), 5_000);
  assert.deepEqual(over.errors, [{ code: 'limit', reason: 'result stream refused' }]);
  const payload = new Uint8Array(256 * 1024);
  await big.ch.send({ type: MsgType.RESULT, header: resultHeader('sess-1', payload.length / 4), payload } as Message).catch(() => undefined);
  const extra = [big, idle];
  const t0 = Date.now();
  await until(() => extra[0]!.isClosed() && extra[1]!.isClosed(), 5_000);
  assert.ok(extra[0]!.isClosed() && extra[1]!.isClosed(), 'both closed');
  assert.ok(Date.now() - t0 < 4_000, 'within the idle time-out, not the test timeout');
  assert.deepEqual(extra[0]!.errors.map((e) => e.code), ['too_large']);
  assert.deepEqual(extra[1]!.errors.map((e) => e.code), ['timeout']);
  assert.ok(!main.isClosed(), 'the bound stream lives on');
  stage.teardown();
  await routes.stop();
});
