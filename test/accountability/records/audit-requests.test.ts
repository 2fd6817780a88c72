// The audit protocols' records (docs/signatures.md "Audit requests and re-execution receipts"):
// the documented type hashes and test vectors, the fast encoder against viem's, request checks
// (signature, expiry, validity window), and that a re-execution receipt can never stand in for a
// token-path receipt (no equivocation pair, no custody link).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ZERO_HASH,
  encodeType,
  structHash,
  structHashReference,
  typeHash,
  typedDigest,
  typedDigestReference,
  type ExecutionReceipt,
  type Hex,
} from '../../../src/accountability/records/eip712.js';
import {
  MAX_REQUEST_VALIDITY_S,
  checkRequest,
  signAuditRequest,
  signReexecutionReceipt,
  signReexecutionRequest,
} from '../../../src/accountability/records/audit-requests.js';
import { checkSigned, signReceipt } from '../../../src/accountability/records/receipts.js';
import { detectEquivocation, EquivocationDetector } from '../../../src/accountability/checks/equivocation.js';
import { DOMAIN, VECTOR_ADDRESS, VECTOR_RECEIPT, testIdentity, vectorIdentity } from '../fixtures.js';

const rep = (b: string): Hex => `0x${b.repeat(64)}`;
const AUDITOR: Hex = '0x00000000000000000000000000000000000000aa';
const EXECUTOR: Hex = '0x00000000000000000000000000000000000000bb';
/** 2026-01-01T00:00:00Z */
const EXPIRES = 1767225600;
const AUDIT_REQUEST = { auditor: AUDITOR, requestId: rep('1'), sessionId: rep('2'), fromStep: 0, toStep: 3, expiresAt: EXPIRES };
const REEXEC_REQUEST = { executor: EXECUTOR, requestId: rep('1'), sessionId: rep('2'), step: 3, auditedReceiptHash: rep('6'), expiresAt: EXPIRES };
const { signer: _s, ...RECEIPT_FIELDS } = VECTOR_RECEIPT;
const REEXEC_RECEIPT = { ...RECEIPT_FIELDS, prevReceiptHash: ZERO_HASH };

test('type strings and type hashes are the documented ones', () => {
  assert.equal(
    encodeType('AuditRequest'),
    'AuditRequest(address gateway,address auditor,bytes32 requestId,bytes32 sessionId,uint64 fromStep,uint64 toStep,uint64 expiresAt)',
  );
  assert.equal(
    encodeType('ReexecutionRequest'),
    'ReexecutionRequest(address gateway,address executor,bytes32 requestId,bytes32 sessionId,uint64 step,bytes32 auditedReceiptHash,uint64 expiresAt)',
  );
  assert.equal(encodeType('ReexecutionReceipt'), encodeType('ExecutionReceipt').replace(/^ExecutionReceipt/, 'ReexecutionReceipt'));
  assert.equal(typeHash('AuditRequest'), '0x2c7c8f2d91e6f091e256f4df40b67b445c277f74de3bf2308d91d1deee71a69e');
  assert.equal(typeHash('ReexecutionRequest'), '0x6b644135e4c83658ce82a00b310f2d853053780164288c016664fd0575af6847');
  assert.equal(typeHash('ReexecutionReceipt'), '0x68b94947ae17947eaf0482576d60b1b58d70bc35d592bcfbeb2d49d614c4dfdf');
});

test('test vectors: fixed key → struct hash, digest and signature of each record (docs/signatures.md)', () => {
  const id = vectorIdentity();
  const ar = signAuditRequest(id, AUDIT_REQUEST, DOMAIN);
  assert.equal(ar.record.gateway, VECTOR_ADDRESS);
  assert.equal(structHash('AuditRequest', ar.record), '0x83beb21dd26e0534ecc90c6b58b10d0291b37852cc1b32728b0fd30c612fb0ec');
  assert.equal(typedDigest('AuditRequest', ar.record, DOMAIN), '0xfbce21784fb8cd37a687a87a21377a8bdcdf080406fedac1bedfdf88a493f289');
  assert.equal(
    ar.signature,
    '0x1310f3b6fe1b240be2a9ed900e667171edfbf11f1505f9055b9e93d31c10bf3850450ace5cead3ceee786ef7ee3f3ee4055747b01137d431b78dfdb62e8d531b1b',
  );
  const rr = signReexecutionRequest(id, REEXEC_REQUEST, DOMAIN);
  assert.equal(structHash('ReexecutionRequest', rr.record), '0xeb6f671513db3507e1eb85bd75355eca8220b8c3c5fd01c2528fbfe565e16dde');
  assert.equal(typedDigest('ReexecutionRequest', rr.record, DOMAIN), '0xae10bc155807ca305ff35895877f550ea8bd0baa4ab327d272b59b084da099cb');
  assert.equal(
    rr.signature,
    '0x62cfd28f1be8d001763908161af54b08e56b920200010e376be007b4e7852eac353df736091e34e4b148fa0e3c78e8ed80e7cbef3dd321c0282655f7bba967311c',
  );
  const rx = signReexecutionReceipt(id, REEXEC_RECEIPT, DOMAIN);
  assert.equal(structHash('ReexecutionReceipt', rx.record), '0x2da985117fb86895a1d3709c12f7b5e68c4bc4467d01cbcf7997493bc6efb915');
  assert.equal(typedDigest('ReexecutionReceipt', rx.record, DOMAIN), '0xaf1dd6402bc8ea4dd5d90c8171d6ea8d25a698c19911a68d09fb64c2659b1018');
  assert.equal(
    rx.signature,
    '0xfe0b1f262a69e2f9026b1036fff5885789cc43a0928be1cbda44fd5cc11ef79215bcd6f9b54cc567bf6b0309f0808b625d3618fabd3c2f0da47df539799c15c31b',
  );
  // the fast encoder agrees with viem's for the new types
  for (const [p, r] of [
    ['AuditRequest', ar.record],
    ['ReexecutionRequest', rr.record],
    ['ReexecutionReceipt', rx.record],
  ] as const) {
    assert.equal(structHash(p, r as never), structHashReference(p, r as never));
    assert.equal(typedDigest(p, r as never, DOMAIN), typedDigestReference(p, r as never, DOMAIN));
  }
});

test('checkRequest: signature by the named gateway, not expired, not valid for longer than the limit', () => {
  const g = testIdentity(1);
  const now = 1_800_000_000;
  const ok = signAuditRequest(g, { ...AUDIT_REQUEST, expiresAt: now + 60 }, DOMAIN);
  const v = checkRequest('AuditRequest', ok, DOMAIN, now);
  assert.ok(v.ok);
  assert.equal(v.record.gateway, g.address);
  const expired = signAuditRequest(g, { ...AUDIT_REQUEST, expiresAt: now }, DOMAIN);
  assert.match(String((checkRequest('AuditRequest', expired, DOMAIN, now) as { reason: string }).reason), /expired/);
  const long = signAuditRequest(g, { ...AUDIT_REQUEST, expiresAt: now + MAX_REQUEST_VALIDITY_S + 1 }, DOMAIN);
  assert.match(String((checkRequest('AuditRequest', long, DOMAIN, now) as { reason: string }).reason), /valid for more than/);
  // someone else's signature over a record naming g as gateway
  const forged = { record: ok.record, signature: signAuditRequest(testIdentity(2), { ...AUDIT_REQUEST, expiresAt: now + 60 }, DOMAIN).signature };
  assert.equal(checkRequest('AuditRequest', forged, DOMAIN, now).ok, false);
  // the two request types do not stand in for each other, nor does a missing request pass
  const rr = signReexecutionRequest(g, { ...REEXEC_REQUEST, expiresAt: now + 60 }, DOMAIN);
  assert.equal(checkRequest('AuditRequest', rr, DOMAIN, now).ok, false);
  assert.equal(checkRequest('ReexecutionRequest', ok, DOMAIN, now).ok, false);
  assert.match(String((checkRequest('AuditRequest', undefined, DOMAIN, now) as { reason: string }).reason), /no signed AuditRequest/);
});

test('a re-execution receipt never verifies as a token-path receipt, so it never forms equivocation evidence', () => {
  const node = testIdentity(3);
  const fields: Omit<ExecutionReceipt, 'signer'> = { ...REEXEC_RECEIPT };
  const tokenPath = signReceipt(node, fields, DOMAIN);
  // the same slot, another output: as a re-execution receipt
  const reexec = signReexecutionReceipt(node, { ...fields, outputHash: rep('9') }, DOMAIN);
  assert.ok(checkSigned('ReexecutionReceipt', reexec, DOMAIN).ok);
  assert.equal(checkSigned('ExecutionReceipt', reexec, DOMAIN).ok, false);
  assert.equal(detectEquivocation(tokenPath, reexec, DOMAIN), null);
  const other = signReexecutionReceipt(node, { ...fields, outputHash: rep('8') }, DOMAIN);
  assert.equal(detectEquivocation(reexec, other, DOMAIN), null);
  const d = new EquivocationDetector(DOMAIN);
  for (const r of [tokenPath, reexec, other]) assert.equal(d.observe(r), null);
});
