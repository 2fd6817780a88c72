// The gateway's check of every route step (the route's StepVerifier).
//
// Every RESULT carries one signed receipt per hop. Per step the gateway checks, cheaply and
// synchronously, that the chain is complete and consistent with what it sent and received
// (checkStepChain: hashes of both ends, handoffs, slots, signers = the route's peers).
// Signature verification, the last hop's hash chain (replays) and equivocation tracking run
// on a serial background queue off the token path — or before the verdict when a selected
// audit holds the step. Selected hops go to the AuditScheduler. A peer found guilty by a
// background audit fails every later step through it, naming it, so the resilient route
// moves around it and replays.
//
// Blame: each hop checks its upstream's receipt before computing, so a defect in receipt i
// that hop i+1 let through is hop i+1's doing; a hash mismatch at either end of hop i's own
// receipt (what it says it got or gave) is hop i's.

import type { RouteHopInfo, RouteStepView, StepFailure, StepVerifier } from '../../route/step-verifier.js';
import { ZERO_HASH, type Hex, type OdsiDomain } from '../records/eip712.js';
import { checkSigned, hashTensor, type SignedReceipt } from '../records/receipts.js';
import { RECEIPT_FIXED_BYTES } from '../../protocol/receipt-codec.js';
import { CustodyError, checkStepChain } from '../checks/custody.js';
import { EquivocationDetector, verifyEquivocationEvidence } from '../checks/equivocation.js';
import { addressOfPeer, requestIdOf, sessionIdOf } from '../records/wire.js';
import type { AuditScheduler } from './audit-scheduler.js';
import { safeAddress, type Verdicts } from './verdicts.js';

export interface RouteStepChecksDeps {
  domain: OdsiDomain;
  verdicts: Verdicts;
  scheduler: AuditScheduler;
  /** each step's receipts (one per hop) once their chain of custody holds (e.g. payment credits) */
  onReceipts?: (receipts: readonly SignedReceipt[]) => void;
}

/** per hop index: step → the receipt seen in the chain (what audits of that hop replay) */
type SessionReceipts = Map<number, SignedReceipt>[];

const MAX_SESSIONS = 64;
const MAX_STEPS = 16_384;

export class RouteStepChecks implements StepVerifier {
  private readonly sessions = new Map<string, SessionReceipts>();
  /** last hops' receipt chains: signer|request|session → head */
  private readonly chains = new Map<string, { head: Hex; step: number; seen: Set<string> }>();
  private readonly equivocation: EquivocationDetector;
  /** signature verification off the token path, one step at a time */
  private background: Promise<void> = Promise.resolve();

  constructor(private readonly d: RouteStepChecksDeps) {
    this.equivocation = new EquivocationDetector(d.domain, { trustSignatures: true, maxSlots: 200_000 });
  }

  /** The background queue's current tail (settles when the steps checked so far are verified). */
  idle(): Promise<void> {
    return this.background;
  }

  /** Checks one route step; returns a failure naming the guilty hop, or undefined. */
  async afterStep(v: RouteStepView): Promise<StepFailure | undefined> {
    const t0 = performance.now();
    const stats = this.d.verdicts.stats;
    stats.steps++;
    const hops = v.hops;
    // a background audit found a hop guilty: its outputs are not accepted any more
    for (const h of hops) {
      const why = this.d.verdicts.convictionOf(h.peerId);
      if (why) return { code: 'misbehaviour', reason: `${h.peerId} was found misbehaving by an audit (${why})`, peerId: h.peerId };
    }
    // ---- cheap synchronous checks: completeness and consistency with both ends ----
    const raw = (v.header as { receipts?: unknown }).receipts;
    let receipts: SignedReceipt[];
    try {
      receipts = checkStepChain(raw, {
        hops: hops.map((h) => ({ signer: addressOfPeer(h.peerId), start: h.start, end: h.end })),
        slot: {
          requestId: requestIdOf(v.sessionId),
          sessionId: sessionIdOf(v.sessionId),
          step: v.header.step,
          pos: v.header.pos,
          nTokens: v.header.nTokens,
        },
        sentHash: hashTensor(v.sent),
        receivedHash: hashTensor(v.payload),
      });
    } catch (e) {
      if (!(e instanceof CustodyError)) throw e;
      const shown = (Array.isArray(raw) ? raw : []).filter((r): r is SignedReceipt => !!r && typeof r === 'object');
      return this.custodyFailure(e, blameFor(e, hops), shown);
    }
    stats.receipts += receipts.length;
    stats.receiptBytes += linkBytes(receipts);
    this.d.onReceipts?.(receipts);
    const st = this.session(v.sessionId, hops.length);
    receipts.forEach((r, i) => {
      const m = st[i]!;
      if (m.size >= MAX_STEPS) m.delete(m.keys().next().value as number);
      m.set(v.header.step, r);
    });
    // ---- which hops get audited this step ----
    const scheduler = this.d.scheduler;
    const picked = scheduler.select(hops, receipts);
    stats.checkMs += performance.now() - t0;
    const dim = v.input.hidden!.length / v.input.nTokens;
    const target = (i: number) => ({ routeSessionId: v.sessionId, step: v.header.step, hopIndex: i, hop: hops[i]!, receipts: st[i]!, dim });
    const held = picked.filter((i) => scheduler.holds(hops[i]!.peerId));
    const full = () => this.verifyFull(hops, receipts, picked.length > 0);
    if (!held.length) {
      let verified!: (ok: boolean) => void;
      const checked = new Promise<boolean>((r) => (verified = r));
      // setImmediate: let the gateway sample and send the next step before spending CPU here
      this.background = this.background.then(async () => {
        await new Promise<void>((r) => setImmediate(r));
        let ok = false;
        try {
          ok = !full();
          if (!ok) stats.backgroundFailures++;
        } catch {
          stats.backgroundFailures++; // never let one bad record stall the queue
        } finally {
          verified(ok);
        }
      });
      for (const i of picked) scheduler.enqueue(target(i), checked);
      return undefined;
    }
    // held: signatures, chains and equivocation first (serially after earlier background work)
    await this.background;
    const f = full();
    if (f) return f;
    for (const i of picked) if (!held.includes(i)) scheduler.enqueue(target(i), Promise.resolve(true));
    for (const i of held) {
      const fail = await scheduler.audit(target(i), 'hold');
      if (fail) return fail;
    }
    return undefined;
  }

  private session(routeSessionId: string, k: number): SessionReceipts {
    let s = this.sessions.get(routeSessionId);
    if (!s) {
      s = Array.from({ length: k }, () => new Map());
      this.sessions.set(routeSessionId, s);
      while (this.sessions.size > MAX_SESSIONS) this.forget(this.sessions.keys().next().value as string);
    }
    return s;
  }

  /** the receipts of hop `hopIndex` of a route session seen so far, by step (undefined: none kept) */
  receiptsOf(routeSessionId: string, hopIndex: number): ReadonlyMap<number, SignedReceipt> | undefined {
    return this.sessions.get(routeSessionId)?.[hopIndex];
  }

  private forget(routeSessionId: string): void {
    this.sessions.delete(routeSessionId);
    const suffix = `|${requestIdOf(routeSessionId)}|${sessionIdOf(routeSessionId)}`.toLowerCase();
    for (const key of [...this.chains.keys()]) if (key.endsWith(suffix)) this.chains.delete(key);
    this.d.scheduler.forgetRoute(routeSessionId);
  }

  private custodyFailure(e: CustodyError, peerId: string, receipts: SignedReceipt[]): StepFailure {
    this.d.verdicts.convict('custody', peerId, `${e.code}: ${e.message}`, {
      kind: 'custody',
      code: e.code,
      blame: safeAddress(peerId),
      reason: e.message,
      receipts,
      detectedAt: Date.now(),
    });
    return { code: 'custody', reason: `receipt chain rejected: ${e.code}: ${e.message}`, peerId };
  }

  /**
   * Signatures, per-signer chains and equivocation. Each hop checks its upstream's signature
   * and chain before computing, so the gateway verifies, per step, only what nobody else
   * checks — the last hop's receipt — and every receipt of an audited step (evidence must
   * stand on valid signatures). One signature recovery per receipt verified.
   */
  private verifyFull(hops: readonly RouteHopInfo[], receipts: SignedReceipt[], all: boolean): StepFailure | undefined {
    const t0 = performance.now();
    const k = receipts.length;
    const domain = this.d.domain;
    try {
      for (let i = all ? 0 : k - 1; i < k; i++) {
        const s = receipts[i]!;
        const c = checkSigned('ExecutionReceipt', s, domain);
        if (!c.ok) {
          const e = new CustodyError(c.malformed ? 'malformed' : 'bad_signature', `receipt ${i}: ${c.reason}`, undefined, i);
          return this.custodyFailure(e, blameFor(e, hops), receipts);
        }
        if (i === k - 1) {
          const fail = this.chainAppend(s, c.digest);
          if (fail) return this.custodyFailure(fail, hops[i]!.peerId, receipts);
        }
      }
      for (let i = 0; i < k; i++) {
        const eq = this.equivocation.observe(receipts[i]!);
        // the detector trusts signatures for speed: re-check both records before accusing anyone
        if (eq && verifyEquivocationEvidence(eq, domain)) {
          this.d.verdicts.convict('equivocation', hops[i]!.peerId, `two signed outputs for step ${eq.slot.step}`, eq);
          return {
            code: 'misbehaviour',
            reason: `${hops[i]!.peerId} signed two different outputs for step ${eq.slot.step}`,
            peerId: hops[i]!.peerId,
          };
        }
      }
      return undefined;
    } finally {
      this.d.verdicts.stats.verifyMs += performance.now() - t0;
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
}

/**
 * The hop a defect in a step's receipt chain is blamed on: a defect in receipt i is the next
 * hop's (it passed it on unchecked), the last receipt's is the last hop's own, and so is a
 * hash mismatch at either end of hop i's own receipt; a chain of the wrong length is the
 * last hop's (it assembled the RESULT).
 */
export function blameFor(e: CustodyError, hops: readonly RouteHopInfo[]): string {
  const last = hops.length - 1;
  if (e.at === undefined) return hops[last]!.peerId;
  if (e.code === 'input_mismatch') return hops[e.at]!.peerId;
  return hops[Math.min(e.at + 1, last)]!.peerId;
}

/** bytes the receipts add on the wire for one step: hop i forwards receipts 0..i in one RECEIPTS message (receipt-codec.ts) */
function linkBytes(receipts: readonly SignedReceipt[]): number {
  let total = 0;
  let prefix = 1;
  for (const r of receipts) {
    prefix += RECEIPT_FIXED_BYTES + Buffer.byteLength(r.record.profile);
    total += prefix;
  }
  return total;
}
