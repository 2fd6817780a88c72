// Never sign twice for one slot: the node-side half of slashing protection. A receipt slot is
// (requestId, sessionId, step) of this node's layer range (checks/equivocation.ts); two receipts
// for one slot with different outputs are equivocation evidence against the node. The guard
// remembers, per slot, the input and the receipt it signed, for the challenge window (steps
// of one session id run one after another, and one id is open at most once at a time, so
// nothing else can sign a slot between claim and signOnce), and answers:
// - claim: a different input for a slot already signed is refused before compute (nothing
//   computed, nothing signed); the same input again (a retransmission) may proceed;
// - signOnce: after compute, a slot already signed is signed again only for the same input and
//   output (a retransmission: the same receipt, or one with the same output hash, which is no
//   equivocation), and gets no receipt at all otherwise.
// Bounded: about maxSlots remembered; when full of slots still inside the window, new steps are
// refused before compute (the node answers busy) rather than forgetting a signed slot early. One
// owner (the gateway that signed the session's OPEN) may hold at most maxSlotsPerOwner of them,
// so a peer filling the guard with its own cheap steps is refused alone, not everyone.
// Across restarts: with a journal (slashing-protection.ts, a SQLite file) every slot is written
// durably before its receipt is signed and the slots inside the window are loaded at start, so
// a node killed mid-session and restarted with the same key still signs each slot once.

import type { Hex } from '../records/eip712.js';
import type { SignedReceipt } from '../records/receipts.js';
import type { SlotJournal } from './slashing-protection.js';

export interface SlotGuardLimits {
  /** how long a slot is remembered after it was claimed */
  windowMs: number;
  maxSlots: number;
  /** slots one owner may hold (default: all) */
  maxSlotsPerOwner?: number;
}

/** what is kept per signed slot (hashes only: about 0.5 KB with its key) */
interface Slot {
  inputHash: string;
  outputHash: string;
  owner: string;
  at: number;
}

export type ClaimResult = { ok: true } | { ok: false; code: 'bad_message' | 'busy'; reason: string };

export class SlotGuard {
  /** insertion order = claim order, so expired slots are at the front */
  private readonly slots = new Map<string, Slot>();
  /** slots held per owner */
  private readonly held = new Map<string, number>();
  /** slots forgotten in memory but still on the journal (pruned in batches) */
  private unpruned = 0;

  /** `journal`: the durable record (the slots inside the window are loaded from it now) */
  constructor(
    private readonly limits: SlotGuardLimits,
    private readonly journal?: SlotJournal,
    now = Date.now(),
  ) {
    for (const s of journal?.load(now - limits.windowMs + 1) ?? []) this.remember(s.key, s);
  }

  private remember(key: string, s: Slot): void {
    this.slots.set(key, { inputHash: s.inputHash, outputHash: s.outputHash, owner: s.owner, at: s.at });
    this.held.set(s.owner, (this.held.get(s.owner) ?? 0) + 1);
  }

  get size(): number {
    return this.slots.size;
  }

  static key(requestId: Hex, sessionId: Hex, step: number): string {
    return `${requestId}|${sessionId}|${step}`.toLowerCase();
  }

  /**
   * Before compute: may this input be run for this slot? Refused when the slot is already signed
   * for another input (nothing is recorded here: a step refused later, e.g. by the custody
   * check, leaves its slot free), or when the guard is full.
   */
  claim(key: string, inputHash: Hex, owner = '', now = Date.now()): ClaimResult {
    const s = this.slots.get(key);
    if (s) {
      if (s.inputHash === inputHash.toLowerCase()) return { ok: true };
      return {
        ok: false,
        code: 'bad_message',
        reason: 'this step of the session was already signed for a different input; a retry must be a new step',
      };
    }
    this.expire(now);
    if (this.slots.size >= this.limits.maxSlots)
      return { ok: false, code: 'busy', reason: `this node remembers ${this.limits.maxSlots} signed steps; try again later` };
    const mine = this.held.get(owner) ?? 0;
    if (mine >= (this.limits.maxSlotsPerOwner ?? Infinity))
      return { ok: false, code: 'busy', reason: `your sessions hold ${mine} signed steps in the challenge window here; try again later` };
    return { ok: true };
  }

  /**
   * At signing: `sign` runs only when the slot is free, or signed before for exactly this input
   * and output (a retransmission: the signer gives the receipt already given, or one with the
   * same output); anything else for a signed slot gets no receipt (undefined). A new slot is
   * on the journal before `sign` runs (a journal that cannot write: it throws, nothing signed).
   */
  signOnce(key: string, inputHash: Hex, outputHash: Hex, sign: () => SignedReceipt, owner = ''): SignedReceipt | undefined {
    const s = this.slots.get(key);
    if (s) return s.inputHash === inputHash.toLowerCase() && s.outputHash === outputHash.toLowerCase() ? sign() : undefined;
    const slot: Slot = { inputHash: inputHash.toLowerCase(), outputHash: outputHash.toLowerCase(), owner, at: Date.now() };
    this.journal?.record({ key, ...slot });
    this.remember(key, slot);
    return sign();
  }

  private expire(now: number): void {
    for (const [k, s] of this.slots) {
      if (now - s.at < this.limits.windowMs) break;
      this.slots.delete(k);
      const n = (this.held.get(s.owner) ?? 1) - 1;
      if (n > 0) this.held.set(s.owner, n);
      else this.held.delete(s.owner);
      this.unpruned++;
    }
    // the journal forgets in batches (one DELETE per 256 expired slots, or when memory is full)
    if (this.journal && this.unpruned > 0 && (this.unpruned >= 256 || this.slots.size >= this.limits.maxSlots)) {
      this.journal.prune(now - this.limits.windowMs + 1); // exactly the expired ones, whatever their order
      this.unpruned = 0;
    }
  }
}
