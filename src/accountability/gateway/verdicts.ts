// Where the gateway's accountability findings go: convictions (a convicted peer is banned and
// every later step through it fails), evidence records and the bounded queue a ledger will
// drain, the record of every audit, each peer's passed audits (the input of reputation-based
// audit rates) and the counters reported by the demo and benchmarks.

import type { Hex } from '../records/eip712.js';
import type { SignedVerdict } from '../records/receipts.js';
import { EvidenceQueue, type Evidence } from '../records/evidence.js';
import { addressOfPeer } from '../records/wire.js';

/** The ban list a conviction goes to (the gateway's: routing skips banned peers). */
export interface BanSink {
  ban(peerId: string, reason?: string): number;
  /** bars a convicted peer from routing for good (not only until a ban runs out) */
  banForGood(peerId: string, reason?: string): void;
  isBanned(peerId: string): boolean;
}

export interface AuditRecord {
  at: number;
  routeSessionId: string;
  step: number;
  hop: number;
  peerId: string;
  accused: Hex;
  layers: [number, number];
  /** committed steps re-executed for this audit */
  replayedSteps: number;
  /** who re-executed: a peer auditor's id, or 'referee' (the gateway's reference engine) */
  executor: string;
  /** the referee settled a worker/auditor disagreement */
  escalated: boolean;
  /** 'hold': the step waited for the verdict; 'background': it did not */
  mode: 'hold' | 'background';
  pass: boolean;
  maxRelL2?: number;
  tau?: number;
  verdict?: SignedVerdict;
  /** why the audit failed without a comparison (equivocation, custody, no answer) */
  reason?: string;
  /** the audit could not be completed for reasons of the auditor's own (no verdict either way) */
  incomplete?: boolean;
  ms: number;
}

export interface EvidenceRecord {
  at: number;
  kind: Evidence['kind'];
  /** the peer and identity the evidence incriminates */
  peerId: string;
  accused: Hex;
  reason: string;
  evidence: Evidence;
}

export interface AccountabilityStats {
  steps: number;
  receipts: number;
  receiptBytes: number;
  checkMs: number;
  verifyMs: number;
  auditMs: number;
  audited: number;
  failed: number;
  backgroundFailures: number;
  /** audits run without holding the step / by a peer node / escalated to the referee */
  backgroundAudits: number;
  peerAudits: number;
  escalations: number;
  /** selections dropped because the background lane was full */
  auditsSkipped: number;
  incompleteAudits: number;
}

const MAX_RECORDS = 10_000;
const NO_ADDRESS: Hex = '0x0000000000000000000000000000000000000000';

export class Verdicts {
  readonly audits: AuditRecord[] = [];
  readonly evidence: EvidenceRecord[] = [];
  readonly stats: AccountabilityStats = {
    steps: 0,
    receipts: 0,
    receiptBytes: 0,
    checkMs: 0,
    verifyMs: 0,
    auditMs: 0,
    audited: 0,
    failed: 0,
    backgroundFailures: 0,
    backgroundAudits: 0,
    peerAudits: 0,
    escalations: 0,
    auditsSkipped: 0,
    incompleteAudits: 0,
  };
  /** evidence for whoever settles it (e.g. the ledger); bounded, oldest dropped */
  readonly queue: EvidenceQueue<Evidence>;
  /** peer → why it was found guilty */
  private readonly convicted = new Map<string, string>();
  private readonly passes = new Map<string, number>();
  private readonly bans: BanSink;

  constructor(c: { bans: BanSink; queue?: EvidenceQueue<Evidence> }) {
    this.bans = c.bans;
    this.queue = c.queue ?? new EvidenceQueue<Evidence>(4096);
  }

  /** Records evidence against a peer, convicts it and bars it from routing for good; its reputation starts over. */
  convict(kind: Evidence['kind'], peerId: string, reason: string, evidence: Evidence): void {
    this.evidence.push({ at: Date.now(), kind, peerId, accused: safeAddress(peerId) ?? NO_ADDRESS, reason, evidence });
    if (this.evidence.length > MAX_RECORDS) this.evidence.shift();
    this.queue.enqueue(evidence);
    this.passes.set(peerId, 0);
    this.convicted.set(peerId, `${kind}: ${reason}`);
    this.bans.banForGood(peerId, `${kind}: ${reason}`);
  }

  /** Why the peer was convicted, or undefined. */
  convictionOf(peerId: string): string | undefined {
    return this.convicted.get(peerId);
  }

  /** Whether the peer may be trusted with work (re-executing audits): neither convicted nor banned. */
  inGoodStanding(peerId: string): boolean {
    return !this.convicted.has(peerId) && !this.bans.isBanned(peerId);
  }

  recordAudit(rec: AuditRecord): void {
    this.audits.push(rec);
    if (this.audits.length > MAX_RECORDS) this.audits.shift();
    const s = this.stats;
    s.audited++;
    s.auditMs += rec.ms;
    if (rec.mode === 'background') s.backgroundAudits++;
    if (rec.executor !== 'referee') s.peerAudits++;
    if (rec.escalated) s.escalations++;
    if (rec.incomplete) s.incompleteAudits++;
  }

  recordPass(peerId: string): void {
    this.passes.set(peerId, this.passesOf(peerId) + 1);
  }

  /** audits the peer passed since it was last convicted */
  passesOf(peerId: string): number {
    return this.passes.get(peerId) ?? 0;
  }
}

/** The peer's address, or undefined when its key cannot sign odsi records. */
export function safeAddress(peerId: string): Hex | undefined {
  try {
    return addressOfPeer(peerId);
  } catch {
    return undefined;
  }
}
