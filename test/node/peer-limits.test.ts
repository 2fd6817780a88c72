// PeerLimits bookkeeping: sessions and KV tokens per peer, a share of the whole budget left to
// the node's own check, release, and the stake hook (weight per peer) scaling the limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NO_PEER_LIMITS, PeerLimits } from '../../src/node/peer-limits.js';

test('sessions per peer: the cap refuses the next one for that peer only, release frees a slot', () => {
  const l = new PeerLimits({ maxSessionsPerPeer: 2, maxKvShare: 1 });
  assert.equal(l.admit('a', 10, 1000), undefined);
  assert.equal(l.admit('a', 10, 1000), undefined);
  assert.match(l.admit('a', 10, 1000) ?? '', /per-peer limit: peer a holds 2 sessions, at most 2/);
  assert.equal(l.admit('b', 10, 1000), undefined);
  l.release('a', 10);
  assert.equal(l.admit('a', 10, 1000), undefined);
  assert.deepEqual(l.heldBy('a'), { sessions: 2, kvTokens: 20 });
  assert.equal(l.stats.sessions, 1);
});

test('KV share: the first session is admitted, later ones only within the share', () => {
  const l = new PeerLimits({ maxSessionsPerPeer: 100, maxKvShare: 0.25 });
  assert.equal(l.admit('a', 400, 1000), undefined); // over the 250-token share, but the peer's first
  assert.match(l.admit('a', 10, 1000) ?? '', /holds 400 KV tokens, session asks for 10, at most 250 per peer/);
  assert.equal(l.admit('b', 200, 1000), undefined);
  assert.equal(l.admit('b', 50, 1000), undefined);
  assert.ok(l.admit('b', 1, 1000));
  assert.equal(l.stats.kv, 2);
});

test('no limits: the whole budget is the node check, nothing is refused here', () => {
  const l = new PeerLimits(NO_PEER_LIMITS);
  for (let i = 0; i < 100; i++) assert.equal(l.admit('a', 100, 150), undefined);
  assert.deepEqual(l.channelOptions(64, () => false), {});
});

test('weight(peer) scales every limit (the stake hook); weight 0 admits nothing', () => {
  const l = new PeerLimits({ maxSessionsPerPeer: 2, maxKvShare: 0.25, weight: (p) => (p === 'staked' ? 2 : p === 'banned' ? 0 : 1) });
  for (let i = 0; i < 4; i++) assert.equal(l.admit('staked', 100, 1000), undefined); // 4 sessions, 400 of 500 tokens
  assert.ok(l.admit('staked', 200, 1000));
  assert.ok(l.admit('banned', 1, 1000));
});

test('channel bounds follow the hidden size: max(64 KiB, maxStepTokens × hidden × 4)', () => {
  const l = new PeerLimits({ maxStepTokens: 128, streamIdleMs: 1000 });
  assert.equal(l.channelOptions(64, () => false).maxMessageBytes, 64 * 1024);
  const o = l.channelOptions(4096, () => true);
  assert.equal(o.maxMessageBytes, 128 * 4096 * 4);
  assert.equal(o.idleMs, 1000);
  assert.equal(o.keepAlive?.(), true);
});

test('wouldRefuse checks a KV import against the owner share without counting it', () => {
  const l = new PeerLimits({ maxSessionsPerPeer: 100, maxKvShare: 0.25 });
  assert.equal(l.admit('a', 200, 1000), undefined);
  assert.match(l.wouldRefuse('a', 100, 1000) ?? '', /holds 200 KV tokens, session asks for 100, at most 250 per peer/);
  assert.equal(l.wouldRefuse('a', 50, 1000), undefined);
  assert.deepEqual(l.heldBy('a'), { sessions: 1, kvTokens: 200 }, 'nothing counted');
});
