import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ZERO_HASH, type ExecutionCommitment } from '../../../src/accountability/records/eip712.js';
import {
  checkSigned,
  commitmentHash,
  hashTensor,
  receiptHash,
  signCommitment,
  signReceipt,
  signVerdict,
  verifyCommitment,
  verifyReceipt,
  verifyVerdict,
} from '../../../src/accountability/records/receipts.js';
import { DOMAIN, DOMAIN_WITH_CONTRACT, h, testIdentity, VECTOR_RECEIPT, vectorIdentity } from '../fixtures.js';

const { signer: _s, ...unsignedReceipt } = VECTOR_RECEIPT;

test('a signed receipt verifies and recovers to its signer', () => {
  const id = testIdentity(1);
  const s = signReceipt(id, unsignedReceipt, DOMAIN);
  assert.equal(s.record.signer, id.address);
  assert.equal(s.signature.length, 2 + 130);
  assert.ok(verifyReceipt(s, DOMAIN));
  const v = checkSigned('ExecutionReceipt', s, DOMAIN);
  assert.ok(v.ok && v.digest === receiptHash(s.record, DOMAIN));
  // deterministic (RFC 6979)
  assert.equal(signReceipt(id, unsignedReceipt, DOMAIN).signature, s.signature);
});

test('tampering, a foreign domain, a forged signer and a foreign signature all fail', () => {
  const id = testIdentity(1);
  const other = testIdentity(2);
  const s = signReceipt(id, unsignedReceipt, DOMAIN);
  assert.equal(verifyReceipt({ ...s, record: { ...s.record, outputHash: h('other output') } }, DOMAIN), false);
  assert.equal(verifyReceipt({ ...s, record: { ...s.record, computeUs: s.record.computeUs + 1 } }, DOMAIN), false);
  assert.equal(verifyReceipt(s, DOMAIN_WITH_CONTRACT), false);
  assert.equal(verifyReceipt(s, { chainId: 1 }), false);
  // claims another signer: recovered address differs
  const forged = { ...s, record: { ...s.record, signer: other.address } };
  const r = checkSigned('ExecutionReceipt', forged, DOMAIN);
  assert.ok(!r.ok && !r.malformed && /signed by/.test(r.reason));
  // other key's signature over the same record
  const theirs = signReceipt(other, unsignedReceipt, DOMAIN);
  assert.equal(verifyReceipt({ record: s.record, signature: theirs.signature }, DOMAIN), false);
  // malformed inputs never throw from verify
  assert.equal(verifyReceipt({ record: { ...s.record, step: 1.5 }, signature: s.signature }, DOMAIN), false);
  assert.equal(verifyReceipt({ record: s.record, signature: '0x00' as `0x${string}` }, DOMAIN), false);
  assert.equal(verifyReceipt(null as never, DOMAIN), false);
});

test('signing refuses a record that names another signer', () => {
  assert.throws(
    () => signReceipt(testIdentity(1), { ...unsignedReceipt, signer: testIdentity(2).address }, DOMAIN),
    /is not this identity/,
  );
  assert.throws(() => signReceipt(testIdentity(1), { ...unsignedReceipt, layerStart: 9, layerEnd: 3 }, DOMAIN), /layerEnd/);
});

test('commitments and verdicts sign and verify; a receipt cites its commitment', () => {
  const id = testIdentity(3);
  const c: Omit<ExecutionCommitment, 'signer'> = {
    requestId: h('r'),
    sessionId: h('s'),
    step: 0,
    pos: 0,
    nTokens: 12,
    layerStart: 0,
    layerEnd: 3,
    modelId: h('m'),
    profile: 'ort-f32',
    inputHash: h('in'),
    budgetUs: 500000,
  };
  const sc = signCommitment(id, c, DOMAIN);
  assert.ok(verifyCommitment(sc, DOMAIN));
  assert.equal(verifyCommitment({ ...sc, record: { ...sc.record, budgetUs: 1 } }, DOMAIN), false);
  const cHash = commitmentHash(sc.record, DOMAIN);
  const sr = signReceipt(
    id,
    {
      ...c,
      outputHash: h('out'),
      recvUs: 1,
      computeUs: 2,
      sendUs: 3,
      upstreamReceiptHash: ZERO_HASH,
      prevReceiptHash: ZERO_HASH,
      commitmentHash: cHash,
    },
    DOMAIN,
  );
  assert.ok(verifyReceipt(sr, DOMAIN));
  const auditor = testIdentity(4);
  const sv = signVerdict(
    auditor,
    {
      receiptHash: receiptHash(sr.record, DOMAIN),
      auditOutputHash: h('out'),
      profilePair: 'ort-f32|reference/f32',
      distancePpb: 17,
      tolerancePpb: 100000,
      pass: true,
    },
    DOMAIN,
  );
  assert.equal(sv.record.auditor, auditor.address);
  assert.ok(verifyVerdict(sv, DOMAIN));
  assert.equal(verifyVerdict({ ...sv, record: { ...sv.record, pass: false } }, DOMAIN), false);
});

test('hashTensor is SHA-256 over little-endian bytes', () => {
  const t = new Float32Array([1, -2.5, 3e-8, 0]);
  const le = Buffer.alloc(16);
  t.forEach((v, i) => le.writeFloatLE(v, i * 4));
  assert.equal(hashTensor(t), `0x${createHash('sha256').update(le).digest('hex')}`);
  // a view hashes only its own bytes
  const big = new Float32Array([9, 1, -2.5, 3e-8, 0, 9]);
  assert.equal(hashTensor(big.subarray(1, 5)), hashTensor(t));
  assert.notEqual(hashTensor(new Float32Array([1, -2.5, 3e-8, -0])), hashTensor(t)); // -0 differs bitwise
  const u16 = new Uint16Array([0x3c00, 0xc000]);
  assert.equal(
    hashTensor(u16),
    `0x${createHash('sha256')
      .update(Buffer.from([0x00, 0x3c, 0x00, 0xc0]))
      .digest('hex')}`,
  );
  assert.equal(hashTensor(new Float32Array(0)), '0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('sign and verify cost per receipt (measured)', (t) => {
  const id = vectorIdentity();
  const n = 50;
  const recs = Array.from({ length: n }, (_, i) => ({ ...unsignedReceipt, step: i }));
  let t0 = process.hrtime.bigint();
  const signed = recs.map((r) => signReceipt(id, r, DOMAIN));
  const signUs = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  t0 = process.hrtime.bigint();
  for (const s of signed) assert.ok(verifyReceipt(s, DOMAIN));
  const verifyUs = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  t0 = process.hrtime.bigint();
  for (const r of signed) receiptHash(r.record, DOMAIN);
  const hashUs = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  t.diagnostic(`per receipt: EIP-712 digest ${hashUs.toFixed(0)} µs, sign ${signUs.toFixed(0)} µs, verify ${verifyUs.toFixed(0)} µs`);
  assert.ok(signUs < 20000 && verifyUs < 40000, 'signing is absurdly slow');
});
