// The gateway's accountability, assembled: a Verdicts sink, an AuditScheduler that reports to
// it and a RouteStepChecks (the routes' StepVerifier) that hands sampled steps to the
// scheduler. Built once at gateway start-up when accountability is on; when it is off there
// is no object at all and routes run without a verifier.

import type { Identity } from '../../identity/identity.js';
import type { WeightSource } from '../../model/types.js';
import type { OdsiHost } from '../../p2p/host.js';
import type { StepVerifier } from '../../route/step-verifier.js';
import type { StakeView } from '../../routing/stake.js';
import type { OdsiDomain } from '../records/eip712.js';
import type { SignedReceipt } from '../records/receipts.js';
import type { Evidence, EvidenceQueue } from '../records/evidence.js';
import { Referee } from './auditor.js';
import { AuditScheduler, type AuditSchedulerOptions } from './audit-scheduler.js';
import type { AuditPeer } from './route-audit.js';
import { RouteStepChecks } from './step-verifier.js';
import { Verdicts, type AccountabilityStats, type AuditRecord, type BanSink, type EvidenceRecord } from './verdicts.js';

export interface GatewayAccountabilityOptions extends AuditSchedulerOptions {
  /** fetches audit data and reaches peer auditors */
  host: OdsiHost;
  /** signs verdicts (default: the host's identity) */
  identity?: Identity;
  /** the EIP-712 domain receipts are signed under (the deployment's; nodes must agree) */
  domain: OdsiDomain;
  /** the model the referee re-executes with (the gateway's open file) */
  src: WeightSource;
  /** the gateway's ban list: convicted peers are routed around */
  bans: BanSink;
  /** evidence consumer (e.g. the ledger); default: a bounded queue nobody drains */
  queue?: EvidenceQueue<Evidence>;
  /** nodes that may re-execute audits (the swarm the gateway knows); none: the referee does */
  auditors?: () => readonly AuditPeer[];
  /** stake and reputation (the ledger's view): probation audit rates, auditor eligibility */
  stake?: StakeView;
  /** each step's receipts once their chain of custody holds (payments) */
  onReceipts?: (receipts: readonly SignedReceipt[]) => void;
}

export interface GatewayAccountability {
  /** hand to every route: checks each step before its output is released */
  readonly verifier: StepVerifier;
  /** audit rate for one peer (peerId given) or for every peer without its own */
  setAuditRate(rate: number, peerId?: string): void;
  rateFor(peerId: string): number;
  /** whether audits of this peer hold its steps until the verdict */
  holds(peerId: string): boolean;
  /** why the peer was convicted, or undefined */
  convictionOf(peerId: string): string | undefined;
  readonly audits: readonly AuditRecord[];
  readonly evidence: readonly EvidenceRecord[];
  readonly stats: Readonly<AccountabilityStats>;
  readonly queue: EvidenceQueue<Evidence>;
  /**
   * Audits hop `hopIndex` of a route session at `step`, held to `receipt`: a record the hop signed
   * that never reached the gateway on the token path (fetched for a dispute). True when the audit
   * found the hop guilty: convicted, with evidence for the ledger.
   */
  auditSigned(t: {
    routeSessionId: string;
    step: number;
    hopIndex: number;
    hop: AuditPeer;
    dim: number;
    receipt: SignedReceipt;
  }): Promise<boolean>;
  /** resolves when background verification and audits have caught up (tests, reports) */
  settled(): Promise<void>;
  /** waits for pending work, then frees the referee's stages */
  dispose(): Promise<void>;
}

export function createGatewayAccountability(o: GatewayAccountabilityOptions): GatewayAccountability {
  const verdicts = new Verdicts({ bans: o.bans, queue: o.queue });
  const referee = new Referee(o.src);
  const scheduler = new AuditScheduler(
    { host: o.host, identity: o.identity ?? o.host.identity, domain: o.domain, referee, verdicts, auditors: o.auditors, stake: o.stake },
    o,
  );
  const checks = new RouteStepChecks({ domain: o.domain, verdicts, scheduler, onReceipts: o.onReceipts });
  const settled = async (): Promise<void> => {
    // a held step may queue background audits after verification: wait until neither moves
    for (let i = 0; i < 100; i++) {
      const b = checks.idle();
      const l = scheduler.idle();
      await b;
      await l;
      if (b === checks.idle() && l === scheduler.idle()) return;
    }
  };
  return {
    verifier: checks,
    setAuditRate: (rate, peerId) => scheduler.setAuditRate(rate, peerId),
    rateFor: (peerId) => scheduler.rateFor(peerId),
    holds: (peerId) => scheduler.holds(peerId),
    convictionOf: (peerId) => verdicts.convictionOf(peerId),
    audits: verdicts.audits,
    evidence: verdicts.evidence,
    stats: verdicts.stats,
    queue: verdicts.queue,
    async auditSigned({ receipt, ...t }) {
      const receipts = new Map(checks.receiptsOf(t.routeSessionId, t.hopIndex));
      receipts.set(t.step, receipt);
      const fail = await scheduler.audit({ ...t, receipts }, 'background');
      return fail?.code === 'misbehaviour';
    },
    settled,
    async dispose() {
      await settled();
      await referee.dispose();
    },
  };
}
