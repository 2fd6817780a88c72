// The signed OPEN (docs/protocol.md §4.1): the fixed vector of §9.3, and what makes an OPEN
// not its gateway's (another signer, a changed member, expiry, no signature). `hop` is unsigned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromSecret, generateIdentity } from '../../src/identity/identity.js';
import type { OpenHeader } from '../../src/protocol/messages.js';
import { OPEN_TTL_MS, checkOpenSignature, openSigningBytes, signOpen, type OpenToSign } from '../../src/protocol/open-signature.js';

const gw = identityFromSecret(new Uint8Array(32).fill(1));
const body: OpenToSign = {
  sessionId: 'req-1',
  modelId: 'abc123',
  route: [
    { peerId: 'hop-a', addrs: ['/ip4/127.0.0.1/tcp/4001'], start: 0, end: 2 },
    { peerId: 'hop-b', addrs: ['/ip4/127.0.0.1/tcp/4002'], start: 2, end: 5 },
  ],
  reply: { peerId: gw.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4000'] },
  dtype: 'f32',
  hidden: 64,
  maxTokens: 512,
  spares: [{ peerId: 'hop-c', addrs: ['/ip4/127.0.0.1/tcp/4003'], start: 2, end: 5 }],
  issuedAt: 1700000000000,
  expiresAt: 1700000060000,
};
const SIG =
  'aecda5fbc37b6b06acda873dbffac3c5444a2ebe8e6ff520cd373e0e8e4c53cd3a3997b32c3f77c85e0a736808c75000049153d3c49fda081ddd6b017f96f46d';
const BYTES =
  'odsi/open/v1\n{"sessionId":"req-1","modelId":"abc123","route":[{"peerId":"hop-a","addrs":["/ip4/127.0.0.1/tcp/4001"],"start":0,"end":2},{"peerId":"hop-b","addrs":["/ip4/127.0.0.1/tcp/4002"],"start":2,"end":5}],"reply":{"peerId":"16Uiu2HAmEWQnHq2jLKJypwVnVoQeFCULuyop6atvq2eWjYSUjzNi","addrs":["/ip4/127.0.0.1/tcp/4000"]},"dtype":"f32","hidden":64,"maxTokens":512,"idleTimeoutMs":null,"resumeFrom":null,"spares":[{"peerId":"hop-c","addrs":["/ip4/127.0.0.1/tcp/4003"],"start":2,"end":5}],"issuedAt":1700000000000,"expiresAt":1700000060000}';

test('signed OPEN vector (docs/protocol.md §9.3)', () => {
  assert.equal(new TextDecoder().decode(openSigningBytes(body)), BYTES);
  assert.equal(signOpen(gw, body), SIG);
  const h: OpenHeader = { ...body, hop: 1, signature: SIG };
  assert.equal(checkOpenSignature(h), undefined);
  assert.equal(checkOpenSignature(h, body.issuedAt! + 1000), undefined);
});

test('an OPEN that is not its gateway’s is refused with the reason', () => {
  const h: OpenHeader = { ...body, hop: 0, signature: SIG };
  assert.match(checkOpenSignature({ ...h, maxTokens: 513 })!, /signature does not match/);
  assert.match(checkOpenSignature({ ...h, route: [h.route[0]!] })!, /signature does not match/);
  assert.match(checkOpenSignature({ ...h, signature: undefined })!, /not signed/);
  assert.match(checkOpenSignature({ ...h, signature: 'zz' })!, /signature does not match/);
  assert.match(checkOpenSignature({ ...h, spares: [null] })!, /signature does not match/);
  assert.match(checkOpenSignature(h, body.expiresAt! + 1)!, /expired/);
  assert.match(checkOpenSignature(h, body.issuedAt! - 2 * OPEN_TTL_MS)!, /future/);
  const other = generateIdentity();
  assert.throws(() => signOpen(other, body), /signed by the gateway its reply names/);
  const forged = { ...body, reply: { peerId: other.peerId.toString(), addrs: [] } };
  assert.match(checkOpenSignature({ ...forged, hop: 0, signature: signOpen(gw, { ...body }) })!, /signature does not match/);
  const long = { ...body, reply: { ...body.reply }, expiresAt: body.issuedAt! + OPEN_TTL_MS + 1 };
  assert.match(checkOpenSignature({ ...long, hop: 0, signature: signOpen(gw, long) }, body.issuedAt)!, /valid for more than/);
});
