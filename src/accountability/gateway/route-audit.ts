// One audit of one hop's step (selective redundancy), from the gateway's side:
//
//  1. fetch the hop's committed inputs and shown output (AUDIT_PROTOCOL) and hold them to what
//     it signed on the token path: same receipt (else equivocation), output bytes = signed
//     hash, every input = the input hash of its receipt for that step, commitment consistent;
//  2. have them re-executed by ANOTHER node serving exactly the same layers (AUDIT_EXEC
//     protocol: one batched prefill over the committed prefix, signed by that node) — or, when
//     none is available or it fails, by the gateway's referee (the deterministic reference
//     engine, replaying incrementally per route session);
//  3. compare per-token relative L2 within the calibrated tolerance of the precision pair.
//     Worker and peer auditor disagreeing proves only that one of them is wrong: the referee
//     recomputes from the same committed inputs and decides. Whoever disagrees with the
//     referee gets signed evidence; nobody is accused on a peer auditor's word alone.

import type { Identity } from '../../identity/identity.js';
import type { OdsiHost } from '../../p2p/host.js';
import { DTYPE_BYTES, decodeTensor } from '../../protocol/messages.js';
import { ZERO_HASH, outputRows, type OdsiDomain } from '../records/eip712.js';
import { checkSigned, hashTensor, type SignedCommitment, type SignedReceipt, type SignedVerdict } from '../records/receipts.js';
import { CustodyError, checkCommitment } from '../checks/custody.js';
import { detectEquivocation } from '../checks/equivocation.js';
import type { Evidence } from '../records/evidence.js';
import { auditReceipt } from '../checks/audit.js';
import { AuditFetchError, fetchCommitted, type CommittedStep, type Referee } from './auditor.js';
import { requestReexecution } from './reexec-client.js';
import { addressOfPeer } from '../records/wire.js';

export interface AuditPeer {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
}

/** What is audited: hop `hop` of a route session at `step`. */
export interface AuditTarget {
  routeSessionId: string;
  step: number;
  hopIndex: number;
  hop: AuditPeer;
  /** the hop's receipts as seen in the result chains, by step */
  receipts: ReadonlyMap<number, SignedReceipt>;
  /** activation width (model dim) */
  dim: number;
}

export interface AuditContext {
  host: OdsiHost;
  identity: Identity;
  domain: OdsiDomain;
  referee: Referee;
  /** the model id re-executing nodes must serve (the gateway's) */
  modelId?: string;
  /** another node serving exactly [start, end), never the worker; undefined: none */
  pickAuditor?: (hop: AuditPeer) => AuditPeer | undefined;
  fetchTimeoutMs: number;
  reexecTimeoutMs: number;
}

export interface AuditFinding {
  peerId: string;
  kind: Evidence['kind'];
  reason: string;
  evidence: Evidence;
}

export interface AuditOutcome {
  /** who re-executed: a peer id, or 'referee' (the gateway's reference engine) */
  executor: string;
  /** the referee was called in to settle a worker/auditor disagreement */
  escalated: boolean;
  /** true: the worker's output is confirmed; false: it is not (findings name it); undefined: no verdict */
  workerPass?: boolean;
  /** evidence against the worker and/or a lying auditor */
  findings: AuditFinding[];
  /** no verdict either way, and why (the auditor's own trouble) */
  incomplete?: string;
  /** the worker did not answer the audit at all (unreachable, timeout) */
  unanswered?: string;
  replayedSteps: number;
  maxRelL2?: number;
  tau?: number;
  verdict?: SignedVerdict;
  /** problems with a peer auditor that made the referee step in (no accusation) */
  notes: string[];
}

export async function runAudit(ctx: AuditContext, t: AuditTarget): Promise<AuditOutcome> {
  const out: AuditOutcome = { executor: 'referee', escalated: false, findings: [], replayedSteps: 0, notes: [] };
  const hop = t.hop;
  const A = t.receipts.get(t.step);
  if (!A) return { ...out, incomplete: `no receipt of step ${t.step} held for hop ${t.hopIndex}` };
  const accused = addressOfPeer(hop.peerId);
  const guilty = (kind: Evidence['kind'], reason: string, evidence: Evidence): AuditOutcome => {
    out.findings.push({ peerId: hop.peerId, kind, reason, evidence });
    out.workerPass = false;
    return out;
  };
  const custodyEv = (code: CustodyError['code'], reason: string, extra: SignedReceipt[] = []): Evidence => ({
    kind: 'custody',
    code,
    blame: accused,
    reason,
    receipts: [A, ...extra],
    detectedAt: Date.now(),
  });

  // ---- who re-executes, and therefore which committed steps are needed ----
  const auditor = ctx.modelId ? ctx.pickAuditor?.(hop) : undefined;
  const progressKey = `${t.routeSessionId}#${t.hopIndex}`;
  const done = ctx.referee.progress.get(progressKey) ?? -1;
  // a peer auditor starts from scratch; the referee continues its own replay when it can
  const from = auditor || done >= t.step ? 0 : done + 1;

  // ---- 1. the worker's committed data, held to what it signed ----
  let data;
  try {
    data = await fetchCommitted(
      ctx.host,
      ctx.domain,
      hop,
      { sessionId: t.routeSessionId, fromStep: from, toStep: t.step },
      ctx.fetchTimeoutMs,
    );
  } catch (e) {
    const why = (e as Error).message;
    if (e instanceof AuditFetchError && e.answered)
      return guilty('custody', `withheld its committed data: ${why}`, custodyEv('malformed', why));
    return { ...out, unanswered: why };
  }
  const B = data.receipt as SignedReceipt;
  const vb = checkSigned('ExecutionReceipt', B, ctx.domain);
  if (!vb.ok)
    return guilty(
      'custody',
      `audit reply carries an invalid receipt: ${vb.reason}`,
      custodyEv(vb.malformed ? 'malformed' : 'bad_signature', vb.reason),
    );
  if (B.record.signer.toLowerCase() !== accused.toLowerCase())
    return guilty('custody', `audit reply receipt is signed by ${B.record.signer}`, custodyEv('bad_signature', 'wrong signer', [B]));
  const eq = detectEquivocation(A, B, ctx.domain);
  if (eq)
    return guilty('equivocation', `signed two different outputs for step ${t.step} (one sent downstream, one shown to the auditor)`, eq);
  if (hashTensor(data.output.bytes).toLowerCase() !== A.record.outputHash.toLowerCase())
    return guilty(
      'custody',
      'output bytes shown to the auditor are not the ones it signed',
      custodyEv('output_mismatch', 'output bytes differ from the signed hash'),
    );
  const shownCommitment = (data as { commitment?: unknown }).commitment;
  if (shownCommitment !== undefined || A.record.commitmentHash.toLowerCase() !== ZERO_HASH) {
    if (shownCommitment === undefined)
      return guilty('custody', `did not show the commitment its receipt points to`, custodyEv('malformed', 'commitment withheld'));
    try {
      checkCommitment(shownCommitment as SignedCommitment, A, ctx.domain);
    } catch (e) {
      if (!(e instanceof CustodyError)) throw e;
      return guilty('custody', `commitment does not match its receipt: ${e.message}`, custodyEv(e.code, e.message));
    }
  }
  const byStep = new Map(data.steps.map((s) => [s.step, s]));
  const seq: CommittedStep[] = [];
  for (let s = from; s <= t.step; s++) {
    const c = byStep.get(s);
    const As = t.receipts.get(s);
    if (!As) {
      // a step the gateway never saw a receipt for cannot be held to anything
      if (c) return { ...out, incomplete: `committed step ${s} has no receipt at the gateway` };
      continue;
    }
    if (!c) return guilty('custody', `did not produce its committed input of step ${s}`, custodyEv('malformed', `missing step ${s}`));
    if (hashTensor(c.input).toLowerCase() !== As.record.inputHash.toLowerCase())
      return guilty(
        'custody',
        `input it shows for step ${s} is not the one it signed`,
        custodyEv('input_mismatch', `step ${s} input differs`, [As]),
      );
    if (c.nTokens !== As.record.nTokens || c.pos !== As.record.pos || c.input.length !== c.nTokens * t.dim * DTYPE_BYTES[c.dtype])
      return guilty(
        'custody',
        `committed step ${s} does not match its receipt's slot`,
        custodyEv('slot_mismatch', `step ${s} slot differs`, [As]),
      );
    seq.push(c);
  }
  if (!seq.length || seq[seq.length - 1]!.step !== t.step) return { ...out, incomplete: `no committed input for step ${t.step}` };
  for (let k = 1; k < seq.length; k++)
    if (seq[k]!.pos !== seq[k - 1]!.pos + seq[k - 1]!.nTokens)
      return { ...out, incomplete: `committed steps are not contiguous at step ${seq[k]!.step}` };
  const worker = decodeTensor(data.output.bytes, data.output.dtype, outputRows(A.record) * t.dim);
  out.replayedSteps = seq.length;

  const judge = (
    receipt: SignedReceipt,
    shown: Float32Array,
    wire: Uint8Array,
    reference: Float32Array,
    refProfile: string,
    reexecution = false,
  ) =>
    auditReceipt(ctx.identity, ctx.domain, {
      receipt,
      reexecution,
      workerOutput: shown,
      workerWire: wire,
      auditOutput: reference,
      auditorProfile: refProfile,
      dim: t.dim,
    });

  // ---- 2a. a peer auditor re-executes; agreement settles it ----
  if (auditor && seq[0]!.pos === 0) {
    try {
      const r = await requestReexecution(
        ctx.host,
        ctx.domain,
        auditor,
        {
          routeSessionId: t.routeSessionId,
          step: t.step,
          layers: [hop.start, hop.end],
          modelId: ctx.modelId!,
          auditedReceiptHash: vb.digest,
          steps: seq,
        },
        ctx.reexecTimeoutMs,
      );
      out.executor = auditor.peerId;
      const res = judge(A, worker, data.output.bytes, r.output, r.receipt.record.profile);
      out.maxRelL2 = res.comparison.maxRelL2;
      out.tau = res.comparison.tau;
      out.verdict = res.verdict;
      if (res.comparison.pass) {
        out.workerPass = true;
        return out;
      }
      // ---- 2b. disagreement: the referee decides who is wrong (maybe both) ----
      out.escalated = true;
      const ref = await refereeReplay(ctx, t, seq, `${progressKey}#dispute${t.step}`, true);
      const onWorker = judge(A, worker, data.output.bytes, ref, ctx.referee.profile);
      const onAuditor = judge(r.receipt, r.output, r.outputBytes, ref, ctx.referee.profile, true);
      out.maxRelL2 = onWorker.comparison.maxRelL2;
      out.tau = onWorker.comparison.tau;
      out.verdict = onWorker.verdict;
      if (onAuditor.evidence)
        out.findings.push({
          peerId: auditor.peerId,
          kind: 'audit',
          reason: `as auditor of ${hop.peerId} (layers ${hop.start}:${hop.end}, step ${t.step}) it returned an output the referee does not reproduce: max per-token relative L2 ${onAuditor.comparison.maxRelL2.toExponential(3)} > τ ${onAuditor.comparison.tau.toExponential(1)}`,
          evidence: onAuditor.evidence,
        });
      if (onWorker.evidence) return guilty('audit', mismatch(onWorker.comparison, 'the auditor and the referee'), onWorker.evidence);
      out.workerPass = true;
      return out;
    } catch (e) {
      // the auditor's own trouble proves nothing about the worker: the referee steps in
      out.notes.push(`peer auditor ${auditor.peerId}: ${(e as Error).message}`);
      out.executor = 'referee';
      out.escalated = false;
    }
  }

  // ---- 2c. the referee re-executes (no peer auditor, or it failed) ----
  const fresh = seq[0]!.pos === 0 && from === 0;
  let ref: Float32Array;
  try {
    ref = await refereeReplay(ctx, t, seq, progressKey, fresh);
  } catch (e) {
    ctx.referee.progress.delete(progressKey);
    ctx.referee.closeSession(progressKey);
    return { ...out, incomplete: `referee could not replay: ${(e as Error).message}` };
  }
  ctx.referee.progress.set(progressKey, t.step);
  const res = judge(A, worker, data.output.bytes, ref, ctx.referee.profile);
  out.maxRelL2 = res.comparison.maxRelL2;
  out.tau = res.comparison.tau;
  out.verdict = res.verdict;
  if (res.evidence) return guilty('audit', mismatch(res.comparison, "the referee's re-execution"), res.evidence);
  out.workerPass = true;
  return out;
}

const mismatch = (c: { maxRelL2: number; tau: number }, who: string) =>
  `output differs from ${who}: max per-token relative L2 ${c.maxRelL2.toExponential(3)} > τ ${c.tau.toExponential(1)}`;

/**
 * Replays committed steps on the referee as one batched forward (positions are contiguous),
 * in chunks of ≤ 512 tokens; returns the last step's rows. `fresh`: the replay starts at
 * position 0 in a new session `key` (closed afterwards when it is a one-off dispute session).
 */
async function refereeReplay(ctx: AuditContext, t: AuditTarget, seq: CommittedStep[], key: string, fresh: boolean): Promise<Float32Array> {
  return ctx.referee.exclusive(() => replayLocked(ctx, t, seq, key, fresh));
}

async function replayLocked(ctx: AuditContext, t: AuditTarget, seq: CommittedStep[], key: string, fresh: boolean): Promise<Float32Array> {
  const stage = await ctx.referee.stage(t.hop.start, t.hop.end);
  const dim = t.dim;
  const total = seq.reduce((a, c) => a + c.nTokens, 0);
  const x = new Float32Array(total * dim);
  let o = 0;
  for (const c of seq) {
    x.set(decodeTensor(c.input, c.dtype, c.nTokens * dim), o);
    o += c.nTokens * dim;
  }
  const pos0 = seq[0]!.pos;
  if (fresh && pos0 !== 0) throw new Error(`a fresh replay must start at position 0, not ${pos0}`);
  const dispute = key.includes('#dispute');
  try {
    let last: Float32Array | undefined;
    const CHUNK = 512;
    for (let off = 0; off < total; off += CHUNK) {
      const n = Math.min(CHUNK, total - off);
      const r = await stage.forward({ sessionId: key, pos: pos0 + off, nTokens: n, hidden: x.subarray(off * dim, (off + n) * dim) });
      if (!r.hidden) throw new Error('referee stage returned no hidden states');
      last = r.hidden;
      if (off + n === total) break;
    }
    const nLast = seq[seq.length - 1]!.nTokens;
    const lastChunk = ((total - 1) % CHUNK) + 1;
    if (nLast > lastChunk) {
      // the audited step straddles a chunk boundary (a long prefill): recompute its rows as one step
      const r = await stage.forward({
        sessionId: key,
        pos: pos0 + total - nLast,
        nTokens: nLast,
        hidden: x.subarray((total - nLast) * dim),
      });
      return r.hidden!;
    }
    return last!.subarray((lastChunk - nLast) * dim, lastChunk * dim);
  } finally {
    if (dispute) ctx.referee.closeSession(key);
  }
}
