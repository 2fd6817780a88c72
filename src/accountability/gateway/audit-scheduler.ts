// Selective redundancy at the gateway: which hops of a step get audited and how.
//
// Each peer is audited at a rate: its own, else the gateway's default, else (reputation on
// and no default) one derived from its passed audits — new peers often, proven ones rarely.
// A hop is selected by its signed output hash and a beacon drawn after the receipt was
// signed. Audits of suspects (rate ≥ holdAtRate, e.g. a node shadowed at rate 1) HOLD the
// step until the verdict; all others run one at a time in a bounded background lane (what
// does not fit is counted as skipped). An audit (route-audit.ts) is re-executed by another
// node serving exactly the hop's layers — drawn at random, never the hop itself, never a
// convicted or banned peer — or else by the gateway's referee. Outcomes go to Verdicts.
// With stake (routing/stake.ts StakeView, the ledger's view): every identity is audited at
// least at the rate the ledger's rules give it (high on probation), and auditors are drawn
// only among eligible identities that are not excluded (slashed), in proportion to their
// stake weight, so splitting a stake into many identities does not make its holder audit
// (or vouch for a colluder) more often.

import { randomBytes } from 'node:crypto';
import { bytesToHex } from '@noble/hashes/utils.js';
import type { Identity } from '../../identity/identity.js';
import type { OdsiHost } from '../../p2p/host.js';
import type { RouteHopInfo, StepFailure } from '../../route/step-verifier.js';
import type { Hex, OdsiDomain } from '../records/eip712.js';
import type { SignedReceipt } from '../records/receipts.js';
import { auditRate, auditSelected } from '../checks/audit.js';
import { addressOfPeer } from '../records/wire.js';
import { addressOfPeerId, peerEligible, pickByWeight, uniformSource, type StakeView } from '../../routing/stake.js';
import type { Referee } from './auditor.js';
import { runAudit, type AuditOutcome, type AuditPeer, type AuditTarget } from './route-audit.js';
import type { AuditRecord, Verdicts } from './verdicts.js';

export interface AuditSchedulerOptions {
  /** audit rate for every peer without its own (default 0) */
  auditRate?: number;
  /** with no default rate: rates from each peer's passed audits (new peers p0, proven ones down to pMin) */
  reputation?: boolean;
  /** audits of peers audited at this rate or more hold the step until the verdict (default 0.5) */
  holdAtRate?: number;
  /** background audits waiting at most (default 32); further selections are counted as skipped */
  maxPendingAudits?: number;
  /** how long one audit fetch may take (default 10 s) */
  fetchTimeoutMs?: number;
  /** how long a peer re-execution may take (default 60 s) */
  reexecTimeoutMs?: number;
  /** the model id peer auditors must serve (required for peer audits) */
  modelId?: string;
}

export interface AuditSchedulerDeps {
  /** fetches committed data from the audited node and asks auditors to re-execute */
  host: OdsiHost;
  /** signs verdicts */
  identity: Identity;
  domain: OdsiDomain;
  /** re-executes when no peer auditor can (or to settle a dispute) */
  referee: Referee;
  verdicts: Verdicts;
  /** nodes that may re-execute audits (the swarm the gateway knows); none: the referee does */
  auditors?: () => readonly AuditPeer[];
  /** stake and reputation: probation audit rates, auditor eligibility */
  stake?: StakeView;
}

export class AuditScheduler {
  private defaultRate: number;
  private readonly perPeer = new Map<string, number>();
  /** background audits: one at a time, bounded */
  private lane: Promise<void> = Promise.resolve();
  private pendingAudits = 0;
  /** draws auditors */
  private readonly uniform = uniformSource();

  constructor(
    private readonly d: AuditSchedulerDeps,
    private readonly o: AuditSchedulerOptions = {},
  ) {
    this.defaultRate = checkRate(o.auditRate ?? 0);
  }

  /** Audit rate for one peer (peerId given) or for every peer without its own. */
  setAuditRate(rate: number, peerId?: string): void {
    checkRate(rate);
    if (peerId) this.perPeer.set(peerId, rate);
    else this.defaultRate = rate;
  }

  rateFor(peerId: string): number {
    const own = this.perPeer.get(peerId);
    if (own !== undefined) return own;
    const base = this.o.reputation && this.defaultRate === 0 ? auditRate(this.d.verdicts.passesOf(peerId)) : this.defaultRate;
    const address = this.d.stake ? addressOfPeerId(peerId) : undefined;
    const ruled = address === undefined ? undefined : this.d.stake!.auditRate(address);
    return ruled === undefined ? base : Math.max(base, Math.min(1, Math.max(0, ruled)));
  }

  /** Whether audits of this peer hold its steps until the verdict. */
  holds(peerId: string): boolean {
    return this.rateFor(peerId) >= (this.o.holdAtRate ?? 0.5);
  }

  /** Indexes of the hops of one step selected for an audit (receipts: the step's, one per hop). */
  select(hops: readonly RouteHopInfo[], receipts: readonly SignedReceipt[]): number[] {
    const picked: number[] = [];
    hops.forEach((h, i) => {
      const rate = this.rateFor(h.peerId);
      // keyed by the signed output hash and a beacon drawn after the receipt was signed: the
      // node cannot know at execution time which of its steps get checked
      if (rate >= 1 || (rate > 0 && auditSelected(receipts[i]!.record.outputHash, `0x${bytesToHex(randomBytes(32))}` as Hex, rate)))
        picked.push(i);
    });
    return picked;
  }

  /**
   * Another node serving exactly the hop's layers, never the hop itself, a banned/convicted one
   * or (with stake) an ineligible one; drawn at random, with stake in proportion to its weight
   * (identities split from one stake audit no more often than that stake would: routing/stake.ts).
   */
  pickAuditor(hop: AuditPeer): AuditPeer | undefined {
    const ok = (this.d.auditors?.() ?? []).filter(
      (p) =>
        p.start === hop.start &&
        p.end === hop.end &&
        p.peerId !== hop.peerId &&
        this.d.verdicts.inGoodStanding(p.peerId) &&
        (!this.d.stake || peerEligible(this.d.stake, p.peerId)),
    );
    if (!ok.length) return undefined;
    const stake = this.d.stake;
    return pickByWeight(ok, (p) => (stake ? stake.weight(addressOfPeerId(p.peerId)!) : 1), this.uniform());
  }

  /**
   * Background audit: never delays the step; a guilty verdict convicts the peer for later
   * steps. `verified`: the step's signatures stood (evidence is never built on bad ones).
   */
  enqueue(t: AuditTarget, verified: Promise<boolean>): void {
    if (this.pendingAudits >= (this.o.maxPendingAudits ?? 32)) {
      this.d.verdicts.stats.auditsSkipped++;
      return;
    }
    this.pendingAudits++;
    this.lane = this.lane.then(async () => {
      try {
        if (await verified) await this.audit(t, 'background');
      } catch {
        this.d.verdicts.stats.backgroundFailures++;
      } finally {
        this.pendingAudits--;
      }
    });
  }

  /** The background lane's current tail (settles when the audits queued so far have run). */
  idle(): Promise<void> {
    return this.lane;
  }

  /** Audits one hop's step now; a failure when the hop is guilty (or, held, does not answer). */
  async audit(t: AuditTarget, mode: 'hold' | 'background'): Promise<StepFailure | undefined> {
    const t0 = performance.now();
    const hop = t.hop;
    let res: AuditOutcome;
    try {
      res = await runAudit(
        {
          host: this.d.host,
          identity: this.d.identity,
          domain: this.d.domain,
          referee: this.d.referee,
          modelId: this.o.modelId,
          pickAuditor: (h) => this.pickAuditor(h),
          fetchTimeoutMs: this.o.fetchTimeoutMs ?? 10_000,
          reexecTimeoutMs: this.o.reexecTimeoutMs ?? 60_000,
        },
        t,
      );
    } catch (e) {
      // the auditor's own trouble (e.g. out of memory) proves nothing about the node
      res = {
        executor: 'referee',
        escalated: false,
        findings: [],
        replayedSteps: 0,
        notes: [],
        incomplete: `audit not completed: ${(e as Error).message}`,
      };
    }
    const why = res.findings.find((f) => f.peerId === hop.peerId)?.reason ?? res.incomplete ?? res.unanswered;
    const rec: AuditRecord = {
      at: Date.now(),
      routeSessionId: t.routeSessionId,
      step: t.step,
      hop: t.hopIndex,
      peerId: hop.peerId,
      accused: addressOfPeer(hop.peerId),
      layers: [hop.start, hop.end],
      replayedSteps: res.replayedSteps,
      executor: res.executor,
      escalated: res.escalated,
      mode,
      pass: res.workerPass === true,
      ...(res.maxRelL2 !== undefined ? { maxRelL2: res.maxRelL2, tau: res.tau } : {}),
      ...(res.verdict ? { verdict: res.verdict } : {}),
      ms: Math.round((performance.now() - t0) * 1000) / 1000,
    };
    if (why) rec.reason = why;
    if (res.incomplete) rec.incomplete = true;
    if (res.notes.length) rec.reason = [rec.reason, ...res.notes].filter(Boolean).join('; ');
    const v = this.d.verdicts;
    v.recordAudit(rec);
    for (const f of res.findings) v.convict(f.kind, f.peerId, f.reason, f.evidence);
    if (res.workerPass === false) {
      v.stats.failed++;
      return {
        code: 'misbehaviour',
        reason: `audit of ${hop.peerId} (layers ${hop.start}:${hop.end}, step ${t.step}): ${why}`,
        peerId: hop.peerId,
      };
    }
    if (res.unanswered) {
      v.stats.failed++;
      // a held audit the worker does not answer cannot release the step
      return mode === 'hold' ? { code: 'audit_unanswered', reason: res.unanswered, peerId: hop.peerId } : undefined;
    }
    if (res.workerPass) v.recordPass(hop.peerId);
    return undefined;
  }

  /** Forgets a route session the verifier no longer tracks (the referee's replays of it). */
  forgetRoute(routeSessionId: string): void {
    this.d.referee.forgetRoute(routeSessionId);
  }
}

function checkRate(rate: number): number {
  if (!(rate >= 0 && rate <= 1)) throw new RangeError(`audit rate must be in [0, 1], got ${rate}`);
  return rate;
}
