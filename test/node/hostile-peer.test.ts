// Hostile peers against one real `odsi node` process (stories260K, all layers, 1 MB of KV): a
// peer sending STEPs faster than they run gets ERROR `limit` for those beyond the per-session
// queue (no unbounded promise chain), and is still served afterwards; a KV hand-over is checked
// against the context length and its owner's KV share before anything is reserved, and refused
// when it holds a non-finite value.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { Channel } from '../../src/p2p/channel.js';
import { ACT_PROTOCOL, KV_PROTOCOL, MsgType, RESULT_PROTOCOL, type Message, type OpenHeader } from '../../src/protocol/messages.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../../src/protocol/open-signature.js';
import { MAX_QUEUED_PER_SESSION } from '../../src/node/sessions.js';
import { NodeProcess } from '../../src/node/process.js';
import { openModel } from '../../src/model/load.js';
import type { ModelConfig } from '../../src/model/types.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';

let side: GatewaySide;
let node: NodeProcess;
let attacker: OdsiHost;
let config: ModelConfig;
const results: Message[] = [];

before(
  async () => {
    side = openGatewaySide('odsi-hostile-peer-');
    const src = openModel(STORIES_GGUF);
    config = src.config;
    src.close();
    node = await NodeProcess.start({
      model: STORIES_GGUF,
      range: [0, config.nLayers],
      identityFile: join(side.dir, 'n.key'),
      modelId: side.modelId,
      announceIntervalMs: 600_000,
      extraArgs: ['--kv-budget-mb', '1', '--max-kv-share', '0.25'],
    });
    attacker = await createHost({ identity: generateIdentity() });
    await attacker.libp2p.handle(RESULT_PROTOCOL, (stream, conn) => {
      new Channel(stream, conn.remotePeer.toString(), attacker.peerId, { onMessage: (m) => results.push(m) });
    });
  },
  { timeout: 60_000 },
);

after(async () => {
  await attacker?.stop();
  await node?.stop().catch(() => undefined);
  await side?.close();
});

const hop = () => ({ peerId: node.peerId, addrs: node.info.addrs, start: 0, end: config.nLayers });

async function rawStream(protocol: string): Promise<{ ch: Channel; got: Message[] }> {
  await attacker.dial(node.peerId, node.info.addrs);
  const stream = await attacker.libp2p.dialProtocol(peerIdFromString(node.peerId), protocol);
  const got: Message[] = [];
  return { ch: new Channel(stream, node.peerId, attacker.peerId, { onMessage: (m) => got.push(m) }), got };
}

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  for (const t0 = Date.now(); !cond(); ) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function open(fields: Partial<OpenToSign> & { sessionId: string }): OpenHeader {
  const issuedAt = Date.now();
  const body: OpenToSign = {
    modelId: side.modelId,
    route: [hop()],
    reply: { peerId: attacker.peerId, addrs: attacker.addrs() },
    dtype: 'f32',
    hidden: config.dim,
    maxTokens: 320,
    issuedAt,
    expiresAt: issuedAt + OPEN_TTL_MS,
    ...fields,
  };
  return { ...body, hop: 0, signature: signOpen(attacker.identity, body) };
}

const errorsIn = (got: Message[]) => got.filter((m) => m.type === MsgType.ERROR).map((m) => m.header as { code: string; reason: string });

test('a KV hand-over holding a non-finite value is refused, and what it reserved is given back: eight of them, then a clean one fits', { timeout: 30_000 }, async () => {
  const kvDim = config.nKvHeads * config.headDim;
  const length = 100; // 128 positions as the reference engine allocates; the node's 1 MB holds 819
  const handOver = async (sessionId: string, poison: boolean) => {
    const invite = open({ sessionId, route: [{ peerId: attacker.peerId, addrs: attacker.addrs(), start: 0, end: config.nLayers }], spares: [hop()] });
    const { ch, got } = await rawStream(KV_PROTOCOL);
    for (let layer = 0; layer < config.nLayers; layer++) {
      const kv = new Float32Array(2 * length * kvDim).fill(0.5);
      if (poison && layer === 1) kv[3] = NaN;
      const header = { sessionId, modelId: side.modelId, start: 0, end: config.nLayers, length, layer, kvDim, ...(layer === 0 ? { open: invite } : {}) };
      await ch.send({ type: MsgType.KV, header, payload: new Uint8Array(kv.buffer) } as Message);
      if (got.length) break;
    }
    await until('an answer', () => got.length > 0);
    return got;
  };
  for (let i = 0; i < 8; i++) {
    const poisoned = await handOver(`kv-poisoned-${i}`, true);
    assert.equal(errorsIn(poisoned)[0]?.code, 'bad_message', JSON.stringify(poisoned.map((m) => m.header)));
    assert.match(errorsIn(poisoned)[0]!.reason, /^KV layer 1 holds a non-finite value$/);
  }
  // each poisoned copy's reservation was given back, or this one would not fit (8 × 128 > 819)
  const clean = await handOver('kv-clean', false);
  assert.equal(clean[0]?.type, MsgType.KV_ACK, JSON.stringify(clean.map((m) => m.header)));
});

test('STEPs sent faster than they run: those beyond the per-session queue get limit, the session is served on', { timeout: 60_000 }, async () => {
  const sid = 'flood';
  const { ch, got } = await rawStream(ACT_PROTOCOL);
  await ch.send({ type: MsgType.OPEN, header: open({ sessionId: sid }) });
  await until('OPENED', () => results.some((m) => m.type === MsgType.OPENED && m.header.sessionId === sid));
  const n = 40;
  const nTokens = 8;
  const x = new Float32Array(nTokens * config.dim).fill(0.01);
  const payload = new Uint8Array(x.buffer);
  const stepMsg = (i: number): Message => ({
    type: MsgType.STEP,
    header: { sessionId: sid, requestId: i + 1, step: i, pos: i * nTokens, nTokens, dtype: 'f32', shape: [nTokens, config.dim], timeline: [] },
    payload,
  });
  // all at once: the node's per-session queue takes MAX_QUEUED_PER_SESSION of them at a time
  await Promise.all(Array.from({ length: n }, (_, i) => ch.send(stepMsg(i))));
  const answered = () => results.filter((m) => m.type === MsgType.RESULT && m.header.sessionId === sid).length + errorsIn(got).length;
  await until('every STEP answered', () => answered() >= n);
  const limited = errorsIn(got).filter((e) => e.code === 'limit');
  assert.ok(limited.length > 0, `some STEPs refused with limit (${JSON.stringify(errorsIn(got).slice(0, 2))})`);
  assert.match(limited[0]!.reason, new RegExp(`at most ${MAX_QUEUED_PER_SESSION} messages of a session`));
  assert.ok(errorsIn(got).every((e) => e.code === 'limit' || e.code === 'bad_message' || e.code === 'busy'), JSON.stringify(errorsIn(got)));
  // the session lives on: a step after the burst (rewinding to position 0) is computed
  await ch.send({ type: MsgType.STEP, header: { ...stepMsg(0).header, requestId: 1000, step: n }, payload } as Message);
  await until('the result of the step after the burst', () => results.some((m) => m.type === MsgType.RESULT && m.header.requestId === 1000));
});

test('a KV hand-over is checked against the context length and the owner share before anything is reserved', { timeout: 30_000 }, async () => {
  const kvDim = config.nKvHeads * config.headDim;
  const invite = open({ sessionId: 'kv-import', route: [{ peerId: attacker.peerId, addrs: attacker.addrs(), start: 0, end: config.nLayers }], spares: [hop()] });
  const kv = (length: number): Message => ({
    type: MsgType.KV,
    header: { sessionId: 'kv-import', modelId: side.modelId, start: 0, end: config.nLayers, length, layer: 0, kvDim, open: invite },
    payload: new Uint8Array(0),
  });
  const long = await rawStream(KV_PROTOCOL);
  await long.ch.send(kv(config.contextLength + 1));
  await until('a refusal', () => long.got.length > 0);
  assert.equal(errorsIn(long.got)[0]?.code, 'bad_message');
  assert.match(errorsIn(long.got)[0]!.reason, /not in 1\.\.\d+ \(the context length\)/);
  // the attacker holds the "flood" session's 320 tokens; the node's 1 MB budget gives each peer far less than that more
  const share = await rawStream(KV_PROTOCOL);
  await share.ch.send(kv(64));
  await until('a refusal', () => share.got.length > 0);
  assert.equal(errorsIn(share.got)[0]?.code, 'limit');
  assert.match(errorsIn(share.got)[0]!.reason, /per-peer limit: peer .* holds 320 KV tokens, session asks for 64/);
});
