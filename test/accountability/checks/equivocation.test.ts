import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectEquivocation, EquivocationDetector, verifyEquivocationEvidence } from '../../../src/accountability/checks/equivocation.js';
import { EvidenceQueue, type Evidence } from '../../../src/accountability/records/evidence.js';
import { signReceipt, type SignedReceipt } from '../../../src/accountability/records/receipts.js';
import { DOMAIN, h, routeStep, testIdentity } from '../fixtures.js';

const A = testIdentity(20);
const B = testIdentity(21);
const HOPS = [
  { id: A, start: 0, end: 3 },
  { id: B, start: 3, end: 5 },
];
function resign(s: SignedReceipt, id = A, patch: Partial<SignedReceipt['record']> = {}): SignedReceipt {
  const { signer: _s, ...rest } = s.record;
  return signReceipt(id, { ...rest, ...patch }, DOMAIN);
}

test('two valid receipts for one slot with different outputs are evidence', () => {
  const [a] = routeStep(HOPS, 4);
  const b = resign(a!, A, { outputHash: h('a different output') });
  const ev = detectEquivocation(a!, b, DOMAIN);
  assert.ok(ev);
  assert.equal(ev.signer, A.address);
  assert.equal(ev.sameInput, true);
  assert.deepEqual(ev.slot, { requestId: a!.record.requestId, sessionId: a!.record.sessionId, step: 4, layerStart: 0, layerEnd: 3 });
  assert.ok(verifyEquivocationEvidence(ev, DOMAIN));
  // tampered evidence does not verify
  assert.equal(verifyEquivocationEvidence({ ...ev, b: { ...ev.b, record: { ...ev.b.record, outputHash: h('forged') } } }, DOMAIN), false);
  assert.equal(verifyEquivocationEvidence({ ...ev, signer: B.address }, DOMAIN), false);
});

test('no evidence for the same output, other slots, other signers or invalid signatures', () => {
  const [a] = routeStep(HOPS, 4);
  assert.equal(detectEquivocation(a!, resign(a!, A, { computeUs: 99 }), DOMAIN), null); // honest re-send, new timings
  assert.equal(detectEquivocation(a!, resign(a!, A, { step: 5, outputHash: h('o') }), DOMAIN), null);
  assert.equal(detectEquivocation(a!, resign(a!, A, { layerEnd: 4, outputHash: h('o') }), DOMAIN), null);
  assert.equal(detectEquivocation(a!, resign(a!, A, { sessionId: h('re-route'), outputHash: h('o') }), DOMAIN), null);
  assert.equal(detectEquivocation(a!, resign(a!, B, { outputHash: h('o') }), DOMAIN), null);
  // someone else forging A's second receipt cannot frame A
  const framed = { record: { ...a!.record, outputHash: h('o') }, signature: a!.signature };
  assert.equal(detectEquivocation(a!, framed, DOMAIN), null);
});

test('detector remembers first receipts per slot, is bounded, and feeds the evidence queue', async () => {
  const queue = new EvidenceQueue<Evidence>(16);
  const got: Evidence[] = [];
  queue.start((e) => {
    got.push(e);
  });
  const det = new EquivocationDetector(DOMAIN, { maxSlots: 8, onEvidence: (e) => queue.enqueue(e) });
  const steps = Array.from({ length: 10 }, (_, i) => routeStep(HOPS, i)[0]!);
  for (const s of steps) assert.equal(det.observe(s), null);
  assert.equal(det.size, 8); // steps 0 and 1 forgotten
  assert.equal(det.observe(steps[9]!), null); // the same receipt again
  assert.ok(det.observe(resign(steps[9]!, A, { outputHash: h('lie'), inputHash: h('other input') })));
  assert.equal(det.observe(resign(steps[0]!, A, { outputHash: h('lie') })), null); // slot forgotten: now first
  assert.equal(det.observe({ ...steps[5]!, record: { ...steps[5]!.record, outputHash: h('x') } }), null); // bad signature ignored
  await queue.idle();
  assert.equal(got.length, 1);
  assert.equal(got[0]!.kind, 'equivocation');
  assert.equal((got[0] as { sameInput: boolean }).sameInput, false);
  assert.equal(det.evidenceCount, 1);
  det.forgetRequest(h('request-1'));
  assert.equal(det.size, 0);
  await queue.stop();
});
