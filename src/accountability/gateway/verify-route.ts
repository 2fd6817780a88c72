// The gateway side of accountability on the token path.
//
// Every RESULT carries one signed receipt per hop. Per step the gateway checks, cheaply and
// synchronously, that the chain is complete and consistent with what it sent and received
// (hashes of both ends, handoffs, slots, signers = the route's peers). Signature
// verification, per-signer hash chains (replays) and equivocation tracking run on a serial
// background queue off the token path.
//
// Selective redundancy: each hop's receipt is audited with a per-peer rate (explicit, or from
// its record of passed audits: new peers more often). An audit (route-audit.ts) fetches the
// hop's committed inputs and shown output, has them re-executed by another node serving the
// same layers (or the gateway's referee) and compares within the calibrated tolerance.
// Audits of suspects (rate ≥ holdAtRate, e.g. a node shadowed at rate 1) HOLD the step: its
// output is released only after the verdict, so the user never sees a caught dishonest
// output. All other audits run in a bounded background lane and never delay a token; a
// guilty verdict there bans the peer, and the next step of every route through it fails
// naming it, so the resilient route moves around it and replays.

import { randomBytes } from 'node:crypto';
import type { Identity } from '../../identity/identity.js';
import type { WeightSource } from '../../model/types.js';
import type { StageInput } from '../../engine/types.js';
import type { OdsiHost } from '../../p2p/host.js';
import { encodeTensor, type Dtype, type StepHeader } from '../../protocol/messages.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { ZERO_HASH, assertWellFormed, type Hex, type OdsiDomain } from '../records/eip712.js';
import { checkSigned, hashTensor, type SignedReceipt, type SignedVerdict } from '../records/receipts.js';
import { CustodyError } from '../checks/custody.js';
import { EquivocationDetector, verifyEquivocationEvidence } from '../checks/equivocation.js';
import { EvidenceQueue, type Evidence } from '../records/evidence.js';
import { auditRate, auditSelected } from '../checks/audit.js';
import { Referee } from './auditor.js';
import { runAudit, type AuditOutcome, type AuditPeer } from './route-audit.js';
import { accountabilityEnabled, addressOfPeer, deploymentDomain, requestIdOf, sessionIdOf } from '../records/wire.js';

export type RouteHopInfo = AuditPeer;

/** One step of a route as the gateway saw it (what RouteStage hands over). */
export interface RouteStepView {
  sessionId: string;
  hops: readonly RouteHopInfo[];
  dtype: Dtype;
  input: StageInput;
  header: StepHeader;
  /** RESULT payload bytes as received */
  payload: Uint8Array;
}

export interface StepFailure {
  /** remote error code for the RouteError: 'custody' | 'misbehaviour' | 'audit_unanswered' */
  code: string;
  reason: string;
  peerId: string;
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

export interface AccountabilityOptions {
  /** the model the referee re-executes with (the gateway's open file) */
  src: WeightSource;
  /** signs verdicts (default: the host's identity) */
  identity?: Identity;
  domain?: OdsiDomain;
  /** audit rate for every peer without its own (default: ODSI_AUDIT_RATE, else 0) */
  auditRate?: number;
  /** rates from reputation instead (new peers p0, proven ones down to pMin) when no explicit rate applies */
  reputation?: boolean;
  /** the gateway's ban list: guilty peers are routed around */
  bans?: { ban(peerId: string): number; isBanned?(peerId: string): boolean };
  /** evidence consumer (e.g. the ledger); default: a queue nobody drains (bounded) */
  queue?: EvidenceQueue<Evidence>;
  /** how long one audit fetch may take (default 10 s) */
  fetchTimeoutMs?: number;
  /** nodes that may re-execute audits (the swarm the gateway knows); none: the referee does */
  auditors?: () => readonly AuditPeer[];
  /** the model id peer auditors must serve (required for peer audits) */
  modelId?: string;
  /** how long a peer re-execution may take (default 60 s) */
  reexecTimeoutMs?: number;
  /** audits of peers audited at this rate or more hold the step until the verdict (default 0.5) */
  holdAtRate?: number;
  /** background audits waiting at most (default 32); further selections are counted as skipped */
  maxPendingAudits?: number;
}

interface SessionState {
  /** per hop index: step → receipt seen in the chain */
  receipts: Map<number, SignedReceipt>[];
  lastUsed: number;
}

const MAX_SESSIONS = 64;
const MAX_STEPS = 16_384;
const MAX_RECORDS = 10_000;

export class GatewayAccountant {
  readonly queue: EvidenceQueue<Evidence>;
  readonly audits: AuditRecord[] = [];
  readonly evidence: EvidenceRecord[] = [];
  readonly stats = {
    steps: 0,
    receipts: 0,
    receiptBytes: 0,
    checkMs: 0,
    verifyMs: 0,
    auditMs: 0,
    audited: 0,
    failed: 0,
    backgroundFailures: 0,
    /** audits run without holding the step / by a peer node / escalated to the referee */
    backgroundAudits: 0,
    peerAudits: 0,
    escalations: 0,
    /** selections dropped because the background lane was full */
    auditsSkipped: 0,
    incompleteAudits: 0,
  };
  readonly identity: Identity;
  readonly domain: OdsiDomain;
  private readonly referee: Referee;
  private readonly sessions = new Map<string, SessionState>();
  /** last hops' receipt chains: signer|request|session → head */
  private readonly chains = new Map<string, { head: Hex; step: number; seen: Set<string> }>();
  private readonly equivocation: EquivocationDetector;
  private readonly perPeer = new Map<string, number>();
  private readonly passes = new Map<string, number>();
  private defaultRate: number;
  private background: Promise<void> = Promise.resolve();
  /** background audits: one at a time, bounded */
  private lane: Promise<void> = Promise.resolve();
  private pendingAudits = 0;
  /** peers found guilty: every later step through them fails naming them */
  private readonly convicted = new Map<string, string>();
  private readonly refereeProgress = new Map<string, number>();
  private auditorTurn = 0;

  constructor(
    readonly host: OdsiHost,
    private readonly o: AccountabilityOptions,
  ) {
    this.identity = o.identity ?? host.identity;
    this.domain = o.domain ?? deploymentDomain();
    this.queue = o.queue ?? new EvidenceQueue<Evidence>(4096);
    this.referee = new Referee(o.src);
    this.equivocation = new EquivocationDetector(this.domain, { trustSignatures: true, maxSlots: 200_000 });
    const env = Number(process.env.ODSI_AUDIT_RATE);
    this.defaultRate = o.auditRate ?? (Number.isFinite(env) && env >= 0 && env <= 1 ? env : 0);
  }

  /** Audit rate for one peer (peerId given) or for every peer without its own. */
  setAuditRate(rate: number, peerId?: string): void {
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`audit rate must be in [0, 1], got ${rate}`);
    if (peerId) this.perPeer.set(peerId, rate);
    else this.defaultRate = rate;
  }

  rateFor(peerId: string): number {
    const own = this.perPeer.get(peerId);
    if (own !== undefined) return own;
    if (this.o.reputation && this.defaultRate === 0) return auditRate(this.passes.get(peerId) ?? 0);
    return this.defaultRate;
  }

  /** Resolves when background verification and audits have caught up (tests, reports). */
  async settled(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const b = this.background;
      const l = this.lane;
      await b;
      await l;
      if (b === this.background && l === this.lane) return;
    }
  }

  /** Whether audits of this peer hold its steps until the verdict. */
  holds(peerId: string): boolean {
    return this.rateFor(peerId) >= (this.o.holdAtRate ?? 0.5);
  }

  /** Another node serving exactly the hop's layers (round robin), never the hop itself or a banned/convicted one. */
  private pickAuditor(hop: AuditPeer): AuditPeer | undefined {
    const all = this.o.auditors?.() ?? [];
    const ok = all.filter(
      (p) =>
        p.start === hop.start &&
        p.end === hop.end &&
        p.peerId !== hop.peerId &&
        !this.convicted.has(p.peerId) &&
        !this.o.bans?.isBanned?.(p.peerId),
    );
    if (!ok.length) return undefined;
    return ok[this.auditorTurn++ % ok.length];
  }

  async dispose(): Promise<void> {
    await this.settled();
    await this.referee.dispose();
  }

  private state(routeSessionId: string, k: number): SessionState {
    let s = this.sessions.get(routeSessionId);
    if (!s) {
      s = { receipts: Array.from({ length: k }, () => new Map()), lastUsed: 0 };
      this.sessions.set(routeSessionId, s);
      while (this.sessions.size > MAX_SESSIONS) {
        const old = this.sessions.keys().next().value as string;
        this.sessions.delete(old);
        const suffix = `|${requestIdOf(old)}|${sessionIdOf(old)}`.toLowerCase();
        for (const key of [...this.chains.keys()]) if (key.endsWith(suffix)) this.chains.delete(key);
        for (let i = 0; i < 256; i++) {
          this.referee.closeSession(`${old}#${i}`);
          this.refereeProgress.delete(`${old}#${i}`);
        }
      }
    }
    s.lastUsed = Date.now();
    return s;
  }

  private accuse(kind: Evidence['kind'], peerId: string, reason: string, evidence: Evidence): void {
    let accused: Hex;
    try {
      accused = addressOfPeer(peerId);
    } catch {
      accused = '0x0000000000000000000000000000000000000000';
    }
    this.evidence.push({ at: Date.now(), kind, peerId, accused, reason, evidence });
    if (this.evidence.length > MAX_RECORDS) this.evidence.shift();
    this.queue.enqueue(evidence);
    this.passes.set(peerId, 0);
    this.convicted.set(peerId, `${kind}: ${reason}`);
    this.o.bans?.ban(peerId);
  }

  private custodyFailure(e: CustodyError, peerId: string, receipts: SignedReceipt[]): StepFailure {
    this.accuse('custody', peerId, `${e.code}: ${e.message}`, {
      kind: 'custody',
      code: e.code,
      blame: safeAddress(peerId),
      reason: e.message,
      receipts: receipts.filter((r) => r && typeof r === 'object'),
      detectedAt: Date.now(),
    });
    return { code: 'custody', reason: `receipt chain rejected: ${e.code}: ${e.message}`, peerId };
  }

  /** Checks one route step; returns a failure naming the guilty hop, or undefined. */
  async afterStep(v: RouteStepView): Promise<StepFailure | undefined> {
    const t0 = performance.now();
    this.stats.steps++;
    const hops = v.hops;
    const k = hops.length;
    const last = hops[k - 1]!;
    const raw = (v.header as { receipts?: unknown }).receipts;
    const receipts = (Array.isArray(raw) ? raw : []) as SignedReceipt[];
    const st = this.state(v.sessionId, k);
    // a background audit found a hop guilty: its outputs are not accepted any more
    for (const h of hops) {
      const why = this.convicted.get(h.peerId);
      if (why) return { code: 'misbehaviour', reason: `${h.peerId} was found misbehaving by an audit (${why})`, peerId: h.peerId };
    }
    // ---- cheap synchronous checks: completeness and consistency with both ends ----
    try {
      if (!Array.isArray(raw)) throw new CustodyError('malformed', `result carries no receipts (route has ${k} hop(s))`);
      if (raw.length !== k) throw new CustodyError('malformed', `result carries ${raw.length} receipt(s), route has ${k} hop(s)`);
      this.stats.receipts += k;
      this.stats.receiptBytes += linkBytes(raw);
    } catch (e) {
      return this.custodyFailure(e as CustodyError, last.peerId, receipts);
    }
    const sid = sessionIdOf(v.sessionId);
    const rid = requestIdOf(v.sessionId);
    const sent = hashTensor(encodeTensor(v.input.hidden!, v.dtype));
    const got = hashTensor(v.payload);
    for (let i = 0; i < k; i++) {
      // a defect in receipt i that hop i+1 let through is hop i+1's doing (it checks its upstream)
      const blame = i < k - 1 ? hops[i + 1]!.peerId : hops[i]!.peerId;
      try {
        const s = receipts[i]!;
        if (!s || typeof s !== 'object') throw new CustodyError('malformed', `receipt ${i} is not an object`);
        try {
          assertWellFormed('ExecutionReceipt', s.record);
        } catch (e) {
          throw new CustodyError('malformed', `receipt ${i}: ${(e as Error).message}`);
        }
        const r = s.record;
        if (r.signer.toLowerCase() !== addressOfPeer(hops[i]!.peerId).toLowerCase())
          throw new CustodyError('bad_signature', `receipt ${i} names signer ${r.signer}, hop ${i} is ${hops[i]!.peerId}`);
        if (r.sessionId.toLowerCase() !== sid || r.requestId.toLowerCase() !== rid)
          throw new CustodyError('cross_session', `receipt ${i} belongs to another session`);
        if (r.step !== v.header.step || r.pos !== v.header.pos || r.nTokens !== v.header.nTokens)
          throw new CustodyError(
            'slot_mismatch',
            `receipt ${i} is for step ${r.step} pos ${r.pos}, the result for step ${v.header.step} pos ${v.header.pos}`,
          );
        if (r.layerStart !== hops[i]!.start || r.layerEnd !== hops[i]!.end)
          throw new CustodyError(
            'slot_mismatch',
            `receipt ${i} covers layers ${r.layerStart}:${r.layerEnd}, hop ${i} serves ${hops[i]!.start}:${hops[i]!.end}`,
          );
        if (i === 0 && r.inputHash.toLowerCase() !== sent.toLowerCase())
          throw Object.assign(
            new CustodyError(
              'input_mismatch',
              `first hop signed input ${r.inputHash.slice(0, 10)}…, the gateway sent ${sent.slice(0, 10)}…`,
            ),
            { self: true },
          );
        if (i > 0 && r.inputHash.toLowerCase() !== receipts[i - 1]!.record.outputHash.toLowerCase())
          throw Object.assign(
            new CustodyError(
              'input_mismatch',
              `hop ${i} signed input ${r.inputHash.slice(0, 10)}…, hop ${i - 1} signed output ${receipts[i - 1]!.record.outputHash.slice(0, 10)}…`,
            ),
            { self: true },
          );
        if (i === k - 1 && r.outputHash.toLowerCase() !== got.toLowerCase())
          throw Object.assign(
            new CustodyError(
              'input_mismatch',
              `last hop signed output ${r.outputHash.slice(0, 10)}…, the gateway received ${got.slice(0, 10)}…`,
            ),
            { self: true },
          );
      } catch (e) {
        if (!(e instanceof CustodyError)) throw e;
        return this.custodyFailure(e, (e as { self?: boolean }).self ? hops[i]!.peerId : blame, receipts);
      }
    }
    for (let i = 0; i < k; i++) {
      const m = st.receipts[i]!;
      if (m.size >= MAX_STEPS) m.delete(m.keys().next().value as number);
      m.set(v.header.step, receipts[i]!);
    }
    // ---- which hops get audited this step ----
    const picked: number[] = [];
    for (let i = 0; i < k; i++) {
      const rate = this.rateFor(hops[i]!.peerId);
      if (rate >= 1) picked.push(i);
      else if (rate > 0) {
        // keyed by the signed output hash and a beacon drawn after the receipt was signed: the
        // node cannot know at execution time which of its steps get checked
        if (auditSelected(receipts[i]!.record.outputHash, `0x${bytesToHex(randomBytes(32))}` as Hex, rate)) picked.push(i);
      }
    }
    this.stats.checkMs += performance.now() - t0;
    const held = picked.filter((i) => this.holds(hops[i]!.peerId));
    const full = () => this.verifyFull(v, receipts, picked.length > 0);
    if (!held.length) {
      let verified!: (ok: boolean) => void;
      const checked = new Promise<boolean>((r) => (verified = r));
      // setImmediate: let the gateway sample and send the next step before spending CPU here
      this.background = this.background.then(async () => {
        await new Promise<void>((r) => setImmediate(r));
        let ok = false;
        try {
          ok = !full();
          if (!ok) this.stats.backgroundFailures++;
        } catch {
          this.stats.backgroundFailures++; // never let one bad record stall the queue
        } finally {
          verified(ok);
        }
      });
      for (const i of picked) this.enqueueAudit(v, st, i, checked);
      return undefined;
    }
    // held: signatures, chains and equivocation first (serially after earlier background work)
    await this.background;
    const f = full();
    if (f) return f;
    for (const i of picked) if (!held.includes(i)) this.enqueueAudit(v, st, i, Promise.resolve(true));
    for (const i of held) {
      const fail = await this.audit(v, st, i, 'hold');
      if (fail) return fail;
    }
    return undefined;
  }

  /**
   * Background audit: never delays the step; a guilty verdict convicts the peer for later
   * steps. `verified`: the step's signatures stood (evidence is never built on bad ones).
   */
  private enqueueAudit(v: RouteStepView, st: SessionState, i: number, verified: Promise<boolean>): void {
    if (this.pendingAudits >= (this.o.maxPendingAudits ?? 32)) {
      this.stats.auditsSkipped++;
      return;
    }
    this.pendingAudits++;
    this.lane = this.lane.then(async () => {
      try {
        if (await verified) await this.audit(v, st, i, 'background');
      } catch {
        this.stats.backgroundFailures++;
      } finally {
        this.pendingAudits--;
      }
    });
  }

  /**
   * Signatures, per-signer chains and equivocation. Each hop checks its upstream's signature
   * and chain before computing, so the gateway verifies, per step, only what nobody else
   * checks — the last hop's receipt — and every receipt of an audited step (evidence must
   * stand on valid signatures). One signature recovery per receipt verified.
   */
  private verifyFull(v: RouteStepView, receipts: SignedReceipt[], all: boolean): StepFailure | undefined {
    const t0 = performance.now();
    const hops = v.hops;
    const k = receipts.length;
    try {
      for (let i = all ? 0 : k - 1; i < k; i++) {
        const s = receipts[i]!;
        const c = checkSigned('ExecutionReceipt', s, this.domain);
        if (!c.ok) {
          // an invalid receipt that hop i+1 passed on is hop i+1's doing; the last hop's is its own
          const peer = hops[i < k - 1 ? i + 1 : i]!.peerId;
          return this.custodyFailure(
            new CustodyError(c.malformed ? 'malformed' : 'bad_signature', `receipt ${i}: ${c.reason}`),
            peer,
            receipts,
          );
        }
        if (i === k - 1) {
          const fail = this.chainAppend(s, c.digest);
          if (fail) return this.custodyFailure(fail, hops[i]!.peerId, receipts);
        }
      }
      for (let i = 0; i < k; i++) {
        const eq = this.equivocation.observe(receipts[i]!);
        // the detector trusts signatures for speed: re-check both records before accusing anyone
        if (eq && verifyEquivocationEvidence(eq, this.domain)) {
          this.accuse('equivocation', hops[i]!.peerId, `two signed outputs for step ${eq.slot.step}`, eq);
          return {
            code: 'misbehaviour',
            reason: `${hops[i]!.peerId} signed two different outputs for step ${eq.slot.step}`,
            peerId: hops[i]!.peerId,
          };
        }
      }
      return undefined;
    } finally {
      this.stats.verifyMs += performance.now() - t0;
    }
  }

  /** Per-signer hash chain of the last hop (replays, forks, step order), on already verified digests. */
  private chainAppend(s: SignedReceipt, digest: Hex): CustodyError | undefined {
    const r = s.record;
    const key = `${r.signer}|${r.requestId}|${r.sessionId}`.toLowerCase();
    let c = this.chains.get(key);
    if (!c) {
      c = { head: ZERO_HASH, step: -1, seen: new Set() };
      this.chains.set(key, c);
      if (this.chains.size > 4096) this.chains.delete(this.chains.keys().next().value as string);
    }
    const d = digest.toLowerCase();
    if (c.seen.has(d)) return new CustodyError('replay', `receipt ${d.slice(0, 10)}… (step ${r.step}) seen before`, r.signer);
    if (r.step <= c.step)
      return new CustodyError(r.step === c.step ? 'replay' : 'step_order', `step ${r.step} after step ${c.step}`, r.signer);
    if (r.prevReceiptHash.toLowerCase() !== c.head.toLowerCase())
      return new CustodyError(
        'broken_chain',
        `prevReceiptHash ${r.prevReceiptHash.slice(0, 10)}… does not link to ${c.head.slice(0, 10)}…`,
        r.signer,
      );
    c.seen.add(d);
    if (c.seen.size > 16_384) c.seen.delete(c.seen.values().next().value as string);
    c.head = digest;
    c.step = r.step;
    return undefined;
  }

  /** Audits hop i's step (route-audit.ts); evidence for every finding, a failure when the hop is guilty. */
  private async audit(v: RouteStepView, st: SessionState, i: number, mode: 'hold' | 'background'): Promise<StepFailure | undefined> {
    const t0 = performance.now();
    const hop = v.hops[i]!;
    const step = v.header.step;
    const dim = v.input.hidden!.length / v.input.nTokens;
    let res: AuditOutcome;
    try {
      res = await runAudit(
        {
          host: this.host,
          identity: this.identity,
          domain: this.domain,
          referee: this.referee,
          modelId: this.o.modelId,
          pickAuditor: (h) => this.pickAuditor(h),
          fetchTimeoutMs: this.o.fetchTimeoutMs ?? 10_000,
          reexecTimeoutMs: this.o.reexecTimeoutMs ?? 60_000,
          refereeProgress: this.refereeProgress,
        },
        { routeSessionId: v.sessionId, step, hopIndex: i, hop, receipts: st.receipts[i]!, dim },
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
    const rec: AuditRecord = {
      at: Date.now(),
      routeSessionId: v.sessionId,
      step,
      hop: i,
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
    const why = res.findings.find((f) => f.peerId === hop.peerId)?.reason ?? res.incomplete ?? res.unanswered;
    if (why) rec.reason = why;
    if (res.incomplete) rec.incomplete = true;
    if (res.notes.length) rec.reason = [rec.reason, ...res.notes].filter(Boolean).join('; ');
    this.audits.push(rec);
    if (this.audits.length > MAX_RECORDS) this.audits.shift();
    this.stats.audited++;
    this.stats.auditMs += rec.ms;
    if (mode === 'background') this.stats.backgroundAudits++;
    if (res.executor !== 'referee') this.stats.peerAudits++;
    if (res.escalated) this.stats.escalations++;
    if (res.incomplete) this.stats.incompleteAudits++;
    for (const f of res.findings) this.accuse(f.kind, f.peerId, f.reason, f.evidence);
    if (res.workerPass === false) {
      this.stats.failed++;
      return {
        code: 'misbehaviour',
        reason: `audit of ${hop.peerId} (layers ${hop.start}:${hop.end}, step ${step}): ${why}`,
        peerId: hop.peerId,
      };
    }
    if (res.unanswered) {
      this.stats.failed++;
      // a held audit the worker does not answer cannot release the step
      return mode === 'hold' ? { code: 'audit_unanswered', reason: res.unanswered, peerId: hop.peerId } : undefined;
    }
    if (res.workerPass) this.passes.set(hop.peerId, (this.passes.get(hop.peerId) ?? 0) + 1);
    return undefined;
  }
}

/** bytes the receipts add on the wire for one step: hop i forwards receipts 0..i */
function linkBytes(receipts: unknown[]): number {
  let total = 0;
  let prefix = 0;
  for (const r of receipts) {
    prefix += JSON.stringify(r).length + 1;
    total += prefix;
  }
  return total;
}

function safeAddress(peerId: string): Hex | undefined {
  try {
    return addressOfPeer(peerId);
  } catch {
    return undefined;
  }
}

const accountants = new WeakMap<OdsiHost, GatewayAccountant>();

/** Turn accountability on for a gateway host (no-op, undefined, when ODSI_ACCOUNTABILITY=0). */
export function enableAccountability(host: OdsiHost, o: AccountabilityOptions): GatewayAccountant | undefined {
  if (!accountabilityEnabled()) return undefined;
  let a = accountants.get(host);
  if (!a) {
    a = new GatewayAccountant(host, o);
    accountants.set(host, a);
  }
  return a;
}

export function accountabilityOf(host: OdsiHost): GatewayAccountant | undefined {
  return accountants.get(host);
}

/** Called by RouteStage for every RESULT: undefined = accept, else fail the step naming the culprit. */
export async function verifyRouteStep(host: OdsiHost, v: RouteStepView): Promise<StepFailure | undefined> {
  const a = accountants.get(host);
  return a ? a.afterStep(v) : undefined;
}
