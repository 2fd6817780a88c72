// The direct EIP-712 encoder (eip712.ts) must stay byte-identical to viem's generic one for
// every record type, and the known-key signature check must agree with plain recovery.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { generateIdentity } from '../../../src/identity/identity.js';
import { structHash, structHashReference, typedDigest, typedDigestReference, type ExecutionReceipt, type Hex } from '../../../src/accountability/records/eip712.js';
import { checkSigned, signReceipt, signVerdict } from '../../../src/accountability/records/receipts.js';

const h = (s: string): Hex => `0x${createHash('sha256').update(s).digest('hex')}`;
const DOMAINS = [{ chainId: 31337 }, { chainId: 1n, verifyingContract: '0x00000000000000000000000000000000DeaDBeef' as Hex }];

test('direct EIP-712 digests equal viem hashTypedData for random receipts and verdicts', () => {
  const id = generateIdentity();
  for (let k = 0; k < 40; k++) {
    const big = (bits: number) => Math.floor(Math.random() * 2 ** bits);
    const rec: ExecutionReceipt = {
      requestId: h(`r${k}`),
      sessionId: h(`s${k}`),
      step: k % 3 === 0 ? Number.MAX_SAFE_INTEGER - k : big(40),
      pos: k % 5 === 0 ? 2 ** 32 - 1 : big(20),
      nTokens: 1 + big(10),
      layerStart: k,
      layerEnd: k + big(8),
      modelId: h(`m${k}`).toUpperCase().replace('0X', '0x') as Hex,
      profile: k % 2 ? 'reference' : `ort-f32/act-f16 ✓ ${k}`,
      inputHash: h(`i${k}`),
      budgetUs: big(50),
      signer: id.address,
      outputHash: h(`o${k}`),
      recvUs: 0,
      computeUs: big(30),
      sendUs: big(12),
      upstreamReceiptHash: h(`u${k}`),
      prevReceiptHash: `0x${'00'.repeat(32)}`,
      commitmentHash: h(`c${k}`),
    };
    assert.equal(structHash('ExecutionReceipt', rec), structHashReference('ExecutionReceipt', rec));
    for (const d of DOMAINS) assert.equal(typedDigest('ExecutionReceipt', rec, d), typedDigestReference('ExecutionReceipt', rec, d));
    const v = signVerdict(id, { receiptHash: rec.outputHash, auditOutputHash: rec.inputHash, profilePair: 'a|b', distancePpb: big(30), tolerancePpb: 7, pass: k % 2 === 0 }, DOMAINS[0]!);
    assert.equal(typedDigest('AuditVerdict', v.record, DOMAINS[1]!), typedDigestReference('AuditVerdict', v.record, DOMAINS[1]!));
  }
  assert.throws(() => typedDigest('ExecutionReceipt', { pos: 2 ** 32 } as unknown as ExecutionReceipt, DOMAINS[0]!));
});

test('the known-key check accepts exactly what recovery accepts', () => {
  const a = generateIdentity();
  const b = generateIdentity();
  const d = DOMAINS[0]!;
  const base = (step: number) => ({
    requestId: h('r'), sessionId: h('s'), step, pos: step, nTokens: 1, layerStart: 0, layerEnd: 2, modelId: h('m'), profile: 'reference',
    inputHash: h(`i${step}`), budgetUs: 0, outputHash: h(`o${step}`), recvUs: 0, computeUs: 0, sendUs: 0,
    upstreamReceiptHash: h('u'), prevReceiptHash: h('p'), commitmentHash: h('c'),
  });
  // first sights go through recovery, later ones through the cached key (and its table)
  for (let step = 0; step < 4; step++) {
    const s = signReceipt(a, base(step), d);
    assert.equal(checkSigned('ExecutionReceipt', s, d).ok, true);
    const sig = s.signature;
    const flipV = `${sig.slice(0, 130)}${sig.endsWith('1b') ? '1c' : '1b'}`;
    assert.equal(checkSigned('ExecutionReceipt', { ...s, signature: flipV }, d).ok, false, 'wrong recovery bit');
    const badR = `0x${'11'.repeat(32)}${sig.slice(66)}`;
    assert.equal(checkSigned('ExecutionReceipt', { ...s, signature: badR }, d).ok, false, 'bad r');
    const other = { ...s, record: { ...s.record, step: step + 100 } };
    assert.equal(checkSigned('ExecutionReceipt', other, d).ok, false, 'tampered record');
    const byB = signReceipt(b, base(step), d);
    const r = checkSigned('ExecutionReceipt', { record: { ...byB.record, signer: a.address }, signature: byB.signature }, d);
    assert.equal(r.ok, false);
    assert.match((r as { reason: string }).reason, /signed by 0x[0-9a-fA-F]{40}, claims/);
  }
});
