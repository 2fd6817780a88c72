// Real `odsi node` processes on 127.0.0.1: stories260K split 2/2/1 over three nodes found
// through the DHT from one bootstrap address; greedy generation through the route equals the
// golden tokens; a late node is discovered; bad input gets clear errors and the node keeps serving.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import type { NodeAdvert } from '../../src/p2p/advert-record.js';
import { findAdverts } from '../../src/p2p/adverts.js';
import { RouteError, type Hop } from '../../src/route/route-stage.js';
import { RouteClient } from '../../src/route/route-client.js';
import { Channel } from '../../src/p2p/channel.js';
import { ACT_PROTOCOL, MsgType, encodeTensor, type Message } from '../../src/protocol/messages.js';
import { createStage } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import type { Stage } from '../../src/engine/types.js';
import type { WeightSource } from '../../src/model/types.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { NodeProcess, type NodeProcessOptions } from '../../src/node/process.js';
import { waitFor } from '../helpers/wait.js';
import { startedAll } from '../helpers/nodes.js';

let src: WeightSource;
let modelId: string;
let gw: OdsiHost;
let routes: RouteClient;
let embed: Stage;
let head: Stage;
let dir: string;
const procs: NodeProcess[] = [];

const common: Omit<NodeProcessOptions, 'range'> = { model: STORIES_GGUF, announceIntervalMs: 3000, benchTokens: 4, env: { ODSI_PASSPHRASE: undefined } };

async function discover(want: (a: NodeAdvert[]) => boolean, what: string): Promise<NodeAdvert[]> {
  return waitFor(async () => {
    const found = await findAdverts(gw, modelId, { timeoutMs: 4000 });
    return want(found) ? found : undefined;
  }, 60_000, what, 300);
}

function chain(adverts: NodeAdvert[], ranges: [number, number][]): Hop[] {
  return ranges.map(([s, e]) => {
    const a = adverts.find((x) => x.start === s && x.end === e);
    assert.ok(a, `no advert for layers ${s}:${e}`);
    return { peerId: a.peerId, addrs: a.addrs, start: a.start, end: a.end };
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'odsi-swarm-'));
  src = openModel(STORIES_GGUF);
  modelId = modelIdentity(src).modelId;
  const a = await NodeProcess.start({ ...common, range: [0, 2], identityFile: join(dir, 'a.key') });
  procs.push(a);
  const boot = a.info.addrs[0]!;
  await startedAll(
    [NodeProcess.start({ ...common, range: [2, 4], bootstrap: [boot] }), NodeProcess.start({ ...common, range: [4, 5], bootstrap: [boot] })],
    procs,
  );
  gw = await createHost({ identity: generateIdentity(), bootstrap: [boot] });
  routes = await RouteClient.start(gw);
  embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
  head = await createStage('reference', src, { start: src.config.nLayers, end: src.config.nLayers, embed: false, head: true });
});

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await gw?.stop();
  await embed?.dispose();
  await head?.dispose();
  src?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('nodes announce the model id the gateway computes, and are found through the DHT', async () => {
  for (const p of procs) assert.equal(p.info.modelId, modelId);
  const found = await discover((f) => f.length >= 3, 'three adverts');
  assert.deepEqual(found.map((a) => [a.start, a.end]), [[0, 2], [2, 4], [4, 5]]);
  assert.deepEqual(new Set(found.map((a) => a.peerId)), new Set(procs.map((p) => p.info.peerId)));
  for (const a of found) assert.ok(a.msPerToken > 0 && a.ttlMs === 9000 && a.freeKvTokens > 0);
});

test('greedy generation through 3 nodes equals the golden tokens', async () => {
  const found = await discover((f) => f.length >= 3, 'three adverts');
  const hops = chain(found, [[0, 2], [2, 4], [4, 5]]);
  const tok = createTokenizer(src.tokenizer!);
  const noStop = { stopIds: [] as number[], createStreamDecoder: () => tok.createStreamDecoder() };
  for (const [i, g] of loadGolden().entries()) {
    const sessionId = `golden-${i}`;
    const route = await routes.open({ modelId, config: src.config, hops, sessionId, deadlineMs: 10_000 });
    const r = await generate([embed, route, head], noStop, g.prompt_tokens, { maxTokens: g.generated_tokens.length, sampling: { temperature: 0 }, sessionId });
    assert.deepEqual(r.tokens, g.generated_tokens, `case ${i}`);
    assert.equal(route.lastTimeline.length, 3);
    assert.deepEqual(route.lastTimeline.map((t) => t.peerId), hops.map((h) => h.peerId));
    assert.ok(route.lastTimeline.every((t) => t.slackMs > 0 && t.slackMs < t.budgetInMs));
    await route.dispose();
  }
});

test('a node started later is discovered', async () => {
  const late = await NodeProcess.start({ ...common, range: [0, 5], bootstrap: [procs[1]!.info.addrs[0]!] });
  procs.push(late);
  const found = await discover((f) => f.some((a) => a.peerId === late.info.peerId), 'the late node');
  const a = found.find((x) => x.peerId === late.info.peerId)!;
  assert.deepEqual([a.start, a.end], [0, 5]);
  // and it serves
  const route = await routes.open({ modelId, config: src.config, hops: [{ peerId: a.peerId, addrs: a.addrs, start: 0, end: 5 }], sessionId: 'late' });
  const out = await route.forward({ sessionId: 'late', pos: 0, nTokens: 1, hidden: new Float32Array(src.config.dim).fill(0.01) });
  assert.equal(out.hidden!.length, src.config.dim);
  await route.dispose();
});

async function rawStream(peerId: string): Promise<{ ch: Channel; got: Message[]; closed: () => boolean }> {
  const stream = await gw.libp2p.dialProtocol(peerIdFromString(peerId), ACT_PROTOCOL);
  const got: Message[] = [];
  let isClosed = false;
  const ch = new Channel(stream, peerId, gw.peerId, { onMessage: (m) => got.push(m), onClose: () => (isClosed = true) });
  return { ch, got, closed: () => isClosed };
}
const firstError = (got: Message[]) => waitFor(async () => got.find((m) => m.type === MsgType.ERROR) as Extract<Message, { type: MsgType.ERROR }> | undefined, 5000, 'an error frame', 20);

test('bad input gets clear error frames and the node keeps serving', async () => {
  const target = procs[0]!.info; // layers 0:2
  const dim = src.config.dim;
  // 1. malformed bytes: bad_frame, then the stream is reset
  const s1 = await rawStream(target.peerId);
  s1.ch.stream.send(new TextEncoder().encode('GET / HTTP/1.1\r\n\r\n'));
  let e = await firstError(s1.got);
  assert.equal(e.header.code, 'bad_frame');
  assert.match(e.header.reason, /magic/);
  assert.equal(e.header.peerId, target.peerId);
  await waitFor(async () => (s1.closed() ? true : undefined), 5000, 'reset after bad frame', 20);
  // 2. oversized frame (declares 2 MiB payload): too_large
  const s2 = await rawStream(target.peerId);
  s2.ch.stream.send(Buffer.from('4f445349010300000200000000002000', 'hex'));
  e = await firstError(s2.got);
  assert.equal(e.header.code, 'too_large');
  // 3. STEP for a session never opened: unknown_session, stream stays usable
  const s3 = await rawStream(target.peerId);
  await s3.ch.send({ type: MsgType.STEP, header: { sessionId: 'nope', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, dim], timeline: [] }, payload: encodeTensor(new Float32Array(dim), 'f32') });
  e = await firstError(s3.got);
  assert.equal(e.header.code, 'unknown_session');
  assert.equal(e.header.requestId, 1);
  // 4. invalid header on the same stream: bad_message naming the field
  await s3.ch.send({ type: MsgType.CLOSE, header: { sessionId: '' } } as Message);
  await waitFor(async () => (s3.got.filter((m) => m.type === MsgType.ERROR).length >= 2 ? true : undefined), 5000, 'second error', 20);
  const e2 = s3.got.filter((m) => m.type === MsgType.ERROR)[1] as Extract<Message, { type: MsgType.ERROR }>;
  assert.equal(e2.header.code, 'bad_message');
  assert.match(e2.header.reason, /sessionId/);
  await s3.ch.close();
  // 5. wrong model id: refused through RouteClient.open with the node named
  const found = await discover((f) => f.length >= 3, 'adverts');
  const hops = chain(found, [[0, 2], [2, 4], [4, 5]]);
  await assert.rejects(routes.open({ modelId: 'f'.repeat(64), config: src.config, hops, sessionId: 'wrong-model' }), (err: unknown) => {
    assert.ok(err instanceof RouteError);
    assert.equal(err.remoteCode, 'wrong_model');
    assert.equal(err.peerId, hops[0]!.peerId);
    return true;
  });
  // the node still serves a proper session
  const route = await routes.open({ modelId, config: src.config, hops, sessionId: 'after-bad-input' });
  const out = await route.forward({ sessionId: 'after-bad-input', pos: 0, nTokens: 2, hidden: new Float32Array(2 * dim).fill(0.02) });
  assert.equal(out.hidden!.length, 2 * dim);
  await route.dispose();
  assert.equal(procs[0]!.alive, true);
});
