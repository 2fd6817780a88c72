import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  COMMITMENT_FIELDS,
  ZERO_HASH,
  structHash,
  typedDigest,
  typedDigestReference,
  type ExecutionCommitment,
  type Hex,
} from '../../../src/accountability/records/eip712.js';
import {
  checkCommitment,
  checkHandoff,
  checkRoute,
  CustodyError,
  CustodyLog,
  ReceiptChain,
  type CustodyCode,
} from '../../../src/accountability/checks/custody.js';
import {
  commitmentHash,
  receiptHash,
  signCommitment,
  signDigest,
  signReceipt,
  type SignedCommitment,
  type SignedReceipt,
} from '../../../src/accountability/records/receipts.js';
import { DOMAIN, DOMAIN_WITH_CONTRACT, VECTOR_ADDRESS, VECTOR_RECEIPT, h, routeStep, testIdentity, vectorIdentity } from '../fixtures.js';

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
  throwsCode(() => checkCommitment(c, step[1]!, DOMAIN), 'commitment_mismatch', /cites no commitment/);
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

// --- commitments (signed before compute) against the receipts that cite them ---

type Committed = Omit<ExecutionCommitment, 'signer'>;
const committedOf = (r: SignedReceipt['record']): Committed => {
  const out: Record<string, unknown> = {};
  for (const f of COMMITMENT_FIELDS) if (f.name !== 'signer') out[f.name] = r[f.name];
  return out as Committed;
};

/** B's commitment for its hop of step 0, and B's receipt citing it */
function committedPair(): { c: SignedCommitment; r: SignedReceipt } {
  const step = routeStep(HOPS, 0);
  const c = signCommitment(B, committedOf(step[1]!.record), DOMAIN);
  return { c, r: resign(step[1]!, B, { commitmentHash: commitmentHash(c.record, DOMAIN) }) };
}

const tampered = (v: unknown): unknown =>
  typeof v === 'number' ? v + 1 : typeof v === 'string' && v.startsWith('0x') ? h(`tampered ${v}`) : `${String(v)}+x`;

test('checkCommitment: a commitment and the receipt citing it pass', () => {
  const { c, r } = committedPair();
  checkCommitment(c, r, DOMAIN);
  checkCommitment(JSON.parse(JSON.stringify(c)), r, DOMAIN); // as it arrives in an audit reply
  // hex case does not matter
  checkCommitment(c, resign(r, B, { commitmentHash: r.record.commitmentHash.toUpperCase().replace('0X', '0x') as Hex }), DOMAIN);
});

test('checkCommitment: a receipt that differs from its commitment in any committed field is refused', () => {
  const { c, r } = committedPair();
  for (const f of COMMITMENT_FIELDS) {
    if (f.name === 'signer') continue;
    const bad = resign(r, B, { [f.name]: tampered(r.record[f.name]) }); // still cites c
    throwsCode(() => checkCommitment(c, bad, DOMAIN), 'commitment_mismatch', new RegExp(`receipt ${f.name} .* committed ${f.name}`));
  }
  // the commitment side edited after signing: its signature no longer holds
  for (const f of COMMITMENT_FIELDS) {
    const edited = { ...c, record: { ...c.record, [f.name]: f.name === 'signer' ? C.address : tampered(c.record[f.name]) } };
    throwsCode(() => checkCommitment(edited, r, DOMAIN), 'bad_signature', /commitment/);
  }
});

test('checkCommitment: wrong signer, forged signature, malformed input, other or no commitment cited', () => {
  const { c, r } = committedPair();
  // C signs the same commitment; B's receipt cites C's: valid signatures, wrong pairing
  const byC = signCommitment(C, committedOf(r.record), DOMAIN);
  throwsCode(
    () => checkCommitment(byC, resign(r, B, { commitmentHash: commitmentHash(byC.record, DOMAIN) }), DOMAIN),
    'commitment_mismatch',
    new RegExp(`signed by ${C.address}`),
  );
  // a commitment claiming B but signed by C
  const forgedB = { record: c.record, signature: signDigest(typedDigest('ExecutionCommitment', c.record, DOMAIN), C.secret) };
  throwsCode(() => checkCommitment(forgedB, r, DOMAIN), 'bad_signature', new RegExp(C.address));
  const flipped = {
    record: c.record,
    signature: `${c.signature.slice(0, 10)}${c.signature[10] === 'a' ? 'b' : 'a'}${c.signature.slice(11)}`,
  };
  throwsCode(() => checkCommitment(flipped, r, DOMAIN), 'bad_signature', /commitment/);
  // malformed
  throwsCode(() => checkCommitment(undefined, r, DOMAIN), 'malformed', /missing signature/);
  throwsCode(() => checkCommitment('0x00', r, DOMAIN), 'malformed');
  throwsCode(() => checkCommitment({ record: { ...c.record, step: -1 }, signature: c.signature }, r, DOMAIN), 'malformed', /step/);
  throwsCode(
    () => checkCommitment({ record: { ...c.record, outputHash: h('o') }, signature: c.signature }, r, DOMAIN),
    'malformed',
    /unknown field/,
  );
  throwsCode(() => checkCommitment({ record: c.record, signature: '0x1234' }, r, DOMAIN), 'bad_signature', /65 bytes/);
  // a commitment signed under another domain does not verify here
  throwsCode(() => checkCommitment(signCommitment(B, committedOf(r.record), DOMAIN_WITH_CONTRACT), r, DOMAIN), 'bad_signature');
  // the receipt points at another commitment of B (same slot, other budget) / at none
  const other = signCommitment(B, { ...committedOf(r.record), budgetUs: 5 }, DOMAIN);
  throwsCode(
    () => checkCommitment(c, resign(r, B, { commitmentHash: commitmentHash(other.record, DOMAIN) }), DOMAIN),
    'commitment_mismatch',
    /cites commitment .* shown is/,
  );
  throwsCode(() => checkCommitment(c, resign(r, B, { commitmentHash: ZERO_HASH }), DOMAIN), 'commitment_mismatch', /cites no commitment/);
  // the receipt itself must be valid
  throwsCode(() => checkCommitment(c, { ...r, record: { ...r.record, computeUs: 1 } }, DOMAIN), 'bad_signature');
  // blame is on the receipt's signer (the node that showed the pair)
  assert.throws(
    () => checkCommitment(c, resign(r, B, { commitmentHash: ZERO_HASH }), DOMAIN),
    (e: unknown) => e instanceof CustodyError && e.blame === B.address,
  );
});

// Values printed in docs/signatures.md ("Commitment" test vector).
test("commitment test vector: fixed key, the vector receipt's committed fields → digest, signature; receipt citing it", () => {
  const id = vectorIdentity();
  const c: ExecutionCommitment = { ...committedOf(VECTOR_RECEIPT), signer: VECTOR_ADDRESS };
  assert.equal(structHash('ExecutionCommitment', c), '0x17b14ef2131ef0d480101438bd89cdf0c52d4d93d0b9b2841714a57e0f15af96');
  const digest = typedDigest('ExecutionCommitment', c, DOMAIN);
  assert.equal(digest, '0x32c62fb8af4efd77e250141a169b313c7b33a9175b2f20bab1737f994325b89f');
  assert.equal(typedDigestReference('ExecutionCommitment', c, DOMAIN), digest); // viem agrees
  const sc = signCommitment(id, c, DOMAIN);
  assert.equal(
    sc.signature,
    '0x84a6d9b5f21cce082c34a26de1ba7fd1f0fe17238849fc9b464697e6e4637f877edc5f137a461cd989c0b71c28eebb55d9aa90c683829dd3a8608e286df4cec91b',
  );
  assert.equal(
    typedDigest('ExecutionCommitment', c, DOMAIN_WITH_CONTRACT),
    '0x834b1838596939b2c04f2d6d5c1e45578d29ed4c29de4b646944b4f52a4e562f',
  );
  assert.equal(
    signCommitment(id, c, DOMAIN_WITH_CONTRACT).signature,
    '0xe69992077d07f20b43f8742b1b83152b326aa22fd14240be57939853ef6308b46b75e088188a6ff42e9e229feca78eb501af84f381fb3314db61e06d86ce8e371b',
  );
  const r = signReceipt(id, { ...VECTOR_RECEIPT, commitmentHash: digest }, DOMAIN);
  assert.equal(receiptHash(r.record, DOMAIN), '0xd37e5993a36d50f9a8104df0f7ce64319c0165d7c2845ec4bd0810e04e2c7533');
  assert.equal(
    r.signature,
    '0x46e248211b88bc374806b345b6c715692ec7a121af6c0acf9b43a980aace00d96e7614c1dafef45f23c38818b6092c57a25b652cde38fda096f7f856f2218b601b',
  );
  checkCommitment(sc, r, DOMAIN);
});
