// Never sign twice for one slot: the node-side half of slashing protection. A receipt slot is
// (requestId, sessionId, step) of this node's layer range (checks/equivocation.ts); two receipts
// for one slot with different outputs are equivocation evidence against the node. The guard
// remembers, per slot, the input it accepted (before compute) and the receipt it signed, for
// the challenge window, and answers:
// - claim: a second, different input for a slot already claimed is refused (nothing computed,
//   nothing signed); the same input again (a retransmission) may proceed;
// - signed: after compute, a slot already signed gets the receipt already given when the output
//   matches, and no receipt at all when it does not.
// Bounded: at most maxSlots remembered; when full of slots still inside the window, new slots
// are refused (the node answers busy) rather than forgetting a signed one early.

import type { Hex } from '../records/eip712.js';
import type { SignedReceipt } from '../records/receipts.js';

export interface SlotGuardLimits {
  /** how long a slot is remembered after it was claimed */
  windowMs: number;
  maxSlots: number;
}

interface Slot {
  inputHash: Hex;
  at: number;
  receipt?: SignedReceipt;
}

export type ClaimResult = { ok: true } | { ok: false; code: 'bad_message' | 'busy'; reason: string };

export class SlotGuard {
  /** insertion order = claim order, so expired slots are at the front */
  private readonly slots = new Map<string, Slot>();

  constructor(private readonly limits: SlotGuardLimits) {}

  get size(): number {
    return this.slots.size;
  }

  static key(requestId: Hex, sessionId: Hex, step: number): string {
    return `${requestId}|${sessionId}|${step}`.toLowerCase();
  }

  /** Before compute: may this input be run (and later signed) for this slot? */
  claim(key: string, inputHash: Hex, now = Date.now()): ClaimResult {
    const s = this.slots.get(key);
    if (s) {
      if (s.inputHash.toLowerCase() === inputHash.toLowerCase()) return { ok: true };
      return { ok: false, code: 'bad_message', reason: 'this step of the session was already run on a different input; a retry must be a new step' };
    }
    this.expire(now);
    if (this.slots.size >= this.limits.maxSlots)
      return { ok: false, code: 'busy', reason: `this node remembers ${this.limits.maxSlots} signed steps; try again later` };
    this.slots.set(key, { inputHash, at: now });
    return { ok: true };
  }

  /**
   * At signing: the receipt to use for this slot. `sign` is called only when the slot has no
   * receipt yet; a signed slot returns its receipt when the output matches, undefined when not.
   */
  signOnce(key: string, inputHash: Hex, outputHash: Hex, sign: () => SignedReceipt): SignedReceipt | undefined {
    const s = this.slots.get(key);
    if (s && s.inputHash.toLowerCase() !== inputHash.toLowerCase()) return undefined;
    if (s?.receipt) return s.receipt.record.outputHash.toLowerCase() === outputHash.toLowerCase() ? s.receipt : undefined;
    const receipt = sign();
    if (s) s.receipt = receipt;
    else this.slots.set(key, { inputHash, at: Date.now(), receipt });
    return receipt;
  }

  private expire(now: number): void {
    for (const [k, s] of this.slots) {
      if (now - s.at < this.limits.windowMs) return;
      this.slots.delete(k);
    }
  }
}
