// Whom the gateway holds to an ERROR (route/error-blame.ts): its signed issuer, as far as the
// issuer can know (itself and its route neighbours), else the peer that handed it over.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromSecret } from '../../src/identity/identity.js';
import type { ErrorHeader } from '../../src/protocol/messages.js';
import { errorSigner } from '../../src/protocol/error-signature.js';
import { blameFor } from '../../src/route/error-blame.js';

const keys = [1, 2, 3, 4].map((b) => identityFromSecret(new Uint8Array(32).fill(b)));
const [gw, a, b, c] = keys.map((k) => k.peerId.toString()) as [string, string, string, string];
const route = [a, b, c];
const ctx = { sessionId: 's1', route, owner: gw, deliverer: a };
/** hop i's signed ERROR (session s1 unless given) */
const sign = (i: number, h: ErrorHeader) => errorSigner(keys[i + 1]!)({ sessionId: 's1', requestId: 4, hop: i, ...h });

test('a signed ERROR naming its issuer or a route neighbour is taken as it is', () => {
  const cases: [number, string][] = [
    [0, a], // itself
    [0, gw], // hop 0: input from the gateway
    [0, b], // the next hop
    [1, a], // the hop before: custody, input
    [1, c], // the next hop: unreachable
    [2, b],
    [2, gw], // the last hop: the gateway's result stream unreachable
  ];
  for (const [i, named] of cases) {
    const h = sign(i, { code: 'custody', reason: 'r', peerId: named });
    assert.deepEqual(blameFor(h, ctx), h, `hop ${i} naming ${named}`);
  }
  const draining = sign(2, { code: 'draining', reason: 'leaving', peerId: c, replacement: { peerId: 'x', addrs: [] }, resumeFrom: 's1' });
  assert.deepEqual(blameFor(draining, ctx), draining, 'a signed hand-over keeps its replacement');
});

test('a signed ERROR naming a peer beyond its neighbours is its issuer’s', () => {
  const h = sign(0, { code: 'engine', reason: 'r', peerId: c });
  const got = blameFor(h, ctx);
  assert.equal(got.peerId, a);
  assert.equal(got.code, 'engine');
  assert.equal(got.from, undefined);
  assert.match(got.reason, /not its neighbour/);
});

test('an unverifiable ERROR is the deliverer’s, and loses its hand-over', () => {
  const good = sign(2, { code: 'draining', reason: 'leaving', peerId: c, replacement: { peerId: 'x', addrs: [] }, resumeFrom: 's1' });
  const forged: ErrorHeader[] = [
    { ...good, signature: 'ab'.repeat(64) }, // a signature that is not c's
    { ...good, replacement: { peerId: 'evil', addrs: [] } }, // a changed member
    { code: 'engine', reason: 'r', peerId: c, sessionId: 's1', requestId: 4 }, // unsigned
    { ...sign(1, { code: 'engine', reason: 'r', peerId: b }), sessionId: 's2' }, // moved to another session
    sign(1, { code: 'engine', reason: 'r', peerId: b, sessionId: 's2' }), // validly signed, another session
    errorSigner(identityFromSecret(new Uint8Array(32).fill(9)))({ code: 'engine', reason: 'r', peerId: c, sessionId: 's1' }), // not a hop
  ];
  for (const [k, h] of forged.entries()) {
    for (const deliverer of [a, c]) {
      const got = blameFor(h, { ...ctx, deliverer });
      assert.equal(got.peerId, deliverer, `case ${k}`);
      assert.equal(got.code, h.code, `case ${k}: the code is kept (a deliverer saying 'busy' of itself is not banned)`);
      assert.equal(got.replacement, undefined);
      assert.equal(got.resumeFrom, undefined);
      assert.equal(got.from, undefined);
      assert.equal(got.signature, undefined);
      assert.match(got.reason, /unverifiable ERROR/);
    }
  }
});

test('an ERROR about no session is the deliverer’s', () => {
  const own: ErrorHeader = { code: 'timeout', reason: 'idle', peerId: a };
  assert.deepEqual(blameFor(own, ctx), own, 'a stream error naming the deliverer is kept (stale spares, limits)');
  const got = blameFor({ code: 'bad_frame', reason: 'x', peerId: c }, ctx);
  assert.equal(got.peerId, a);
});
