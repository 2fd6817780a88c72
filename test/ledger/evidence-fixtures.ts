// Real evidence for ledger tests, produced by odsi's own signer and checks: receipts signed with
// signReceipt (as NodeStamper's ReceiptSigner does), equivocation found by detectEquivocation,
// computation faults judged by auditReceipt (the auditor's signed verdict).
import { ZERO_HASH, type OdsiDomain } from '../../src/accountability/records/eip712.js';
import { hashTensor, receiptHash, signReceipt, type SignedReceipt, type SignedVerdict } from '../../src/accountability/records/receipts.js';
import { detectEquivocation } from '../../src/accountability/checks/equivocation.js';
import { auditReceipt } from '../../src/accountability/checks/audit.js';
import type { AuditEvidence, CustodyEvidence, EquivocationEvidence } from '../../src/accountability/records/evidence.js';
import type { Identity } from '../../src/identity/identity.js';
import { h } from '../accountability/fixtures.js';

const DIM = 8;

/** One receipt of `id` for layers [start, end) of step `step` with a given input/output. */
export function receiptOf(
  id: Identity,
  domain: OdsiDomain,
  o: { step: number; start: number; end: number; input: `0x${string}`; output: `0x${string}`; upstream?: `0x${string}`; session?: string },
): SignedReceipt {
  return signReceipt(
    id,
    {
      requestId: h('ledger-request'),
      sessionId: h(o.session ?? 'ledger-session'),
      step: o.step,
      pos: o.step,
      nTokens: 1,
      layerStart: o.start,
      layerEnd: o.end,
      modelId: h('model'),
      profile: 'reference/f32',
      inputHash: o.input,
      budgetUs: 100_000,
      outputHash: o.output,
      recvUs: 10,
      computeUs: 1000,
      sendUs: 10,
      upstreamReceiptHash: o.upstream ?? ZERO_HASH,
      prevReceiptHash: ZERO_HASH,
      commitmentHash: ZERO_HASH,
    },
    domain,
  );
}

/** `id` signs two different outputs for one slot (step `step`, layers 0..2). */
export function equivocation(id: Identity, domain: OdsiDomain, step = 1, tag = 'x'): EquivocationEvidence {
  const a = receiptOf(id, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`out-a-${step}-${tag}`) });
  const b = receiptOf(id, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`out-b-${step}-${tag}`) });
  const ev = detectEquivocation(a, b, domain, 1);
  if (!ev) throw new Error('fixture: not an equivocation');
  return ev;
}

/** A third receipt for the same slot as `equivocation(id, domain, step)`: another pair, same offence. */
export function equivocationOtherPair(id: Identity, domain: OdsiDomain, step = 1): EquivocationEvidence {
  const a = receiptOf(id, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`out-a-${step}-x`) });
  const c = receiptOf(id, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`out-c-${step}`) });
  const ev = detectEquivocation(a, c, domain, 1);
  if (!ev) throw new Error('fixture: not an equivocation');
  return ev;
}

/** `down` names `up`'s receipt as its upstream but signs an input `up` never sent: forged custody. */
export function forgedCustody(up: Identity, down: Identity, domain: OdsiDomain, step = 1): CustodyEvidence {
  const u = receiptOf(up, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`mid-${step}`) });
  const d = receiptOf(down, domain, { step, start: 2, end: 4, input: h(`forged-${step}`), output: h(`out-${step}`), upstream: receiptHash(u.record, domain) });
  return { kind: 'custody', code: 'input_mismatch', blame: down.address, reason: 'input differs from the upstream output it names', receipts: [u, d], detectedAt: 1 };
}

/** An honest handoff up → down (no fault), as custody "evidence". */
export function honestHandoff(up: Identity, down: Identity, domain: OdsiDomain, step = 1): CustodyEvidence {
  const u = receiptOf(up, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: h(`mid-${step}`) });
  const d = receiptOf(down, domain, { step, start: 2, end: 4, input: h(`mid-${step}`), output: h(`out-${step}`), upstream: receiptHash(u.record, domain) });
  return { kind: 'custody', code: 'input_mismatch', reason: 'not really', receipts: [u, d], detectedAt: 1 };
}

function workerStep(worker: Identity, domain: OdsiDomain, step: number): { receipt: SignedReceipt; out: Float32Array } {
  const out = new Float32Array(DIM).map((_, i) => Math.sin(i + step));
  const receipt = receiptOf(worker, domain, { step, start: 0, end: 2, input: h(`in-${step}`), output: hashTensor(out), session: 'audited' });
  return { receipt, out };
}

/** A worker's receipt whose output an auditor's re-execution contradicts, with the auditor's failing verdict. */
export function computationFault(worker: Identity, auditor: Identity, domain: OdsiDomain, step = 1): AuditEvidence {
  const { receipt, out } = workerStep(worker, domain, step);
  const honest = out.map((v) => v + 0.5);
  const r = auditReceipt(auditor, domain, { receipt, workerOutput: out, auditOutput: honest, auditorProfile: 'reference/f32', dim: DIM }, 1);
  if (!r.evidence) throw new Error('fixture: the audit passed');
  return r.evidence;
}

/** `auditor`'s verdict on the same receipt as computationFault(worker, …, step): pass or fail as asked. */
export function verdictOn(worker: Identity, auditor: Identity, domain: OdsiDomain, step: number, pass: boolean): SignedVerdict {
  const { receipt, out } = workerStep(worker, domain, step);
  const auditOutput = pass ? out : out.map((v) => v + 0.5);
  return auditReceipt(auditor, domain, { receipt, workerOutput: out, auditOutput, auditorProfile: 'reference/f32', dim: DIM }, 1).verdict;
}
