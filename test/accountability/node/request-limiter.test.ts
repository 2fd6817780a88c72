// PeerLimiter: per-peer requests per minute and in flight, other peers unaffected, bounded memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerLimiter } from '../../../src/accountability/node/request-limiter.js';

const refusal = (r: ReturnType<PeerLimiter['acquire']>): string => ('refusal' in r ? r.refusal : '');

test('in flight and per minute are bounded per peer; other peers are not affected', () => {
  const l = new PeerLimiter({ perMinute: 3, inFlight: 2 }, 'things');
  const t = 1_000_000;
  const a = l.acquire('A', t);
  const b = l.acquire('A', t);
  assert.ok('release' in a && 'release' in b);
  assert.match(refusal(l.acquire('A', t)), /^limit: 2 things of this peer in flight \(at most 2\)/);
  assert.ok('release' in l.acquire('B', t), 'another peer is served');
  a.release();
  a.release(); // idempotent
  const c = l.acquire('A', t);
  assert.ok('release' in c);
  c.release();
  b.release();
  assert.match(refusal(l.acquire('A', t + 1000)), /^limit: 3 things of this peer this minute \(at most 3\)/);
  assert.ok('release' in l.acquire('A', t + 60_000), 'a new minute');
});

test('at most maxPeers peers are tracked; idle ones are forgotten to make room', () => {
  const l = new PeerLimiter({ perMinute: 10, inFlight: 1 }, 'things', 2);
  const t = 5_000_000;
  const a = l.acquire('A', t);
  const b = l.acquire('B', t);
  assert.match(refusal(l.acquire('C', t)), /too many peers/);
  if ('release' in a) a.release();
  if ('release' in b) b.release();
  assert.match(refusal(l.acquire('C', t + 1)), /too many peers/, 'A and B were active this minute');
  assert.ok('release' in l.acquire('C', t + 60_000));
});
