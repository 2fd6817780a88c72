import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReceiptChain, checkHandoff } from '../../../src/accountability/checks/custody.js';
import { EquivocationDetector } from '../../../src/accountability/checks/equivocation.js';
import { ZERO_HASH } from '../../../src/accountability/records/eip712.js';
import { commitmentHash, receiptHash } from '../../../src/accountability/records/receipts.js';
import { ReceiptSigner, SignerError, type ReceiptFields } from '../../../src/accountability/records/signer.js';
import { DOMAIN, h, testIdentity } from '../fixtures.js';

const node = testIdentity(40);
const fields = (step: number, out = `out-${step}`): ReceiptFields => ({
  requestId: h('req'),
  sessionId: h('sess'),
  step,
  pos: step,
  nTokens: 1,
  layerStart: 0,
  layerEnd: 2,
  modelId: h('m'),
  profile: 'reference/f32',
  inputHash: h(`in-${step}`),
  budgetUs: 1000,
  outputHash: h(out),
  recvUs: 1,
  computeUs: 2,
  sendUs: 3,
  upstreamReceiptHash: ZERO_HASH,
});

test("a node's receipts form a valid chain without the node tracking hashes", () => {
  const signer = new ReceiptSigner(node, DOMAIN);
  const chain = new ReceiptChain(node.address, h('req'), h('sess'), DOMAIN);
  const det = new EquivocationDetector(DOMAIN);
  for (const step of [0, 1, 2, 4, 7]) {
    const r = signer.receipt(fields(step));
    chain.append(r);
    assert.equal(det.observe(r), null);
  }
  assert.equal(signer.head(h('req'), h('sess')), chain.head);
  // a commitment, then the receipt citing it
  const c = signer.commit({
    requestId: h('req'),
    sessionId: h('sess'),
    step: 8,
    pos: 8,
    nTokens: 1,
    layerStart: 0,
    layerEnd: 2,
    modelId: h('m'),
    profile: 'reference/f32',
    inputHash: h('in-8'),
    budgetUs: 1000,
  });
  const r = signer.receipt({ ...fields(8), commitmentHash: commitmentHash(c.record, DOMAIN) });
  chain.append(r);
  assert.equal(r.record.prevReceiptHash !== ZERO_HASH, true);
  assert.equal(receiptHash(r.record, DOMAIN), signer.head(h('req'), h('sess')));
});

test('a retransmission returns the same receipt; a conflicting or older step is refused', () => {
  const signer = new ReceiptSigner(node, DOMAIN);
  const a = signer.receipt(fields(0));
  assert.equal(signer.receipt({ ...fields(0), computeUs: 99 }), a); // same slot, same bytes: the signed one
  assert.throws(
    () => signer.receipt(fields(0, 'another output')),
    (e: unknown) => e instanceof SignerError && e.code === 'slot_conflict',
  );
  signer.receipt(fields(1));
  assert.throws(
    () => signer.receipt(fields(0)),
    (e: unknown) => e instanceof SignerError && e.code === 'step_order',
  );
  signer.closeSession(h('req'), h('sess'));
  assert.equal(signer.head(h('req'), h('sess')), ZERO_HASH);
});

test('two signers in a route link through upstreamReceiptHash', () => {
  const up = new ReceiptSigner(testIdentity(41), DOMAIN);
  const down = new ReceiptSigner(testIdentity(42), DOMAIN);
  const r1 = up.receipt(fields(0));
  const r2 = down.receipt({
    ...fields(0),
    layerStart: 2,
    layerEnd: 5,
    inputHash: r1.record.outputHash,
    upstreamReceiptHash: receiptHash(r1.record, DOMAIN),
  });
  checkHandoff(r1, r2, DOMAIN);
});
