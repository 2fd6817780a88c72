import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ZERO_HASH, type Hex } from '../../src/control/eip712.js';
import {
  checkCommitment,
  checkHandoff,
  checkRoute,
  CustodyError,
  CustodyLog,
  ReceiptChain,
  type CustodyCode,
} from '../../src/control/custody.js';
import { commitmentHash, receiptHash, signCommitment, signReceipt, type SignedReceipt } from '../../src/control/receipts.js';
import { DOMAIN, h, routeStep, testIdentity } from './fixtures.js';

const A = testIdentity(10);
const B = testIdentity(11);
const C = testIdentity(12);
const HOPS = [
  { id: A, start: 0, end: 2 },
  { id: B, start: 2, end: 4 },
  { id: C, start: 4, end: 5 },
];

function throwsCode(fn: () => unknown, code: CustodyCode, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CustodyError, `expected CustodyError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** re-sign a receipt with changed fields (a misbehaving but validly signing node) */
function resign(s: SignedReceipt, id = A, patch: Partial<SignedReceipt['record']> = {}): SignedReceipt {
  const { signer: _s, ...rest } = s.record;
  return signReceipt(id, { ...rest, ...patch }, DOMAIN);
}

test('an honest route passes handoff and end-to-end checks', () => {
  const step = routeStep(HOPS, 0);
  checkRoute(step, DOMAIN, { sentHash: h('gateway-input-0'), receivedHash: step[2]!.record.outputHash });
  checkHandoff(step[0]!, step[1]!, DOMAIN);
});

test('a hop that signs an input it did not receive is pinned at that link', () => {
  const step = routeStep(HOPS, 0);
  const bad = resign(step[1]!, B, { inputHash: h('something else') });
  throwsCode(() => checkHandoff(step[0]!, bad, DOMAIN), 'input_mismatch', new RegExp(B.address));
  throwsCode(() => checkRoute([step[0]!, bad, step[2]!], DOMAIN), 'input_mismatch');
  // gateway's view of the ends
  throwsCode(() => checkRoute(step, DOMAIN, { sentHash: h('x') }), 'input_mismatch', /gateway sent/);
  throwsCode(() => checkRoute(step, DOMAIN, { receivedHash: h('y') }), 'input_mismatch', /gateway received/);
});

test('handoff rejects wrong upstream link, layer gaps, other slots and other sessions', () => {
  const step = routeStep(HOPS, 0);
  throwsCode(() => checkHandoff(step[0]!, resign(step[1]!, B, { upstreamReceiptHash: h('z') }), DOMAIN), 'upstream_link');
  throwsCode(() => checkHandoff(step[0]!, resign(step[1]!, B, { layerStart: 3 }), DOMAIN), 'layer_gap');
  throwsCode(() => checkHandoff(step[0]!, resign(step[1]!, B, { step: 1 }), DOMAIN), 'slot_mismatch');
  throwsCode(() => checkHandoff(step[0]!, resign(step[1]!, B, { sessionId: h('session-2') }), DOMAIN), 'cross_session');
  throwsCode(() => checkHandoff(step[0]!, { ...step[1]!, record: { ...step[1]!.record, computeUs: 1 } }, DOMAIN), 'bad_signature');
  throwsCode(() => checkHandoff(step[0]!, { ...step[1]!, record: { ...step[1]!.record, step: -1 } }, DOMAIN), 'malformed');
  throwsCode(() => checkRoute([], DOMAIN), 'malformed');
});

test('a downstream commitment can be checked against the upstream receipt before it finishes', () => {
  const step = routeStep(HOPS, 0);
  const r = step[1]!.record;
  const c = signCommitment(
    B,
    {
      requestId: r.requestId,
      sessionId: r.sessionId,
      step: r.step,
      pos: r.pos,
      nTokens: r.nTokens,
      layerStart: r.layerStart,
      layerEnd: r.layerEnd,
      modelId: r.modelId,
      profile: r.profile,
      inputHash: r.inputHash,
      budgetUs: r.budgetUs,
    },
    DOMAIN,
  );
  checkHandoff(step[0]!, c, DOMAIN);
  // receipt ↔ commitment
  const withLink = resign(step[1]!, B, { commitmentHash: commitmentHash(c.record, DOMAIN) });
  checkCommitment(c, withLink, DOMAIN);
  throwsCode(() => checkCommitment(c, step[1]!, DOMAIN), 'commitment_mismatch', /cites commitment/);
  throwsCode(() => checkCommitment(c, resign(withLink, B, { budgetUs: 1 }), DOMAIN), 'commitment_mismatch', /budgetUs/);
});

test('receipt chain: links, strictly increasing steps, replay and cross-session are refused', () => {
  const prev = new Map<string, Hex>();
  const steps = [0, 1, 2, 5].map((s) => routeStep(HOPS, s, { prev })[1]!); // B's receipts
  const chain = new ReceiptChain(B.address, steps[0]!.record.requestId, steps[0]!.record.sessionId, DOMAIN);
  for (const s of steps) chain.append(s);
  assert.equal(chain.length, 4);
  assert.equal(chain.head, receiptHash(steps[3]!.record, DOMAIN));
  throwsCode(() => chain.append(steps[3]!), 'replay', /already appended/);
  // same step again with a new (validly linked) receipt
  throwsCode(() => chain.append(resign(steps[3]!, B, { prevReceiptHash: chain.head, computeUs: 7 })), 'replay', /signed twice/);
  throwsCode(() => chain.append(resign(steps[3]!, B, { prevReceiptHash: chain.head, step: 4 })), 'step_order');
  throwsCode(() => chain.append(resign(steps[3]!, B, { step: 6 })), 'broken_chain'); // prev still points at step 2
  throwsCode(() => chain.append(resign(steps[3]!, B, { step: 6, prevReceiptHash: chain.head, sessionId: h('other') })), 'cross_session');
  throwsCode(() => chain.append(routeStep(HOPS, 6)[0]!), 'cross_session'); // A's receipt into B's chain
  throwsCode(() => chain.append({ ...steps[0]!, signature: steps[1]!.signature }), 'bad_signature');
  // a chain that starts anywhere but ZERO_HASH is broken
  const fresh = new ReceiptChain(B.address, steps[0]!.record.requestId, steps[0]!.record.sessionId, DOMAIN);
  throwsCode(() => fresh.append(steps[1]!), 'broken_chain');
  assert.equal(steps[0]!.record.prevReceiptHash, ZERO_HASH);
});

test('CustodyLog keeps one chain per signer and session', () => {
  const log = new CustodyLog(DOMAIN);
  const prev = new Map<string, Hex>();
  for (let s = 0; s < 4; s++) for (const r of routeStep(HOPS, s, { prev })) log.append(r);
  const other = new Map<string, Hex>();
  for (const r of routeStep(HOPS, 0, { prev: other, sessionId: h('session-2') })) log.append(r);
  assert.equal(log.chain(A.address, h('request-1'), h('session-1'))!.length, 4);
  assert.equal(log.chain(C.address, h('request-1'), h('session-2'))!.length, 1);
  throwsCode(() => log.append(routeStep(HOPS, 4, { prev: new Map() })[0]!), 'broken_chain');
  throwsCode(() => log.append({ record: {} as never, signature: '0x' }), 'malformed');
  log.closeSession(h('request-1'), h('session-1'));
  assert.equal(log.chain(A.address, h('request-1'), h('session-1')), undefined);
});
