// Equivocation: one signer, one slot, two validly signed receipts with different outputs.
// Protocol rule: a node signs at most one receipt per slot = (request, session, step,
// layerStart, layerEnd); a retry is a new step. So two different outputs for one slot
// need no re-execution to prove a fault. The session is part of the slot so that a
// gateway re-routing a request onto a fresh session (new inputs, new outputs) never
// incriminates an honest node.

import type { ExecutionReceipt, Hex, OdsiDomain } from '../records/eip712.js';
import { checkSigned, type SignedReceipt } from '../records/receipts.js';
import type { EquivocationEvidence } from '../records/evidence.js';

export function slotKey(r: ExecutionReceipt): string {
  return `${r.signer}|${r.requestId}|${r.sessionId}|${r.step}|${r.layerStart}|${r.layerEnd}`.toLowerCase();
}

const eqHex = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/**
 * Evidence if `a` and `b` are both validly signed by the same signer for the same slot
 * with different output hashes; null otherwise (including when either is invalid).
 */
export function detectEquivocation(a: SignedReceipt, b: SignedReceipt, domain: OdsiDomain, now = Date.now()): EquivocationEvidence | null {
  if (!checkSigned('ExecutionReceipt', a, domain).ok || !checkSigned('ExecutionReceipt', b, domain).ok) return null;
  const ra = a.record;
  const rb = b.record;
  if (slotKey(ra) !== slotKey(rb) || eqHex(ra.outputHash, rb.outputHash)) return null;
  return {
    kind: 'equivocation',
    signer: ra.signer,
    slot: { requestId: ra.requestId, sessionId: ra.sessionId, step: ra.step, layerStart: ra.layerStart, layerEnd: ra.layerEnd },
    a,
    b,
    sameInput: eqHex(ra.inputHash, rb.inputHash),
    detectedAt: now,
  };
}

/** Re-checks evidence received from someone else (signatures, same slot, outputs differ). */
export function verifyEquivocationEvidence(ev: EquivocationEvidence, domain: OdsiDomain): boolean {
  const again = detectEquivocation(ev.a, ev.b, domain, ev.detectedAt);
  return again !== null && eqHex(again.signer, ev.signer);
}

export interface DetectorOptions {
  /** slots remembered; the oldest are forgotten first (bounded memory) */
  maxSlots?: number;
  /** skip signature checks for receipts the caller has already verified */
  trustSignatures?: boolean;
  onEvidence?: (ev: EquivocationEvidence) => void;
}

/**
 * Remembers the first valid receipt seen per slot and reports a later valid one for the
 * same slot with a different output. Feed it every receipt an honest party sees (gateway,
 * auditors, downstream hops); equivocation is caught once both versions reach one party.
 */
export class EquivocationDetector {
  private readonly slots = new Map<string, SignedReceipt>();
  private readonly maxSlots: number;
  private reported = 0;

  constructor(
    private readonly domain: OdsiDomain,
    private readonly opts: DetectorOptions = {},
  ) {
    this.maxSlots = opts.maxSlots ?? 100_000;
  }

  get size(): number {
    return this.slots.size;
  }
  get evidenceCount(): number {
    return this.reported;
  }

  /** Returns evidence when `signed` contradicts an earlier receipt; invalid receipts are ignored (null). */
  observe(signed: SignedReceipt, now = Date.now()): EquivocationEvidence | null {
    if (!this.opts.trustSignatures && !checkSigned('ExecutionReceipt', signed, this.domain).ok) return null;
    const key = slotKey(signed.record);
    const first = this.slots.get(key);
    if (!first) {
      if (this.slots.size >= this.maxSlots) this.slots.delete(this.slots.keys().next().value as string);
      this.slots.set(key, signed);
      return null;
    }
    if (eqHex(first.record.outputHash, signed.record.outputHash)) return null;
    const r = signed.record;
    const ev: EquivocationEvidence = {
      kind: 'equivocation',
      signer: r.signer,
      slot: { requestId: r.requestId, sessionId: r.sessionId, step: r.step, layerStart: r.layerStart, layerEnd: r.layerEnd },
      a: first,
      b: signed,
      sameInput: eqHex(first.record.inputHash, r.inputHash),
      detectedAt: now,
    };
    this.reported++;
    this.opts.onEvidence?.(ev);
    return ev;
  }

  /** Drops remembered slots of one request (after its challenge window). */
  forgetRequest(requestId: Hex): void {
    const needle = `|${requestId.toLowerCase()}|`;
    for (const k of [...this.slots.keys()]) if (k.includes(needle)) this.slots.delete(k);
  }
}
