// The ledger's own check of evidence — the same rule the contract applies with ecrecover.
// Nothing here trusts the submitter: every receipt and verdict must verify under the
// deployment's EIP-712 domain and name its signer.
//
//   equivocation  two ExecutionReceipts by one signer for one slot (signer, request, session,
//                 step, layerStart, layerEnd) with different outputHash. Id: the slot, so a
//                 third receipt for the same slot is not a second offence.
//   custody       forged custody: receipt D names receipt U as its upstream
//                 (D.upstreamReceiptHash = digest(U)), same request/session/step, D starts where
//                 U ends, and D.inputHash ≠ U.outputHash. An honest hop checks exactly this
//                 before it signs, so D's signer is at fault. Id: digest(D).
//   computation   an audited receipt plus AuditVerdicts over its digest by registered,
//                 staked identities other than the accused; counted per distinct auditor.
//                 Id: digest of the audited receipt.

import { checkSigned, type SignedReceipt, type SignedVerdict } from '../accountability/records/receipts.js';
import { assertWellFormed, typedDigest, type Hex, type OdsiDomain } from '../accountability/records/eip712.js';
import { slotKey } from '../accountability/checks/equivocation.js';
import type { Evidence } from '../accountability/records/evidence.js';
import type { Address, RejectCode, SlashKind } from './ledger.js';
import { keccakText } from './events.js';

export type EvidenceCheck =
  { ok: true; kind: SlashKind; accused: Address; evidenceId: Hex; receiptDigest?: Hex } | { ok: false; code: RejectCode; reason: string };

const eq = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();
const fail = (code: RejectCode, reason: string): EvidenceCheck => ({ ok: false, code, reason });

/**
 * Verifies one signed record; `trust` skips the signature (replay of an already verified log
 * prefix) but never the shape. Returns its EIP-712 digest or a rejection.
 */
function verified(
  primary: 'ExecutionReceipt' | 'ReexecutionReceipt' | 'AuditVerdict',
  s: unknown,
  domain: OdsiDomain,
  trust: boolean,
): { digest: Hex } | { code: RejectCode; reason: string } {
  if (!s || typeof s !== 'object') return { code: 'malformed', reason: `${primary}: not a signed record` };
  if (trust) {
    try {
      const rec = (s as { record?: unknown }).record;
      assertWellFormed(primary, rec);
      return { digest: typedDigest(primary, rec as never, domain) };
    } catch (e) {
      return { code: 'malformed', reason: (e as Error).message };
    }
  }
  const c = checkSigned(primary, s, domain);
  if (c.ok) return { digest: c.digest };
  return { code: c.malformed ? 'malformed' : 'bad_signature', reason: c.reason };
}

export function checkEquivocation(ev: { a?: unknown; b?: unknown }, domain: OdsiDomain, trust: boolean): EvidenceCheck {
  const a = verified('ExecutionReceipt', ev.a, domain, trust);
  if ('code' in a) return fail(a.code, a.reason);
  const b = verified('ExecutionReceipt', ev.b, domain, trust);
  if ('code' in b) return fail(b.code, b.reason);
  const ra = (ev.a as SignedReceipt).record;
  const rb = (ev.b as SignedReceipt).record;
  if (slotKey(ra) !== slotKey(rb)) return fail('unprovable_evidence', 'equivocation: the two receipts are not for one slot of one signer');
  if (eq(ra.outputHash, rb.outputHash)) return fail('unprovable_evidence', 'equivocation: the two receipts sign the same output');
  return { ok: true, kind: 'equivocation', accused: ra.signer, evidenceId: keccakText(`equivocation|${slotKey(ra)}`) };
}

export function checkCustody(ev: { receipts?: unknown }, domain: OdsiDomain, trust: boolean): EvidenceCheck {
  if (!Array.isArray(ev.receipts) || ev.receipts.length < 2 || ev.receipts.length > 64)
    return fail('malformed', 'custody: expected 2 to 64 signed receipts');
  const digests: Hex[] = [];
  for (const s of ev.receipts) {
    const v = verified('ExecutionReceipt', s, domain, trust);
    if ('code' in v) return fail(v.code, v.reason);
    digests.push(v.digest);
  }
  const rs = ev.receipts as SignedReceipt[];
  const pair = custodyContradiction(rs, digests);
  if (!pair) return fail('unprovable_evidence', 'custody: no receipt contradicts the upstream receipt it names');
  return {
    ok: true,
    kind: 'custody',
    accused: rs[pair.down]!.record.signer,
    evidenceId: keccakText(`custody|${digests[pair.down]!.toLowerCase()}`),
  };
}

/**
 * What custody evidence proves, searched in one order by both backends (the EVM backend hands
 * the pair found to the contract, which checks it again): a receipt `down` that names receipt
 * `up` (by its digest) as its upstream, continues `up`'s step, and signs another input than
 * `up`'s output. Indexes into `rs`; undefined when no receipt contradicts its upstream.
 */
export function custodyContradiction(rs: readonly SignedReceipt[], digests: readonly Hex[]): { up: number; down: number } | undefined {
  for (let j = 0; j < rs.length; j++) {
    const d = rs[j]!.record;
    for (let i = 0; i < rs.length; i++) {
      if (i === j || !eq(d.upstreamReceiptHash, digests[i]!)) continue;
      const u = rs[i]!.record;
      if (!eq(u.requestId, d.requestId) || !eq(u.sessionId, d.sessionId) || u.step !== d.step || u.layerEnd !== d.layerStart) continue;
      if (eq(u.outputHash, d.inputHash)) continue;
      return { up: i, down: j };
    }
  }
  return undefined;
}

export interface VerdictTally {
  guilty: Address[];
  innocent: Address[];
}

/**
 * Checks an audited receipt and returns its digest and accused (`receiptType` as in
 * AuditEvidence). Verdicts are checked separately (tallyVerdicts) because disputes collect them.
 */
export function checkAudited(ev: { receipt?: unknown; receiptType?: unknown }, domain: OdsiDomain, trust: boolean): EvidenceCheck {
  if (ev.receiptType !== undefined && ev.receiptType !== 'ReexecutionReceipt') return fail('malformed', 'audit: unknown receiptType');
  const primary = ev.receiptType === 'ReexecutionReceipt' ? 'ReexecutionReceipt' : 'ExecutionReceipt';
  const r = verified(primary, ev.receipt, domain, trust);
  if ('code' in r) return fail(r.code, r.reason);
  const rec = (ev.receipt as SignedReceipt).record;
  return {
    ok: true,
    kind: 'computation',
    accused: rec.signer,
    evidenceId: keccakText(`computation|${r.digest.toLowerCase()}`),
    receiptDigest: r.digest,
  };
}

/**
 * Verifies verdicts over `receiptDigest` and sorts their auditors into guilty/innocent.
 * `isRegistered` rejects verdicts by strangers; `counts` says whether a registered auditor's
 * verdict counts (staked, not slashed, not the accused); a verdict over another receipt, or a
 * second verdict by one auditor, is malformed. Already-counted auditors (`seen`) are skipped.
 */
export function tallyVerdicts(
  verdicts: unknown,
  receiptDigest: Hex,
  domain: OdsiDomain,
  trust: boolean,
  o: { isRegistered: (a: Address) => boolean; counts: (a: Address) => boolean; seen?: ReadonlySet<string> },
): { ok: true; tally: VerdictTally } | { ok: false; code: RejectCode; reason: string } {
  if (!Array.isArray(verdicts) || verdicts.length > 64)
    return { ok: false, code: 'malformed', reason: 'verdicts: expected an array of at most 64' };
  const tally: VerdictTally = { guilty: [], innocent: [] };
  const mine = new Set<string>();
  for (const s of verdicts as SignedVerdict[]) {
    const v = verified('AuditVerdict', s, domain, trust);
    if ('code' in v) return { ok: false, code: v.code, reason: v.reason };
    const r = s.record;
    if (!eq(r.receiptHash, receiptDigest)) return { ok: false, code: 'malformed', reason: 'verdict: judges another receipt' };
    const who = r.auditor.toLowerCase();
    if (mine.has(who)) return { ok: false, code: 'malformed', reason: `verdict: ${r.auditor} twice` };
    mine.add(who);
    if (!o.isRegistered(r.auditor)) return { ok: false, code: 'unknown_identity', reason: `verdict by unregistered ${r.auditor}` };
    if (o.seen?.has(who) || !o.counts(r.auditor)) continue;
    (r.pass ? tally.innocent : tally.guilty).push(r.auditor);
  }
  return { ok: true, tally };
}

/** Which check applies to an evidence object (by its kind); malformed kinds are rejected. */
export function checkSelfProving(ev: Evidence, domain: OdsiDomain, trust: boolean): EvidenceCheck {
  if (ev.kind === 'equivocation') return checkEquivocation(ev, domain, trust);
  if (ev.kind === 'custody') return checkCustody(ev, domain, trust);
  return fail('malformed', 'not self-proving evidence');
}
