import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auditRate, auditReceipt, auditSelected } from '../../../src/accountability/checks/audit.js';
import { CustodyError } from '../../../src/accountability/checks/custody.js';
import { outputRows } from '../../../src/accountability/records/eip712.js';
import { hashTensor, receiptHash, signReceipt, verifyVerdict } from '../../../src/accountability/records/receipts.js';
import { DOMAIN, h, receiptBody, testIdentity } from '../fixtures.js';

const worker = testIdentity(30);
const auditor = testIdentity(31);
const dim = 16;

function receiptFor(out: Float32Array | Uint16Array, profile = 'ort-f32') {
  return signReceipt(
    worker,
    receiptBody({ step: 2, pos: 10, nTokens: 3, layerStart: 1, layerEnd: 3, profile, outputHash: hashTensor(out) }),
    DOMAIN,
  );
}
const ref = Float32Array.from({ length: 3 * dim }, (_, i) => Math.sin(i + 1));

test('audit selection is a deterministic function of receipt and beacon, at the requested rate', () => {
  const beacon = h('beacon-1');
  let hits = 0;
  for (let i = 0; i < 4000; i++) if (auditSelected(h(`receipt-${i}`), beacon, 0.1)) hits++;
  assert.ok(hits > 320 && hits < 480, `selected ${hits} of 4000 at rate 0.1`);
  assert.equal(auditSelected(h('x'), beacon, 0.5), auditSelected(h('x'), beacon, 0.5));
  assert.equal(auditSelected(h('x'), beacon, 0), false);
  assert.equal(auditSelected(h('x'), beacon, 1), true);
  assert.throws(() => auditSelected(h('x'), beacon, 2), RangeError);
  assert.equal(auditRate(0), 0.25);
  assert.equal(auditRate(1e6), 0.02);
  assert.ok(auditRate(100) < auditRate(10));
});

test('an honest step passes with a signed verdict; a cheat yields evidence', () => {
  const honest = ref.map((v) => Math.fround(v * (1 + 3e-7)));
  const ok = auditReceipt(auditor, DOMAIN, {
    receipt: receiptFor(honest),
    workerOutput: honest,
    auditOutput: ref,
    auditorProfile: 'reference/f32',
    dim,
  });
  assert.equal(ok.comparison.pass, true);
  assert.equal(ok.evidence, undefined);
  assert.ok(verifyVerdict(ok.verdict, DOMAIN));
  assert.equal(ok.verdict.record.pass, true);
  assert.equal(ok.verdict.record.profilePair, 'ort-f32|reference/f32');
  const lazy = ref.map((v, i) => (i < dim ? v : 0)); // only the first token computed
  const rcpt = receiptFor(lazy);
  const bad = auditReceipt(auditor, DOMAIN, { receipt: rcpt, workerOutput: lazy, auditOutput: ref, auditorProfile: 'reference/f32', dim });
  assert.equal(bad.comparison.pass, false);
  assert.equal(bad.comparison.failingTokens, 2);
  assert.equal(bad.verdict.record.distancePpb, 1e9);
  assert.equal(bad.verdict.record.receiptHash, receiptHash(rcpt.record, DOMAIN));
  assert.equal(bad.evidence?.kind, 'audit');
  assert.ok(verifyVerdict(bad.evidence!.verdicts[0]!, DOMAIN));
});

test('an audit refuses output bytes the worker did not sign', () => {
  const rcpt = receiptFor(ref);
  const other = ref.map((v) => v + 1);
  assert.throws(
    () => auditReceipt(auditor, DOMAIN, { receipt: rcpt, workerOutput: other, auditOutput: ref, auditorProfile: 'reference/f32', dim }),
    (e: unknown) => e instanceof CustodyError && e.code === 'output_mismatch',
  );
  // f16 transport: the receipt hashes the 16-bit words; pass them as workerWire
  const wire = new Uint16Array(ref.length).fill(0x3c00);
  const asF32 = new Float32Array(ref.length).fill(1);
  const r = auditReceipt(auditor, DOMAIN, {
    receipt: receiptFor(wire, 'ort-f32+act-f16'),
    workerOutput: asF32,
    workerWire: wire,
    auditOutput: asF32,
    auditorProfile: 'reference/f32',
    dim,
  });
  assert.equal(r.comparison.key, 'f16|f32');
  assert.equal(r.comparison.pass, true);
});

test('a "+last" receipt (a lastRow step at the last hop) is judged on the last row of the replay', () => {
  const last = ref.subarray(2 * dim);
  const honest = last.map((v) => Math.fround(v * (1 + 3e-7)));
  const ok = auditReceipt(auditor, DOMAIN, {
    receipt: receiptFor(honest, 'ort-f32+last'),
    workerOutput: honest,
    auditOutput: ref,
    auditorProfile: 'reference/f32',
    dim,
  });
  assert.equal(ok.comparison.pass, true);
  assert.equal(ok.comparison.nTokens, 1);
  assert.equal(ok.verdict.record.auditOutputHash, hashTensor(last), 'the verdict names the row it compared');
  // a row that is not the last one's fails
  const first = Float32Array.from(ref.subarray(0, dim));
  const bad = auditReceipt(auditor, DOMAIN, {
    receipt: receiptFor(first, 'ort-f32+last'),
    workerOutput: first,
    auditOutput: ref,
    auditorProfile: 'reference/f32',
    dim,
  });
  assert.equal(bad.comparison.pass, false);
  assert.equal(bad.evidence?.kind, 'audit');
  // "+last" with every row, and every row without it, are malformed
  for (const [out, profile] of [
    [ref, 'ort-f32+last'],
    [honest, 'ort-f32'],
  ] as const)
    assert.throws(
      () =>
        auditReceipt(auditor, DOMAIN, {
          receipt: receiptFor(out, profile),
          workerOutput: out,
          auditOutput: ref,
          auditorProfile: 'reference/f32',
          dim,
        }),
      (e: unknown) => e instanceof CustodyError && e.code === 'malformed',
    );
});

test('outputRows: "+last" as a part of the profile, wherever the transport suffix puts it', () => {
  for (const [profile, rows] of [
    ['reference+last', 1],
    ['llama-q4+last+act-f16', 1],
    ['ort-f32+act-bf16', 7],
    ['reference+lastly', 7],
    ['reference', 7],
  ] as const)
    assert.equal(outputRows({ profile, nTokens: 7 }), rows, profile);
});
