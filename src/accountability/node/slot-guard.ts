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
// Across restarts: with a journal (slashing-protection.ts, a SQLite file) each session is
// written durably when it opens (open(), awaited before the node forwards the OPEN; off the
// main thread), refreshed in the background every quarter window while it lasts, and signOnce
// gives no receipt for a session whose record is missing or older than half a window; at start
// the sessions signed for inside the window are loaded and none of their steps is signed again,
// so a node killed mid-session and restarted with the same key still signs each slot once. One
// durable write per session, none per token and none on the step path.

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
  /** sessions signed for before this process started (from the journal): none of their steps is signed again */
  private readonly before = new Map<string, number>();
  /** sessions of this process on the journal, and when each was last written there */
  private readonly recorded = new Map<string, number>();
  /** journal rows past the window not yet deleted (pruned in batches) */
  private unpruned = 0;
  /** sessions being written to the journal now */
  private readonly writing = new Map<string, Promise<void>>();

  /** `journal`: the durable record (the sessions signed for inside the window are loaded from it now) */
  constructor(
    private readonly limits: SlotGuardLimits,
    private readonly journal?: SlotJournal,
    now = Date.now(),
  ) {
    for (const s of journal?.load(now - limits.windowMs + 1) ?? []) this.before.set(s.session, s.at);
  }

  /** slots remembered, and sessions signed for before a restart */
  get size(): number {
    return this.slots.size + this.before.size;
  }

  static key(requestId: Hex, sessionId: Hex, step: number): string {
    return `${requestId}|${sessionId}|${step}`.toLowerCase();
  }

  /** the session part of slot keys (what the journal records) */
  static session(requestId: Hex, sessionId: Hex): string {
    return `${requestId}|${sessionId}`.toLowerCase();
  }

  /**
   * A session opens (before any step of it can be signed): resolves once it is on the journal
   * (at once without one, or when it was written less than a quarter window ago). Rejects when
   * the journal cannot write: the session must then be refused, none of its steps gets a receipt.
   */
  open(session: string, now = Date.now()): Promise<void> {
    if (!this.journal) return Promise.resolve();
    const last = this.recorded.get(session);
    if (last !== undefined && now - last < this.limits.windowMs / 4) return Promise.resolve();
    const inFlight = this.writing.get(session);
    if (inFlight) return inFlight;
    const p = this.journal
      .record({ session, at: now })
      .then(() => {
        this.recorded.delete(session); // re-inserted last: the map stays in write order
        this.recorded.set(session, Math.max(now, this.recorded.get(session) ?? 0));
      })
      .finally(() => this.writing.delete(session));
    this.writing.set(session, p);
    return p;
  }

  /** the session part of a slot key */
  static sessionOf(key: string): string {
    return key.slice(0, key.lastIndexOf('|'));
  }

  /**
   * Before compute: may this input be run for this slot? Refused when the slot is already signed
   * for another input (nothing is recorded here: a step refused later, e.g. by the custody
   * check, leaves its slot free), or when the guard is full.
   */
  claim(key: string, inputHash: Hex, owner = '', now = Date.now()): ClaimResult {
    const session = SlotGuard.sessionOf(key);
    const was = this.before.get(session);
    if (was !== undefined) {
      if (now - was < this.limits.windowMs)
        return {
          ok: false,
          code: 'bad_message',
          reason: 'this node signed steps of this session before it restarted; none is signed again: open a new session',
        };
      this.before.delete(session);
    }
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
   * same output); anything else for a signed slot gets no receipt (undefined). A new session is
   * on the journal before `sign` runs (a journal that cannot write: it throws, nothing signed).
   */
  signOnce(key: string, inputHash: Hex, outputHash: Hex, sign: () => SignedReceipt, owner = ''): SignedReceipt | undefined {
    const s = this.slots.get(key);
    if (s) return s.inputHash === inputHash.toLowerCase() && s.outputHash === outputHash.toLowerCase() ? sign() : undefined;
    const at = Date.now();
    if (this.journal) {
      const session = SlotGuard.sessionOf(key);
      const last = this.recorded.get(session);
      // on file, recently enough that a restart anywhere inside the window still finds it
      if (last === undefined || at - last >= this.limits.windowMs / 2)
        throw new Error('this session is not on the slashing-protection journal: no receipt is signed for it');
      // refreshed in the background long before that
      if (at - last >= this.limits.windowMs / 4) this.open(session, at).catch(() => undefined);
    }
    this.slots.set(key, { inputHash: inputHash.toLowerCase(), outputHash: outputHash.toLowerCase(), owner, at });
    this.held.set(owner, (this.held.get(owner) ?? 0) + 1);
    return sign();
  }

  private expire(now: number): void {
    for (const [k, s] of this.slots) {
      if (now - s.at < this.limits.windowMs) break;
      this.slots.delete(k);
      const n = (this.held.get(s.owner) ?? 1) - 1;
      if (n > 0) this.held.set(s.owner, n);
      else this.held.delete(s.owner);
    }
    for (const [session, at] of this.recorded) {
      if (now - at < this.limits.windowMs) break;
      this.recorded.delete(session);
      this.unpruned++;
    }
    // the journal forgets in batches (one DELETE per 64 expired sessions, or when memory is full)
    if (this.journal && this.unpruned > 0 && (this.unpruned >= 64 || this.slots.size >= this.limits.maxSlots)) {
      this.journal.prune(now - this.limits.windowMs + 1); // exactly the expired ones, whatever their order
      this.unpruned = 0;
    }
  }
}
