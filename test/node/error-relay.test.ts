// What a hop passes upstream of its next hop's ERROR (node/error-relay.ts): a later hop's
// verified ERROR as it is, anything else re-issued as its own account naming the next hop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromSecret } from '../../src/identity/identity.js';
import type { ErrorHeader, OpenHeader } from '../../src/protocol/messages.js';
import { errorSigner } from '../../src/protocol/error-signature.js';
import { relayedError } from '../../src/node/error-relay.js';

const keys = [1, 2, 3, 4].map((b) => identityFromSecret(new Uint8Array(32).fill(b)));
const [gw, a, b, c] = keys.map((k) => k.peerId.toString()) as [string, string, string, string];
const hop = (peerId: string, start: number, end: number) => ({ peerId, addrs: [], start, end });
// this hop is b (hop 1); its next hop is c
const open = {
  sessionId: 's1',
  hop: 1,
  route: [hop(a, 0, 1), hop(b, 1, 2), hop(c, 2, 3)],
  reply: { peerId: gw, addrs: [] },
} as unknown as OpenHeader;
const signedBy = (i: number, h: ErrorHeader) => errorSigner(keys[i]!)({ sessionId: 's1', requestId: 5, ...h });

test('a later hop’s verified ERROR about the session goes upstream unchanged', () => {
  const h = signedBy(3, {
    code: 'draining',
    reason: 'leaving',
    peerId: c,
    hop: 2,
    replacement: { peerId: 'x', addrs: [] },
    resumeFrom: 's1',
  });
  assert.equal(relayedError(h, 's1', open, c), h);
});

test('anything else is re-issued naming the next hop, without a hand-over', () => {
  const cases: ErrorHeader[] = [
    { code: 'engine', reason: 'r', peerId: c, sessionId: 's1', requestId: 5 }, // unsigned
    { ...signedBy(3, { code: 'engine', reason: 'r', peerId: a }), peerId: c }, // changed after signing
    signedBy(2, { code: 'engine', reason: 'r', peerId: b }), // in this hop's own name
    signedBy(1, { code: 'engine', reason: 'r', peerId: b }), // in the name of a hop before it
    signedBy(3, { code: 'engine', reason: 'r', peerId: c, sessionId: 's2' }), // another session
    {
      ...signedBy(3, { code: 'draining', reason: 'leaving', peerId: c, replacement: { peerId: 'x', addrs: [] } }),
      signature: 'ab'.repeat(64),
    },
  ];
  for (const [k, h] of cases.entries()) {
    const got = relayedError(h, 's1', open, c);
    assert.equal(got.peerId, c, `case ${k}`);
    assert.equal(got.code, h.code);
    assert.equal(got.sessionId, 's1');
    assert.equal(got.requestId, 5);
    assert.equal(got.hop, 1);
    assert.equal(got.signature, undefined, 'signed by the upstream channel as it goes');
    assert.equal(got.replacement, undefined);
    assert.equal(got.stream, undefined);
    assert.ok(got.reason.startsWith(`${c} sent ${h.code}: `), got.reason);
  }
});

test('a next hop’s ERROR about their stream is re-issued with `stream`', () => {
  const got = relayedError({ code: 'timeout', reason: 'no complete message for 800 ms', peerId: c }, 's1', open, c);
  assert.deepEqual(got, {
    code: 'timeout',
    reason: `${c} sent timeout: no complete message for 800 ms`,
    peerId: c,
    sessionId: 's1',
    hop: 1,
    stream: true,
  });
  assert.equal(relayedError({ code: 'x', reason: 'y'.repeat(5000), peerId: c }, 's1', open, c).reason.length, 4096);
});
