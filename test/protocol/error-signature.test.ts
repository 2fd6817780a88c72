// The signed ERROR (docs/protocol.md §5 "Signed ERRORs", §9.4): the fixed vector, and what
// makes an ERROR not its issuer's (a changed member, another signer named in `from`, no
// signature, a malformed replacement).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromSecret } from '../../src/identity/identity.js';
import type { ErrorHeader } from '../../src/protocol/messages.js';
import { checkErrorSignature, errorSigner, errorSigningBytes } from '../../src/protocol/error-signature.js';

const hop = identityFromSecret(new Uint8Array(32).fill(2));
const other = identityFromSecret(new Uint8Array(32).fill(3));
const FROM = '16Uiu2HAkzdQ5Y9SYT91K1ue5SxXwgmajXntfScGnLYeip5hHyWmT';
const h: ErrorHeader = {
  code: 'custody',
  reason: 'chain of custody: bad_signature: receipt 0 not signed by its signer',
  peerId: 'hop-a',
  sessionId: 'req-1',
  requestId: 3,
  hop: 1,
};
const BYTES = `odsi/error/v1\n{"from":"${FROM}","sessionId":"req-1","requestId":3,"hop":1,"code":"custody","reason":"chain of custody: bad_signature: receipt 0 not signed by its signer","peerId":"hop-a","stream":null,"replacement":null,"resumeFrom":null}`;
const SIG =
  'e2fc0b47c20aec453e3be1b534bb07d834514b2375ce72149cbeff66f516e7be5e37355bc331389a532434795360bae9e4dd91406b22dc965c4740252b9f80fd';

test('signed ERROR vector (docs/protocol.md §9.4)', () => {
  assert.equal(hop.peerId.toString(), FROM);
  const signed = errorSigner(hop)(h);
  assert.equal(signed.from, FROM);
  assert.equal(signed.signature, SIG);
  assert.equal(new TextDecoder().decode(errorSigningBytes(signed)), BYTES);
  assert.equal(checkErrorSignature(signed), undefined);
  // the signer replaces a from/signature already there (a relay's header is never re-signed by accident)
  assert.deepEqual(errorSigner(hop)({ ...h, from: 'x', signature: 'y' }), signed);
});

test('an ERROR that is not its issuer’s is refused with the reason', () => {
  const signed = errorSigner(hop)(h);
  for (const changed of [
    { peerId: 'hop-b' },
    { code: 'busy' },
    { reason: 'other' },
    { requestId: 4 },
    { hop: 2 },
    { sessionId: 'req-2' },
    { resumeFrom: 'req-1' },
    { stream: true as const },
    { replacement: { peerId: 'hop-c', addrs: [] } },
  ])
    assert.match(checkErrorSignature({ ...signed, ...changed })!, /does not match its issuer/, JSON.stringify(changed));
  // another hop's key named as the issuer, a signature moved to another issuer
  assert.match(checkErrorSignature({ ...signed, from: other.peerId.toString() })!, /does not match/);
  assert.match(checkErrorSignature({ ...errorSigner(other)(h), from: FROM })!, /does not match/);
  assert.equal(checkErrorSignature(h), 'ERROR is not signed');
  assert.equal(checkErrorSignature({ ...signed, signature: undefined }), 'ERROR is not signed');
  assert.match(checkErrorSignature({ ...signed, from: 'not-a-peer-id' })!, /not a valid peer id/);
  assert.match(checkErrorSignature({ ...signed, signature: signed.signature!.toUpperCase() })!, /does not match/);
  assert.match(checkErrorSignature({ ...signed, signature: 'ab'.repeat(64) })!, /does not match/);
  // a replacement that is not {peerId, addrs} cannot be signed and never verifies
  assert.throws(() => errorSigner(hop)({ ...h, replacement: 'hop-c' }), /replacement/);
  assert.match(checkErrorSignature({ ...signed, replacement: { peerId: 3 } })!, /does not match/);
});

test('a draining ERROR signs its replacement and resumeFrom', () => {
  const draining: ErrorHeader = {
    code: 'draining',
    reason: 'leaving',
    peerId: FROM,
    sessionId: 'req-1',
    requestId: 9,
    hop: 1,
    replacement: { peerId: 'hop-c', addrs: ['/ip4/127.0.0.1/tcp/4003'] },
    resumeFrom: 'req-1',
  };
  const signed = errorSigner(hop)(draining);
  assert.equal(checkErrorSignature(signed), undefined);
  assert.match(checkErrorSignature({ ...signed, replacement: { peerId: 'evil', addrs: ['/ip4/10.0.0.1/tcp/1'] } })!, /does not match/);
  assert.match(checkErrorSignature({ ...signed, resumeFrom: 'req-0' })!, /does not match/);
});
