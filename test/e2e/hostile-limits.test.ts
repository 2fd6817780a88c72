// Per-peer limits of `odsi node` against a hostile peer: 3 real node processes (stories260K
// split 2/2/1) with small limits, attacker peers with their own keys (src/testing/attacker.ts)
// and a production Gateway over exactly those nodes. An unfinished chunked message over the
// per-stream cap and an oversize length are refused with `too_large` and the stream reset;
// idle streams are closed after the stream idle timeout; a peer over its session count or
// KV share gets `busy` while the gateway still generates the golden tokens; a bulk of streams
// from one peer is cut at the per-peer stream cap with `limit`, and opening streams faster than
// the per-peer rate is refused with `limit` too.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { NodeProcess } from '../../src/node/process.js';
import { Attacker, type AttackTarget } from '../../src/testing/attacker.js';
import { ACT_PROTOCOL } from '../../src/protocol/messages.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { startedAll } from '../helpers/nodes.js';

const HIDDEN = 64; // stories260K
const IDLE_MS = 1500;
const STREAMS_PER_PEER = 24;
const SESSIONS_PER_PEER = 4;
// a bucket of 4 s worth: 40 stream opens at once, then 10 per second
const OPENS_PER_SEC = 10;
// 1 MiB of KV: 2,048 tokens on a 2-layer node; a quarter (512 tokens) per peer
const LIMIT_ARGS = [
  '--kv-budget-mb', '1',
  '--max-kv-share', '0.25',
  '--max-sessions-per-peer', String(SESSIONS_PER_PEER),
  '--max-streams-per-peer', String(STREAMS_PER_PEER),
  '--stream-idle-timeout', String(IDLE_MS),
  // these nodes close a silent stream after 1.5 s, far below the 20 s a peer keeps a spare by
  // default: a hop's spare to its next hop would be closed under it, and a session OPEN sent on
  // it as the close crosses fails (a golden run ~1.5 s after the one before)
  '--stream-spare-idle', String(IDLE_MS / 2),
  '--stream-opens-per-sec', String(OPENS_PER_SEC),
];

let side: GatewaySide | undefined;
const nodes: NodeProcess[] = [];
const attackers: Attacker[] = [];

before(
  async () => {
    side = openGatewaySide('odsi-hostile-');
    const ranges: [number, number][] = [
      [0, 2],
      [2, 4],
      [4, 5],
    ];
    await startedAll(
      ranges.map((range, i) =>
        NodeProcess.start({ model: STORIES_GGUF, range, identityFile: join(side!.dir, `n${i}.key`), modelId: side!.modelId, announceIntervalMs: 600_000, extraArgs: LIMIT_ARGS }),
      ),
      nodes,
    );
  },
  { timeout: 120_000 },
);

after(async () => {
  await Promise.all(attackers.map((a) => a.stop().catch(() => undefined)));
  await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  await side?.close();
});

const target = (n: NodeProcess): AttackTarget => ({ peerId: n.peerId, addrs: n.info.addrs, start: n.info.start, end: n.info.end });

async function attacker(): Promise<Attacker> {
  const a = await Attacker.start({ modelId: side!.modelId, hidden: HIDDEN });
  attackers.push(a);
  return a;
}

async function goldenThroughGateway(sessionId: string): Promise<void> {
  const gw = await side!.gateway(nodes.map((n) => n.candidate(1)));
  const g = loadGolden()[0]!;
  const r = await gw.run({ promptIds: g.prompt_tokens, maxTokens: g.generated_tokens.length, sampling: { temperature: 0 }, sessionId });
  assert.deepEqual(r.tokens, g.generated_tokens);
}

test('an unfinished chunked message over the per-stream cap, and an oversize length, are refused with too_large; the node lives on', { timeout: 60_000 }, async () => {
  const a = await attacker();
  const t = target(nodes[0]!);
  // cap: max(64 KiB, 128 tokens × 64 × 4 bytes) = 64 KiB; 1 MiB is offered in 16 KiB frames
  const big = await a.unfinishedMessage(t, 1024 * 1024, 16 * 1024);
  assert.equal(big.refusals.too_large, 1, JSON.stringify(big));
  assert.equal(big.closedByNode, 1, JSON.stringify(big));
  assert.equal(big.accepted, 0);
  const huge = await a.oversizeLength(t);
  assert.equal(huge.refusals.too_large, 1, JSON.stringify(huge));
  assert.equal(huge.closedByNode, 1, JSON.stringify(huge));
  await goldenThroughGateway('hostile-frames');
});

test('idle streams are closed after the stream idle timeout', { timeout: 60_000 }, async () => {
  const a = await attacker();
  const r = await a.holdIdleStreams(target(nodes[1]!), 8, IDLE_MS * 2 + 1000);
  assert.equal(r.accepted, 8, JSON.stringify(r));
  assert.equal(r.closedByNode, 8, JSON.stringify(r));
  assert.equal(r.refusals.timeout, 8, JSON.stringify(r));
});

test('a peer over its session count or KV share gets busy; the gateway still generates the golden tokens', { timeout: 90_000 }, async () => {
  const t = target(nodes[0]!);
  const many = await (await attacker()).openSessions(t, SESSIONS_PER_PEER + 4, 64);
  assert.equal(many.accepted, SESSIONS_PER_PEER, JSON.stringify(many));
  assert.equal(many.refusals.busy, 4, JSON.stringify(many));
  // 400 tokens fit the 512-token share once; the second session would hold 800
  const big = await (await attacker()).openSessions(t, 3, 400);
  assert.equal(big.accepted, 1, JSON.stringify(big));
  assert.equal(big.refusals.busy, 2, JSON.stringify(big));
  // the attackers still hold their sessions: the legitimate route is served all the same
  await goldenThroughGateway('hostile-sessions');
});

test('a bulk of streams from one peer is cut at the per-peer stream cap', { timeout: 60_000 }, async () => {
  const a = await attacker();
  const r = await a.openStreamsBulk(target(nodes[2]!), STREAMS_PER_PEER + 16, ACT_PROTOCOL, 1000);
  assert.equal(r.tried, STREAMS_PER_PEER + 16);
  assert.ok(r.accepted <= STREAMS_PER_PEER, JSON.stringify(r));
  assert.ok(r.accepted >= STREAMS_PER_PEER - 2, JSON.stringify(r));
  assert.ok((r.refusals.limit ?? 0) + (r.refusals['refused at open'] ?? 0) >= 16, JSON.stringify(r));
  await goldenThroughGateway('hostile-streams');
});

test('a peer opening streams faster than its rate is refused with limit; others are served', { timeout: 60_000 }, async () => {
  const a = await attacker();
  // 70 at once: the first 40 fit the bucket (of which the stream cap admits 24), the other 30 are too fast
  const r = await a.openStreamsBulk(target(nodes[1]!), 70, ACT_PROTOCOL, 1000);
  assert.equal(r.tried, 70);
  assert.ok(r.accepted <= STREAMS_PER_PEER, JSON.stringify(r));
  assert.ok((r.refusals.limit ?? 0) >= 70 - STREAMS_PER_PEER, JSON.stringify(r));
  // however slowly the 70 opens go out (a loaded machine), at most 40 + 10/s pass the rate
  assert.ok((r.refusals['limit: open rate'] ?? 0) >= 10, JSON.stringify(r));
  await goldenThroughGateway('hostile-open-rate');
});
